"""``python -m xemb.feature_repo publish|export``: see ``feature_repo/cli.py``."""

import sys

from xemb.feature_repo.cli import main

sys.exit(main())
