"""Fault injection: crash a process at a chosen point of a publish."""

from __future__ import annotations

import os
import signal

__all__ = ["publish_until_killed"]


def publish_until_killed(config_json: str, version: str, fraction: float) -> None:
    """Run ``publish_to_feast`` and SIGKILL this process once ``fraction`` of the rows
    were written to the online store (between two committed write batches)."""
    from xemb.feature_repo.online_store import XembOnlineStore
    from xemb.feature_repo.publish import publish_to_feast
    from xemb.feature_repo.verify import expected_rows
    from xemb.settings import XembConfig
    from xemb.store import VersionStore

    cfg = XembConfig.model_validate_json(config_json)
    store = VersionStore(cfg.build.root)
    total = sum(expected_rows(store, version).values())
    written = [0]
    original = XembOnlineStore._write_chunk

    def write_then_maybe_die(self, config, slot, table, chunk, progress):  # type: ignore[no-untyped-def]
        original(self, config, slot, table, chunk, progress)
        written[0] += len(chunk)
        if written[0] >= fraction * total:
            os.kill(os.getpid(), signal.SIGKILL)

    XembOnlineStore._write_chunk = write_then_maybe_die  # type: ignore[method-assign]
    publish_to_feast(cfg, store, version)
