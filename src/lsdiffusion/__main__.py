"""``python -m lsdiffusion`` runs the command line."""

import sys

from lsdiffusion.cli import main

sys.exit(main())
