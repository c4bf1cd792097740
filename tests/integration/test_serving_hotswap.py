"""Hot swap under load: zero failed calls, no response mixing versions, broken versions refused,
rollback is a switch back."""

from __future__ import annotations

import shutil
import threading
from dataclasses import dataclass

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.helpers.synthetic_serving import (
    clone_version,
    copy_published,
    publish_synthetic,
    running,
)
from tests.helpers.wait import wait_for
from xemb import layout
from xemb.store import VersionStore

pytestmark = pytest.mark.integration


@pytest.fixture(params=["synthetic", "tiny"])
def published(request, tmp_path):
    """A root of our own with one current version: synthetic, or a copy of the tiny build."""
    if request.param == "synthetic":
        publish_synthetic(tmp_path)
    else:
        copy_published(request.getfixturevalue("tiny_build").root, tmp_path)
    store = VersionStore(tmp_path)
    items = pq.read_table(store.path(store.current()) / layout.ITEMS,
                          columns=["item_id", "domain"]).to_pandas()
    kitchen = items[items["domain"] == "kitchen"]["item_id"].to_numpy()
    probe = Probe(items["item_id"].to_numpy()[:200], items["item_id"].to_numpy()[::7][:5].tolist(),
                  "kitchen" if len(kitchen) else str(items["domain"].iloc[0]))
    return tmp_path, probe


@dataclass(frozen=True)
class Probe:
    ids: np.ndarray
    history: list[int]
    domain: str


def _table(store: VersionStore, version: str, ids: np.ndarray) -> bytes:
    items = pq.read_table(store.path(version) / layout.ITEMS).to_pandas().set_index("item_id")
    return np.stack(items.loc[ids, "full"].to_numpy()).astype(np.float32).tobytes()


class Load:
    """Client threads calling three methods in a loop, recording every response."""

    def __init__(self, client, probe: Probe, threads: int = 4) -> None:
        self.client, self.probe, self.stop = client, probe, threading.Event()
        self.seen: list[tuple[str, str, bytes]] = []
        self.failures: list[BaseException] = []
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]

    def _run(self, i: int) -> None:
        c, p = self.client, self.probe
        while not self.stop.is_set():
            try:
                if i % 2 == 0:
                    r = c.get_item_embeddings(p.ids)
                    self.seen.append(("items", r.version, r.vectors.tobytes()))
                else:
                    r = c.compose_user_intent(p.history, target_domain=p.domain)
                    self.seen.append(("compose", r.version, r.vector.tobytes()))
                    q = c.retrieve(p.domain, 10, history=p.history)
                    self.seen.append(("retrieve", q.version, q.item_ids.tobytes()))
            except BaseException as exc:  # noqa: BLE001 - any failure fails the test
                self.failures.append(exc)

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=10)

    def versions(self) -> set[str]:
        return {v for _, v, _ in list(self.seen)}


def _expected(client, p: Probe, version: str) -> dict[str, bytes]:
    return {"items": client.get_item_embeddings(p.ids, version=version).vectors.tobytes(),
            "compose": client.compose_user_intent(p.history, target_domain=p.domain,
                                                  version=version).vector.tobytes(),
            "retrieve": client.retrieve(p.domain, 10, history=p.history,
                                        version=version).item_ids.tobytes()}


def test_swap_and_rollback_under_load(published):
    root, probe = published
    store = VersionStore(root)
    v1 = store.current()
    with running(root, poll_interval_s=0.05) as (server, client):
        v2 = clone_version(root, v1, scale=2.0).version
        with Load(client, probe) as load:
            wait_for(lambda: len(load.seen) > 50)
            store.set_current(v2)  # the poller notices, loads, checks and switches
            wait_for(lambda: server.holder.current.version == v2)
            mark = len(load.seen)
            wait_for(lambda: len(load.seen) > mark + 50)
            store.set_current(v1)  # rollback: v1 is still in memory
            wait_for(lambda: server.holder.current.version == v1)
            mark = len(load.seen)
            wait_for(lambda: len(load.seen) > mark + 50)
        assert not load.failures, load.failures[:3]
        assert load.versions() == {v1, v2}
        expected = {v: _expected(client, probe, v) for v in (v1, v2)}
    assert expected[v1]["items"] == _table(store, v1, probe.ids)
    assert expected[v2]["items"] == _table(store, v2, probe.ids) != expected[v1]["items"]
    assert expected[v1]["compose"] != expected[v2]["compose"]
    for kind, version, payload in load.seen:  # every response is one version, whole
        assert payload == expected[version][kind], (kind, version)


def _republish(root, source: str, damage) -> str:
    """Copy ``source`` into a new committed version and damage it (before or after commit)."""
    store = VersionStore(root)
    version, stage = store.new_staging()
    shutil.copytree(store.path(source), stage, dirs_exist_ok=True)
    (stage / "manifest.json").unlink()
    damage(stage, "staged")
    store.commit(stage, store.manifest(source).model_copy(update={"version": version}))
    damage(store.path(version), "committed")
    return version


def _corrupt_items(path, when):
    if when == "committed":
        with open(path / layout.ITEMS, "r+b") as f:
            f.seek(64)
            f.write(b"\x00\x01\x02")


def _drop_composer(path, when):
    if when == "committed":
        (path / layout.COMPOSER_ONNX).unlink()


def _wrong_index(path, when):  # checksums match, the content does not
    if when == "staged":
        shutil.copyfile(path / layout.index_file("grocery"), path / layout.index_file("kitchen"))


@pytest.mark.parametrize("damage", [_corrupt_items, _drop_composer, _wrong_index],
                         ids=["checksum", "incomplete", "bad-index"])
def test_broken_version_is_refused_and_old_keeps_serving(tmp_path, damage):
    v1 = publish_synthetic(tmp_path).version
    probe = Probe(np.arange(1, 201), [5, 17, 250, 400, 3], "kitchen")
    with running(tmp_path) as (server, client), Load(client, probe, threads=2) as load:
        bad = _republish(tmp_path, v1, damage)
        (tmp_path / "CURRENT").write_text(bad + "\n")  # a botched deploy, past set_current
        assert server.reload() is False
        assert server.holder.current.version == v1 and bad in server.holder.refused
        assert client.health() == "SERVING"
        assert client.get_item_embeddings([1]).version == v1
        assert server.metrics.registry.get_sample_value("xemb_version_refused_total") == 1
        load.stop.set()
    assert not load.failures and load.versions() == {v1}


def test_pinned_versions_and_sighup_style_reload(tmp_path):
    store = VersionStore(tmp_path)
    v1 = publish_synthetic(tmp_path).version
    with running(tmp_path) as (server, client):
        v2 = clone_version(tmp_path, v1, scale=0.5, make_current=True).version
        assert client.get_version().version == v1  # no poller: nothing changes by itself
        assert server.reload() and client.get_version().version == v2
        assert client.get_item_embeddings([1], version=v1).version == v1
        listed = {v.version: v for v in client.list_versions().versions}
        assert listed[v1].loaded and not listed[v1].serving
        assert listed[v2].serving and listed[v2].current
        store.set_current(v1)
        assert server.reload() and client.get_version().version == v1
