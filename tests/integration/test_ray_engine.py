"""The Ray engine builds the same version as the local engine.

One local Ray per module (2 CPUs), started in a helper process by the engine's own code path
(no address); the build joins it through ``xemb build --ray-address`` (so joining a cluster
runs too), with ``build.engine: ray`` from the YAML, actor pools of one (on 2 cores a bigger
pool starves Ray's read tasks), small batches so every per-item pipeline runs several, and
Feast on, so the online rows go through Ray's writers. The local build is the session's
``tiny_build`` (same config, same data, same tiny encoder).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.conftest import TinyBuild, write_config
from tests.helpers.ray_cluster import ray_cluster
from xemb import layout

pytestmark = pytest.mark.integration

RAY = {"engine": "ray", "ray": {"pool_size": 1, "num_cpus": 1, "batch_rows": 512}}


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    with ray_cluster(cpus=2, object_store_mb=300) as address:
        yield address


@pytest.fixture(scope="module")
def ray_build(tmp_path_factory: pytest.TempPathFactory, tiny_slice: Path, tiny_bert: Path,
              ray_address: str) -> TinyBuild:
    import ray

    from xemb.cli import main
    from xemb.settings import load_config
    from xemb.store import VersionStore

    folder = tmp_path_factory.mktemp("ray-build")
    (folder / "data").symlink_to(tiny_slice)
    path = write_config(folder, {"encoder": {"model": str(tiny_bert)}, "build": RAY,
                                 "feast": {"enabled": True, "online_store": "sqlite"}})
    cfg = load_config(path)
    assert main(["build", "-c", str(path), "--ray-address", ray_address]) == 0
    assert not ray.is_initialized()  # the build left the cluster it joined
    store = VersionStore(cfg.build.root)
    return TinyBuild(path, cfg, cfg.build.root, store, store.manifest(store.current()))


def _table(b: Any, name: str) -> Any:
    return pq.read_table(b.store.path(b.manifest.version) / name)


def _matrix(table, name: str) -> np.ndarray:  # type: ignore[no-untyped-def]
    col = table.column(name).combine_chunks()
    return col.flatten().to_numpy().reshape(len(col), -1)


def test_same_item_vectors_and_intents(tiny_build: Any, ray_build: Any) -> None:
    local, ray = _table(tiny_build, layout.ITEMS), _table(ray_build, layout.ITEMS)
    assert ray.column("item_id").equals(local.column("item_id"))
    for name in ("full", "transferable", "residual", "intent_weights"):
        np.testing.assert_allclose(_matrix(ray, name), _matrix(local, name), atol=1e-5,
                                   err_msg=name)
    assert np.array_equal(_matrix(ray, "intent_ids"), _matrix(local, "intent_ids"))
    li, ri = _table(tiny_build, layout.INTENTS), _table(ray_build, layout.INTENTS)
    np.testing.assert_allclose(_matrix(ri, "vector"), _matrix(li, "vector"), atol=1e-5)
    for name in ("label", "support", "domain_labels"):
        assert ri.column(name).equals(li.column(name)), name
    assert ray_build.manifest.counts == tiny_build.manifest.counts
    assert ray_build.manifest.hashes["build"] == tiny_build.manifest.hashes["build"]


def test_same_users_and_evaluation(tiny_build: Any, ray_build: Any) -> None:
    from xemb.embedders.data import load_dataset
    from xemb.embedders.evaluate import served_ranks

    lu, ru = _table(tiny_build, layout.USERS), _table(ray_build, layout.USERS)
    np.testing.assert_allclose(_matrix(ru, "vector"), _matrix(lu, "vector"), atol=1e-5)
    assert np.array_equal(_matrix(ru, "top_intent_ids"), _matrix(lu, "top_intent_ids"))
    ds = load_dataset(tiny_build.config.data)  # type: ignore[attr-defined]
    max_len = int(tiny_build.manifest.params["composer_max_len"])
    for split in ("valid", "test"):
        (lr, _), (rr, _) = (served_ranks(b.store.path(b.manifest.version), ds, split, max_len)
                            for b in (tiny_build, ray_build))
        assert np.array_equal(rr.sampled, lr.sampled) and np.array_equal(rr.full, lr.full)
    lq, rq = tiny_build.manifest.metrics["quality"], ray_build.manifest.metrics["quality"]
    assert rq["candidate"] == lq["candidate"] and rq["baselines"] == lq["baselines"]


def test_online_rows_written_on_ray_are_the_local_vectors(tiny_build: Any,
                                                          ray_build: Any) -> None:
    """Every row went into the version's Feast slot through Ray's writers (counted, then
    verified by the slot check); the online vectors are the local engine's."""
    from xemb.feature_repo import get_feature_store
    from xemb.feature_repo.names import ITEM_KEY, ITEM_VIEW
    from xemb.feature_repo.publish import slot_ready

    assert slot_ready(ray_build.root, ray_build.manifest.version)
    metrics = json.loads((ray_build.root / "feast" / "metrics" /
                          f"{ray_build.manifest.version}.json").read_text())
    assert sum(metrics["rows"].values()) == sum(
        ray_build.manifest.counts[k] for k in ("items", "users", "intents"))
    local = _table(tiny_build, layout.ITEMS)
    ids = local.column("item_id").to_pylist()[::97]
    fs = get_feature_store(ray_build.root)
    got = fs.get_online_features(features=[f"{ITEM_VIEW}:full"],
                                 entity_rows=[{ITEM_KEY: i} for i in ids]).to_dict()
    want = _matrix(local, "full")[::97]
    np.testing.assert_allclose(np.array(got["full"], np.float32), want, atol=1e-5)


