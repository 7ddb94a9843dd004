"""`python -m deepapps.apps.finance.fraud <command>` == `deepapps fraud <command>`."""

import sys

from deepapps.apps.finance.fraud import APP
from deepapps.core.cli import main

sys.exit(main([APP.name, *sys.argv[1:]]))
