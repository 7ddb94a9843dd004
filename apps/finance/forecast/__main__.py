"""`python -m apps.finance.forecast <command>` == `deepapps forecast <command>`."""

import sys

from apps.finance.forecast import APP
from core.cli import main

sys.exit(main([APP.name, *sys.argv[1:]]))
