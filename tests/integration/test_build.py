"""The offline job end to end on a small real slice: tables, ONNX parity, caching, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pyarrow.parquet as pq
import pytest

from xemb import layout

pytestmark = pytest.mark.integration


def _matrix(table, name: str) -> np.ndarray:
    col = table.column(name).combine_chunks()
    return col.flatten().to_numpy().reshape(len(col), -1)


def test_version_is_complete_and_verified(tiny_build) -> None:
    m = tiny_build.manifest
    store = tiny_build.store
    assert store.current() == m.version
    assert store.verify(m.version) == m
    expected = {layout.ITEMS, layout.INTENTS, layout.USERS, layout.ADAPTER_ONNX,
                layout.COMPOSER_ONNX, layout.ENCODER_ONNX, layout.ENCODER_TOKENIZER,
                layout.ENCODER_META, *(layout.index_file(d) for d in m.domains)}
    assert expected <= set(m.files)
    assert m.models["adapter"]["parity_max_abs"] <= 1e-4
    assert m.models["composer"]["parity_max_abs"] <= 1e-4
    assert m.counts["users"] == 2 * 180 and m.counts["intents"] == 16


def test_items_table(tiny_build) -> None:
    vdir = tiny_build.store.path(tiny_build.manifest.version)
    items = pq.read_table(vdir / layout.ITEMS)
    full, t, r = (_matrix(items, k) for k in ("full", "transferable", "residual"))
    # 32 content coordinates, then the item prior (adapter.prior is on by default)
    assert full.shape == (tiny_build.manifest.counts["items"], 33)
    assert tiny_build.manifest.dims["embedding"] == 33
    np.testing.assert_allclose(full, t + r, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(full[:, :32], axis=1), 1.0, atol=1e-4)
    assert (t[:, 32] == 0).all() and np.array_equal(r[:, 32], full[:, 32])
    w = _matrix(items, "intent_weights")
    np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-5)
    assert (np.diff(items.column("item_id").to_numpy()) > 0).all()
    warm = items.column("warm").to_numpy(zero_copy_only=False)
    assert 0 < warm.sum() < len(warm)  # the slice has cold items on purpose


def test_adapter_onnx_reproduces_published_vectors(tiny_build) -> None:
    """Cold items: text path only; their published vectors equal EncodeItems' path."""
    vdir = tiny_build.store.path(tiny_build.manifest.version)
    items = pq.read_table(vdir / layout.ITEMS)
    enc = ort.InferenceSession(str(vdir / layout.ENCODER_ONNX))
    ada = ort.InferenceSession(str(vdir / layout.ADAPTER_ONNX))
    meta = json.loads((vdir / layout.ENCODER_META).read_text())
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(vdir / layout.ENCODER_TOKENIZER))
    tok.enable_truncation(meta["max_length"])
    tok.enable_padding(pad_id=meta["pad_id"])
    cold = np.flatnonzero(~items.column("warm").to_numpy(zero_copy_only=False))[:5]
    texts = [items.column("text")[int(i)].as_py() for i in cold]
    encs = tok.encode_batch(texts)
    sem = enc.run(None, {"input_ids": np.array([e.ids for e in encs], np.int64),
                         "attention_mask": np.array([e.attention_mask for e in encs],
                                                    np.int64)})[0]
    domains = tiny_build.manifest.domains
    dom = np.array([domains.index(items.column("domain")[int(i)].as_py()) for i in cold])
    _, _, full = ada.run(None, {"semantic": sem, "domain": dom,
                                "item_row": np.full(len(cold), -1, np.int64)})
    np.testing.assert_allclose(full, _matrix(items, "full")[cold], atol=1e-5)


def test_users_and_intents_tables(tiny_build) -> None:
    vdir = tiny_build.store.path(tiny_build.manifest.version)
    users = pq.read_table(vdir / layout.USERS)
    assert set(users.column("target_domain").to_pylist()) == set(tiny_build.manifest.domains)
    vec = _matrix(users, "vector")
    np.testing.assert_allclose(np.linalg.norm(vec, axis=1), 1.0, atol=1e-4)
    intents = pq.read_table(vdir / layout.INTENTS)
    assert intents.num_rows == 16
    assert all(label for label in intents.column("label").to_pylist())
    assert sum(intents.column("support").to_pylist()) == tiny_build.manifest.counts["items"]


def test_faiss_index_per_domain(tiny_build) -> None:
    import faiss

    vdir = tiny_build.store.path(tiny_build.manifest.version)
    items = pq.read_table(vdir / layout.ITEMS)
    full = _matrix(items, "full")
    ids = items.column("item_id").to_numpy()
    dom = np.array(items.column("domain").to_pylist())
    for d in tiny_build.manifest.domains:
        index = faiss.read_index(str(vdir / layout.index_file(d)))
        assert index.ntotal == (dom == d).sum()
        q = full[dom == d][:3].copy()
        q[:, -1] = 0.0  # content only: the last coordinate is the item prior
        _, found = index.search(q, 1)
        assert found[:, 0].tolist() == ids[dom == d][:3].tolist()


def test_rebuild_with_nothing_changed_is_a_no_op(tiny_build) -> None:
    from xemb.embedders.pipeline import build

    assert build(tiny_build.config).version == tiny_build.manifest.version


def test_eval_cli_prints_one_json_object(tiny_build) -> None:
    out = subprocess.run([sys.executable, "-m", "xemb.cli", "eval", "-c",
                          str(tiny_build.config_path), "--split", "test"],
                         capture_output=True, text=True, timeout=300, check=True)
    result = json.loads(out.stdout)
    assert set(result) == {*tiny_build.manifest.domains, "baselines", "variants",
                           "selected_on_valid"}
    assert set(result["variants"]) == {"prior_weight_0"}
    for d in tiny_build.manifest.domains:
        assert set(result[d]) == {"HR@10", "NDCG@10", "Recall@50", "n"}
        assert 0.0 <= result[d]["HR@10"] <= 1.0
    assert set(result["baselines"]) == {"popularity", "text_last5", "popularity_text"}


def test_versions_cli(tiny_build) -> None:
    out = subprocess.run([sys.executable, "-m", "xemb.cli", "versions", "--root",
                          str(tiny_build.root)], capture_output=True, text=True, check=True)
    rows = json.loads(out.stdout)
    assert [r["version"] for r in rows if r["current"]] == [tiny_build.manifest.version]


def test_unknown_stage_is_a_clear_error(tiny_build) -> None:
    out = subprocess.run([sys.executable, "-m", "xemb.cli", "build", "-c",
                          str(tiny_build.config_path), "--stages", "encode,train"],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert "--stages: unknown stage 'train'" in out.stderr


def test_stage_subset_needs_its_upstream(tiny_build, tmp_path: Path) -> None:
    """--stages publish alone on a fresh root names the missing stage instead of crashing."""
    from conftest import write_config

    cfg_path = write_config(tmp_path, {
        "data": {"path": str(tiny_build.config.data.path)},
        "encoder": {"model": str(tiny_build.config.encoder.model)}})
    out = subprocess.run([sys.executable, "-m", "xemb.cli", "build", "-c", str(cfg_path),
                          "--stages", "publish"], capture_output=True, text=True)
    assert out.returncode == 4
    assert "stage 'publish' needs 'encode' first" in out.stderr
