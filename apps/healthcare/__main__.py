"""`python -m deepapps.apps.healthcare <command>` == `deepapps healthcare <command>`."""

import sys

from deepapps.apps.healthcare import APP
from deepapps.core.cli import main

sys.exit(main([APP.name, *sys.argv[1:]]))
