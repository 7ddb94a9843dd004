"""`python -m deepapps.apps.vision <command>` == `deepapps vision <command>`."""

import sys

from deepapps.apps.vision import APP
from deepapps.core.cli import main

sys.exit(main([APP.name, *sys.argv[1:]]))