def test_item_count_check_names_missing_and_repeated_rows() -> None:
    from xemb.embedders.engine_ray import _Tally
    from xemb.errors import VersionIntegrityError

    tally = _Tally(5)
    tally.add(np.array([0, 1, 2]))
    tally.add(np.array([2, 3]))
    with pytest.raises(VersionIntegrityError, match="1 of 5 items came back missing, 1 more"):
        tally.check("encode")


def test_cli_engine_flags_override_the_yaml(tmp_path: Path) -> None:
    import argparse

    from xemb.cli import config_from_args
    from xemb.embedders.cli import build_overrides
    from xemb.errors import ConfigError

    path = write_config(tmp_path)

    def flags(**kw: object) -> argparse.Namespace:
        base = {"config": path, "root": None, "accept": False, "engine": None,
                "ray_address": None}
        return argparse.Namespace(**{**base, **kw})

    assert config_from_args(flags(), build_overrides(flags())).build.engine == "local"
    ray = config_from_args(flags(), build_overrides(flags(engine="ray",
                                                          ray_address="10.0.0.1:6379")))
    assert (ray.build.engine, ray.build.ray_address) == ("ray", "10.0.0.1:6379")
    accepted = config_from_args(flags(), build_overrides(flags(accept=True)))
    assert accepted.gate.accept is True
    # validated with the YAML: an address without the Ray engine names the field
    with pytest.raises(ConfigError, match=r"build\.ray_address.*needs the Ray engine"):
        config_from_args(flags(), build_overrides(flags(ray_address="10.0.0.1:6379")))


