"""``python -m xemb.feature_repo publish|export``: see ``feature_repo/cli.py``."""

import sys

from xemb.feast_import import skip_feast_typechecks

skip_feast_typechecks()  # before anything imports Feast

from xemb.feature_repo.cli import main  # noqa: E402

sys.exit(main())
