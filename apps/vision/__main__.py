"""`python -m apps.vision <command>` == `deepapps vision <command>`."""

import sys

from apps.vision import APP
from core.cli import main

sys.exit(main([APP.name, *sys.argv[1:]]))
