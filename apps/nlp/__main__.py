"""`python -m apps.nlp <command>` == `deepapps nlp <command>`."""

import sys

from apps.nlp import APP
from core.cli import main

sys.exit(main([APP.name, *sys.argv[1:]]))
