"""``python -m tests.helpers.killable_build CONFIG POINT MARKER``: ``xemb build`` that parks at
POINT (writes MARKER, then waits for the SIGKILL the test sends).

``python -m tests.helpers.killable_build --zygote`` imports the offline job once (about 10 s
on a small machine), then forks one such build per stdin line ``CONFIG POINT MARKER`` and
prints the child's pid: a test kills many builds for the price of one start. The zygote
itself never runs torch, so forking it is safe.

Points: a stage name (``encode``, ``adapt``, ``intents``, ``compose``: parked with the stage's
output written into its temporary folder, not yet renamed into the cache), ``publish-stage``
(version files in ``staging/``), ``publish-feast`` (the online slot half written),
``publish-ledger`` (slot ready, not yet published), ``publish-switch`` (CURRENT switched, the
offline history not yet written).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

POINTS = ("encode", "adapt", "intents", "compose", "publish-stage", "publish-feast",
          "publish-ledger", "publish-switch")


def _park(marker: Path) -> None:
    marker.write_text("parked", encoding="utf-8")
    threading.Event().wait()  # until the test kills this process


def _after(fn: Callable[..., Any], marker: Path) -> Callable[..., Any]:
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        out = fn(*args, **kwargs)
        _park(marker)
        return out
    return wrapped


def _before(fn: Callable[..., Any], marker: Path) -> Callable[..., Any]:
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        _park(marker)
        return fn(*args, **kwargs)
    return wrapped


def install(point: str, marker: Path) -> None:
    from xemb.embedders import graph, publish
    from xemb.feature_repo.online_store import XembOnlineStore
    from xemb.store import VersionStore

    cached = {s.name: i for i, s in enumerate(graph.STAGES) if s.run is not None}
    if point in cached:
        stage = graph.STAGES[cached[point]]
        assert stage.run is not None
        graph.STAGES[cached[point]] = dataclasses.replace(stage, run=_after(stage.run, marker))
    elif point == "publish-stage":
        publish._stage_version = _after(publish._stage_version, marker)  # type: ignore[assignment]
    elif point == "publish-feast":
        XembOnlineStore.write_slot = _after(XembOnlineStore.write_slot, marker)  # type: ignore[method-assign]
    elif point == "publish-ledger":
        VersionStore.mark_published = _before(VersionStore.mark_published, marker)  # type: ignore[method-assign]
    elif point == "publish-switch":
        publish._feast_history = _before(publish._feast_history, marker)  # type: ignore[assignment]
    else:
        raise SystemExit(f"unknown point {point!r} (one of {', '.join(POINTS)})")


def _child(config: str, point: str, marker: str) -> None:
    from xemb.embedders.pipeline import build
    from xemb.settings import load_config

    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    try:
        install(point, Path(marker))
        build(load_config(config))
        os._exit(0)
    except BaseException:
        traceback.print_exc()
        os._exit(1)


def zygote() -> int:
    import xemb.embedders.pipeline  # noqa: F401 - the heavy imports, once
    import xemb.embedders.publish  # noqa: F401
    import xemb.feature_repo.online_store  # noqa: F401
    import xemb.feature_repo.publish  # noqa: F401
    import xemb.serving.version  # noqa: F401

    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # killed children are reaped by the kernel
    print("ready", flush=True)
    for line in sys.stdin:
        config, point, marker = line.split()
        pid = os.fork()
        if pid == 0:
            _child(config, point, marker)
        print(pid, flush=True)
    return 0


def main(argv: list[str]) -> int:
    from xemb.embedders.pipeline import build
    from xemb.settings import load_config

    if argv == ["--zygote"]:
        return zygote()
    config, point, marker = argv
    install(point, Path(marker))
    build(load_config(config))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
