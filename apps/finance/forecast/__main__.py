"""`python -m deepapps.apps.finance.forecast <command>` == `deepapps forecast <command>`."""

import sys

from deepapps.apps.finance.forecast import APP
from deepapps.core.cli import main

sys.exit(main([APP.name, *sys.argv[1:]]))
