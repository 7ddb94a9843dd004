"""`python -m apps.finance.fraud <command>` == `deepapps fraud <command>`."""

import sys

from apps.finance.fraud import APP
from core.cli import main

sys.exit(main([APP.name, *sys.argv[1:]]))
