"""xemb's command-line processes import Feast without typeguard's instrumentation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from xemb.feast_import import ENV

REPO = Path(__file__).resolve().parents[2]
PROBE = ("import sys\n"
         "from xemb.feast_import import skip_feast_typechecks\n"
         "print(skip_feast_typechecks())\n"
         "import feast.feature_view as fv\n"
         "print('check_argument_types_internal' in fv.FeatureView.__init__.__code__.co_names)\n"
         "from feast import Field, FeatureView\n"  # still usable as before
         "print(FeatureView.__name__)\n")


def _probe(keep: bool) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != ENV}
    if keep:
        env[ENV] = "1"
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                         text=True, timeout=180, check=True)
    return out.stdout.split()


@pytest.mark.parametrize(("keep", "expected"), [(False, ["True", "False", "FeatureView"]),
                                                (True, ["False", "True", "FeatureView"])])
def test_typeguard_instrumentation_is_skipped_unless_kept(keep: bool, expected: list) -> None:
    assert _probe(keep) == expected


def test_the_xemb_command_skips_it() -> None:
    assert 'xemb = "xemb.cli:console_main"' in (REPO / "pyproject.toml").read_text()
    main = (REPO / "feature_repo" / "__main__.py").read_text()
    assert main.index("skip_feast_typechecks()") < main.index("from xemb.feature_repo.cli")
