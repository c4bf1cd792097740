"""Hot swap: the one reference to the serving version, switched atomically.

A request reads ``holder.current`` (or ``get(version)``) once and uses that object to the end,
so it finishes on the version it started with and never mixes two. A new version is loaded and
checked beside the old one, under a lock that only loaders take; the switch is one attribute
assignment. A version that fails to load is remembered as refused (not retried on every poll)
and the old one keeps serving. Rollback is the same switch back, instant while the old version
is still held in memory.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable

from xemb.errors import VersionIntegrityError, VersionNotFound, XembError
from xemb.serving.validation import shown
from xemb.serving.version import LoadedVersion
from xemb.store import VersionStore

__all__ = ["VersionHolder"]

log = logging.getLogger("xemb.serving")


class VersionHolder:
    def __init__(self, store: VersionStore, loader: Callable[[str], LoadedVersion], *,
                 keep: int = 2, on_switch: Callable[[LoadedVersion], None] | None = None,
                 on_refuse: Callable[[str, str], None] | None = None) -> None:
        self.store, self._loader, self._keep = store, loader, keep
        self._on_switch = on_switch or (lambda v: None)
        self._on_refuse = on_refuse or (lambda v, why: None)
        self._lock = threading.Lock()
        self._loaded: OrderedDict[str, LoadedVersion] = OrderedDict()
        self._current: LoadedVersion | None = None
        self.refused: dict[str, str] = {}
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    # ---- read side (request threads) -----------------------------------------------
    @property
    def current(self) -> LoadedVersion:
        current = self._current
        if current is None:
            raise VersionNotFound("no version loaded")
        return current

    def get(self, version: str = "") -> LoadedVersion:
        """The serving version, or a pinned one that is held in memory."""
        if not version:
            return self.current
        found = self._loaded.get(version)
        if found is None:
            raise VersionNotFound(f"version {shown(version)} is not served here "
                                  f"(loaded: {', '.join(self._loaded) or 'none'})")
        return found

    def loaded_ids(self) -> list[str]:
        return list(self._loaded)

    # ---- write side (startup, poller, SIGHUP) --------------------------------------
    def switch_to(self, version: str) -> LoadedVersion:
        """Load and check ``version`` if needed, then make it the serving one."""
        with self._lock:
            target = self._loaded.get(version) or self._load(version)
            self._loaded[version] = target
            self._loaded.move_to_end(version)
            self._current = target
            while len(self._loaded) > self._keep:
                self._loaded.popitem(last=False)
        log.info("serving version %s", version)
        self._on_switch(target)
        return target

    def _load(self, version: str) -> LoadedVersion:
        if version in self.refused:
            raise VersionIntegrityError(f"version {version} was refused: {self.refused[version]}")
        try:
            loaded = self._loader(version)
            gc.collect()
            gc.freeze()  # long-lived tables out of the collector's way: steadier p99
            return loaded
        except VersionNotFound:
            raise
        except Exception as exc:  # any failure to load refuses the version, never the server
            why = str(exc) or type(exc).__name__
            self.refused[version] = why
            self._record_refusal(version, why)
            log.error("refused version %s, keeping %s: %s", version,
                      self._current.version if self._current else None, why)
            self._on_refuse(version, why)
            if isinstance(exc, XembError):
                raise
            raise VersionIntegrityError(f"version {version}: {why}") from exc

    def _record_refusal(self, version: str, why: str) -> None:
        """Write the refusal into the root, so Feast and rollback skip the version too."""
        try:
            self.store.mark_refused(version, why)
        except OSError as exc:  # a read-only root: this server still refuses it
            log.warning("could not record the refusal of %s under %s: %s", version,
                        self.store.root, exc)

    def refresh(self, *, retry_refused: bool = False) -> bool:
        """Follow the switch record on disk (``VersionStore.serving_target``: CURRENT unless
        a server refused it); True when the serving version changed. ``retry_refused`` tries
        CURRENT again even if it was refused, and clears the refusal when it now loads."""
        if retry_refused:
            self.refused.clear()
        target = self.store.current() if retry_refused else self.store.serving_target()
        if self._current is not None and target == self._current.version:
            return False
        try:
            self.switch_to(target)
        except XembError as exc:
            if self._current is None:
                raise
            log.warning("still serving %s: %s", self._current.version, exc)
            return False
        if retry_refused and self.store.is_refused(target):
            self.store.clear_refusal(target)
        return True

    # ---- polling -------------------------------------------------------------------
    def start_polling(self, interval_s: float) -> None:
        if interval_s <= 0 or self._poller is not None:
            return
        self._poller = threading.Thread(target=self._poll, args=(interval_s,),
                                        name="xemb-version-poller", daemon=True)
        self._poller.start()

    def _poll(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            try:
                self.refresh()
            except Exception:  # keep polling whatever one look at the disk met
                log.exception("version poll failed")

    def stop(self) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=5)
