"""The wheel installs one import name, ``xemb``: a recommender code base keeps its own
``serving``, ``embedders`` and ``feature_repo``."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "xemb", "serving", "embedders", "feature_repo")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built by setuptools from a copy of the sources (the checkout stays clean)."""
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("dist")
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, src / name)
    code = ("import sys, setuptools.build_meta as b; "
            "print(b.build_wheel(sys.argv[1]))")
    done = subprocess.run([sys.executable, "-c", code, str(out)], cwd=src, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return out / done.stdout.strip().splitlines()[-1]


def test_wheel_has_only_the_xemb_import_name(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"xemb"}
    for path in ("xemb/serving/server.py", "xemb/embedders/pipeline.py",
                 "xemb/feature_repo/online_store.py", "xemb/feature_repo/feature_store.yaml",
                 "xemb/feature_repo/.feastignore", "xemb/v1/xemb_pb2.pyi", "xemb/cli.py"):
        assert path in names, path
    # the package list in pyproject.toml is explicit: every package folder must be in it
    where = {"xemb": "xemb", "serving": "xemb/serving", "embedders": "xemb/embedders",
             "feature_repo": "xemb/feature_repo"}
    for src, dst in where.items():
        for init in (REPO / src).rglob("__init__.py"):
            rel = init.relative_to(REPO / src).as_posix()
            assert f"{dst}/{rel}" in names, f"{src}/{rel} is not packaged: list it in pyproject"


def test_installed_wheel_imports_under_xemb_only(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (f"import sys; sys.path.insert(0, {str(site)!r})\n"
            "import xemb.serving.server, xemb.feature_repo.names, xemb.cli\n"
            f"assert xemb.serving.server.__file__.startswith({str(site)!r})\n"
            "from xemb.feature_repo.repo_config import ONLINE_STORE_TYPE\n"
            "assert ONLINE_STORE_TYPE.startswith('xemb.feature_repo.'), ONLINE_STORE_TYPE\n"
            "import importlib.util as u\n"
            "print([m for m in ('serving', 'embedders', 'feature_repo') if u.find_spec(m)])\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[]"
