"""SIGKILL the build at every stage (encode, adapt, intents, compose, publish: staging, half
way through Feast, before the ledger entry, right after the switch). After each kill the
previous version still serves and the killed version is neither listed nor selectable; each
run resumes where the last one died, and the last one completes and leaves nothing stale.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import REPO, write_config

from tests.helpers.killable_build import POINTS
from tests.helpers.wait import wait_for
from xemb.feature_repo import get_feature_store, names
from xemb.store import VersionStore

pytestmark = [pytest.mark.integration,
              pytest.mark.filterwarnings("ignore:On demand feature view:RuntimeWarning")]

BEFORE_SWITCH = POINTS[:-1]


def _root_from(tiny_build, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    """A copy of the session's tiny build (stage cache included), to publish into Feast."""
    root = tmp_path / "root"
    shutil.copytree(tiny_build.root, root, symlinks=True)
    return root


def _config(tiny_build, tmp_path: Path, root: Path, **encoder: object) -> Path:  # type: ignore[no-untyped-def]
    folder = tmp_path / f"cfg{len(list(tmp_path.glob('cfg*')))}"
    folder.mkdir()
    return write_config(folder, {
        "data": {"path": str(tiny_build.config.data.path)},
        "encoder": {"model": str(tiny_build.config.encoder.model), **encoder},
        "build": {"root": str(root)}, "feast": {"enabled": True}})


class Zygote:
    """One process that imports the offline job once and forks a build per kill."""

    def __init__(self, log: Path) -> None:
        self.log = log.open("w")
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.helpers.killable_build",
                                      "--zygote"], cwd=REPO, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log, text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

    def fork(self, config: Path, point: str, marker: Path) -> int:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{config} {point} {marker}\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)
        self.log.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _killed_run(zygote: Zygote, config: Path, point: str, marker: Path) -> float:
    """Fork a build that parks at ``point``; SIGKILL it there; seconds until it got there."""
    start = time.monotonic()
    pid = zygote.fork(config, point, marker)
    try:
        wait_for(lambda: marker.exists() or not _alive(pid), timeout=240, interval=0.05,
                 what=f"the build to reach {point}")
        assert _alive(pid), f"build ended before {point}: {zygote.log.name}"
    finally:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not _alive(pid), timeout=30, what="the killed build to go")
    marker.unlink(missing_ok=True)
    return time.monotonic() - start


def _check_after_kill(store: VersionStore, point: str, served: str, listed: list[str]) -> None:
    from xemb.cli import main

    if point in BEFORE_SWITCH:
        assert store.current() == served, point
        assert store.list_ids() == listed, point
    killed = [v for v in store.committed_ids() if v not in store.list_ids()]
    for v in killed:
        assert main(["rollback", "--root", str(store.root), "--to", v]) == 4, point
    if point == "publish-switch":  # switched; its offline rows come with the next build
        assert store.current() != served and store.current() in store.list_ids()
        assert not list(names.offline_dir(store.root, "items").glob(f"*{store.current()}*"))


def _nothing_stale(store: VersionStore) -> None:
    root = store.root
    assert not any(store.staging_dir.glob("*")) if store.staging_dir.exists() else True
    assert [p.name for p in (root / "work").iterdir() if p.name.startswith(".")] == []
    assert store.committed_ids() == store.list_ids()
    slots = {p.stem for p in names.online_dir(root).glob("*.db")}
    assert store.current() in slots and slots <= set(store.list_ids())  # no failed slot
    assert not list(names.online_dir(root).glob("*-journal"))
    served = [s for s in store.switches() if not store.is_refused(s.version)]
    for table in names.TABLES:
        files = sorted(p.name for p in names.offline_dir(root, table).glob("*.parquet"))
        assert len(files) == len(served) and all(
            f.endswith(f"-{s.version}.parquet") for f, s in zip(files, served, strict=True))
    assert not list(root.rglob(".*.tmp"))


def test_sigkill_at_every_stage_then_a_clean_rerun(tiny_build, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from xemb.embedders.pipeline import build

    root = _root_from(tiny_build, tmp_path)
    store = VersionStore(root)
    # Issue 7.7: a change of the Feast settings republishes (it said "nothing changed").
    start = time.monotonic()
    v0 = build(_load(_config(tiny_build, tmp_path, root))).version
    republish_s = time.monotonic() - start
    assert v0 != tiny_build.manifest.version and store.current() == v0
    config = _config(tiny_build, tmp_path, root, max_length=31)  # every stage runs again
    timings = {}
    zygote = Zygote(tmp_path / "builds.log")
    try:
        for point in POINTS:
            listed = store.list_ids()
            timings[point] = _killed_run(zygote, config, point, tmp_path / "parked")
            _check_after_kill(store, point, v0, listed)
    finally:
        zygote.close()
    start = time.monotonic()
    final = build(_load(config))
    rerun_s = time.monotonic() - start
    _nothing_stale(store)
    assert store.current() == final.version != v0
    item = pq.read_table(store.path(final.version) / "items.parquet").column("item_id")[0]
    got = get_feature_store(root).get_online_features(
        features=["item_embeddings:xemb_version"], entity_rows=[{"item_id": item.as_py()}])
    assert got.to_dict()[names.VERSION_FIELD] == [final.version]
    with capsys.disabled():
        print(f"\nbuild kill: {len(POINTS)} SIGKILLs ("
              + ", ".join(f"{p} {s:.1f}s" for p, s in timings.items())
              + f"); rerun completed in {rerun_s:.1f}s, nothing stale; Feast settings change "
              f"republished in {republish_s:.1f}s")


def _load(path: Path):  # type: ignore[no-untyped-def]
    from xemb.settings import load_config

    return load_config(path)
