"""``python -m feature_repo publish|export``: see ``feature_repo/cli.py``."""

import sys

from feature_repo.cli import main

sys.exit(main())