# ---- the LLM stages on Ray: describe, profile and the distilled student -----------------------
@pytest.fixture(scope="module")
def llm_builds(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path,
               ray_address: str) -> Iterator[tuple[Any, Any, dict[str, list[int]]]]:
    """One config with describe (``use: separate``), profile and a static int8 student, built
    by the local engine and by the Ray engine (a fresh root each, so nothing comes from a
    cache). Returns (local, ray, what the Ray build's driver did itself: the generators it
    loaded, the texts it ran through ONNX)."""
    from tests.conftest import make_slice
    from tests.integration.test_describe import DESCRIBE, make_tiny_gpt2
    from tests.integration.test_distill import STATIC
    from tests.integration.test_profile import PROFILE
    from xemb.embedders.encode import OnnxTextEncoder
    from xemb.embedders.generate import Generator
    from xemb.embedders.pipeline import build
    from xemb.settings import load_config
    from xemb.store import VersionStore

    data = make_slice(tmp_path_factory.mktemp("llm-slice") / "data", n_train=8, n_eval=4,
                      n_cold=4)
    gpt2 = make_tiny_gpt2(tmp_path_factory.mktemp("llm-gpt2"))
    llm = {"encoder": {"model": str(tiny_bert), "student": {**STATIC, "teacher_sample": 200}},
           "describe": {**DESCRIBE, "model": str(gpt2), "use": "separate", "batch_size": 16},
           "profile": {**PROFILE, "model": str(gpt2), "batch_size": 16}}

    def made(name: str, build_section: dict[str, Any]) -> TinyBuild:
        folder = tmp_path_factory.mktemp(name)
        (folder / "data").symlink_to(data)
        cfg = load_config(write_config(folder, {**llm, "build": build_section}))
        assert build(cfg) is not None
        store = VersionStore(cfg.build.root)
        return TinyBuild(folder / "xemb.yaml", cfg, cfg.build.root, store,
                         store.manifest(store.current()))

    local = made("llm-local", {})
    driver: dict[str, list[int]] = {"generators": [], "onnx_texts": []}
    real_init, real_batches = Generator.__init__, OnnxTextEncoder.batches

    def spied_init(self: Any, *a: Any, **kw: Any) -> None:
        driver["generators"].append(1)
        real_init(self, *a, **kw)

    def spied_batches(self: Any, texts: list[str], images: Any = None) -> Any:
        driver["onnx_texts"].append(len(texts))
        return real_batches(self, texts, images)

    with pytest.MonkeyPatch.context() as mp:  # this process only: not the Ray workers
        mp.setattr(Generator, "__init__", spied_init)
        mp.setattr(OnnxTextEncoder, "batches", spied_batches)
        ray = made("llm-ray", {**RAY, "ray_address": ray_address})
    yield local, ray, driver


def test_llm_stages_on_ray_give_the_local_version(llm_builds: Any) -> None:
    """Generated descriptions and profiles, the student's vectors (every item, by the int8
    graph on replicas), the description vectors and what the manifest records are the
    local engine's."""
    local, ray, _ = llm_builds
    li, ri = _table(local, layout.ITEMS), _table(ray, layout.ITEMS)
    for col in ("description_general", "description_domain"):
        assert ri.column(col).equals(li.column(col)), col
        assert any(t for t in li.column(col).to_pylist()), col  # something was generated
    for name in ("full", "transferable", "residual"):
        np.testing.assert_allclose(_matrix(ri, name), _matrix(li, name), atol=1e-5,
                                   err_msg=name)
    lp, rp = _table(local, layout.USER_PROFILES), _table(ray, layout.USER_PROFILES)
    for col in ("user_id", "profile", "domain_summaries"):
        assert rp.column(col).equals(lp.column(col)), col
    np.testing.assert_allclose(_matrix(rp, "vector"), _matrix(lp, "vector"), atol=1e-5)
    lm, rm = local.manifest.metrics["student"], ray.manifest.metrics["student"]
    assert rm["cos_held_out"] == lm["cos_held_out"] and rm["cos_held_out"] > 0
    assert ray.manifest.hashes["build"] == local.manifest.hashes["build"]


def test_llm_stages_on_ray_ran_on_the_replicas(llm_builds: Any) -> None:
    """The Ray build's driver loaded no generator and ran no whole-catalogue pass through
    the student's graph: generation and the student's item pass went to the replicas."""
    _, ray, driver = llm_builds
    assert driver["generators"] == []
    items = ray.manifest.counts["items"]
    assert driver["onnx_texts"] and max(driver["onnx_texts"]) < items
