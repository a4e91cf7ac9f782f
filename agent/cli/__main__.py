"""``python -m agent.cli`` runs the kanshi command line."""

import sys

from agent.cli import main

sys.exit(main())
