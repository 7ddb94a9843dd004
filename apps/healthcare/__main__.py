"""`python -m apps.healthcare <command>` == `deepapps healthcare <command>`."""

import sys

from apps.healthcare import APP
from core.cli import main

sys.exit(main([APP.name, *sys.argv[1:]]))
