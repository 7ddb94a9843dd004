"""`python -m deepapps.apps.nlp <command>` == `deepapps nlp <command>`."""

import sys

from deepapps.apps.nlp import APP
from deepapps.core.cli import main

sys.exit(main([APP.name, *sys.argv[1:]]))
