"""A small synthetic version with the real layout, for tests of the online path.

Random vectors and hand-built ONNX graphs (a masked-mean composer, a linear adapter, a
bag-of-words encoder with a word-level tokenizer) published through the real VersionStore, so
the server loads it exactly as it loads a real build, in well under a second. Needs the
``onnx`` package (``offline`` extra).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from xemb import layout
from xemb.ipc_tables import items_for_serving, users_for_serving, write_ipc
from xemb.settings.index import IndexConfig
from xemb.store import Manifest, VersionStore

if TYPE_CHECKING:
    from xemb.serving.client import XembClient
    from xemb.serving.server import XembServer

__all__ = ["publish_synthetic", "clone_version", "copy_published", "running", "SYNTH_DOMAINS"]

SYNTH_DOMAINS = ["grocery", "kitchen"]
WORDS = ("salt", "pepper", "tea", "coffee", "pan", "pot", "knife", "spoon", "olive", "oil",
         "rice", "bowl", "cup", "mug", "jar")


def _fixed(arr: np.ndarray) -> pa.FixedSizeListArray:
    return pa.FixedSizeListArray.from_arrays(pa.array(arr.reshape(-1), pa.float32()),
                                             arr.shape[1])


def _onnx(path: Path, nodes: list, inputs: list, outputs: list, inits: list) -> None:
    import onnx
    from onnx import helper

    graph = helper.make_graph(nodes, path.stem, inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def _composer(path: Path, centroids: np.ndarray) -> None:
    """user_vec = mean of hist_vec over the mask; intent_weights = softmax(user_vec . C)."""
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    d = centroids.shape[1]
    ins = [h.make_tensor_value_info("hist_vec", T.FLOAT, ["B", "L", d]),
           h.make_tensor_value_info("hist_domain", T.INT64, ["B", "L"]),
           h.make_tensor_value_info("hist_mask", T.FLOAT, ["B", "L"]),
           h.make_tensor_value_info("hist_intents", T.INT64, ["B", "L", "M"]),
           h.make_tensor_value_info("hist_intent_w", T.FLOAT, ["B", "L", "M"]),
           h.make_tensor_value_info("target_domain", T.INT64, ["B"])]
    outs = [h.make_tensor_value_info("user_vec", T.FLOAT, ["B", d]),
            h.make_tensor_value_info("intent_weights", T.FLOAT, ["B", len(centroids)])]
    inits = [nh.from_array(centroids.T.copy(), "ct"),
             nh.from_array(np.array([2], np.int64), "ax2"),
             nh.from_array(np.array([1], np.int64), "ax1"),
             nh.from_array(np.array(1e-6, np.float32), "eps")]
    nodes = [h.make_node("Unsqueeze", ["hist_mask", "ax2"], ["m3"]),
             h.make_node("Mul", ["hist_vec", "m3"], ["masked"]),
             h.make_node("ReduceSum", ["masked", "ax1"], ["s"], keepdims=0),
             h.make_node("ReduceSum", ["hist_mask", "ax1"], ["n"], keepdims=1),
             h.make_node("Add", ["n", "eps"], ["n1"]),
             h.make_node("Div", ["s", "n1"], ["user_vec"]),
             h.make_node("MatMul", ["user_vec", "ct"], ["logits"]),
             h.make_node("Softmax", ["logits"], ["intent_weights"], axis=-1)]
    _onnx(path, nodes, ins, outs, inits)


def _adapter(path: Path, w_t: np.ndarray, w_r: np.ndarray) -> None:
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    s, d = w_t.shape
    ins = [h.make_tensor_value_info("semantic", T.FLOAT, ["B", s]),
           h.make_tensor_value_info("domain", T.INT64, ["B"])]
    outs = [h.make_tensor_value_info(n, T.FLOAT, ["B", d]) for n in layout.ADAPTER_OUTPUTS]
    nodes = [h.make_node("MatMul", ["semantic", "wt"], ["transferable"]),
             h.make_node("MatMul", ["semantic", "wr"], ["residual"]),
             h.make_node("Add", ["transferable", "residual"], ["full"])]
    _onnx(path, nodes, ins, outs, [nh.from_array(w_t, "wt"), nh.from_array(w_r, "wr")])


def _encoder(folder: Path, table: np.ndarray) -> None:
    """Word-level tokenizer + masked mean of a word table, L2-normalised."""
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "encoder.json").write_text(json.dumps({"max_length": 16, "pad_id": 0}))
    s = table.shape[1]
    ins = [h.make_tensor_value_info(n, T.INT64, ["B", "T"]) for n in layout.ENCODER_INPUTS]
    outs = [h.make_tensor_value_info(layout.ENCODER_OUTPUTS[0], T.FLOAT, ["B", s])]
    nodes = [h.make_node("Gather", ["table", "input_ids"], ["e"]),
             h.make_node("Cast", ["attention_mask"], ["mf"], to=T.FLOAT),
             h.make_node("Unsqueeze", ["mf", "ax2"], ["m3"]),
             h.make_node("Mul", ["e", "m3"], ["em"]),
             h.make_node("ReduceSum", ["em", "ax1"], ["sum"], keepdims=0),
             h.make_node("LpNormalization", ["sum"], [layout.ENCODER_OUTPUTS[0]], axis=-1, p=2)]
    inits = [nh.from_array(table, "table"), nh.from_array(np.array([2], np.int64), "ax2"),
             nh.from_array(np.array([1], np.int64), "ax1")]
    _onnx(folder / "model.onnx", nodes, ins, outs, inits)


def _semantic(texts: list[str], table: np.ndarray) -> np.ndarray:
    vocab = {w: i + 2 for i, w in enumerate(WORDS)}
    out = np.stack([table[[vocab.get(w, 1) for w in t.split()]].sum(0) for t in texts])
    return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


def _list(x: np.ndarray, dtype: pa.DataType) -> pa.ListArray:
    offsets = pa.array(np.arange(0, x.size + 1, x.shape[1], dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(x.reshape(-1), dtype))


def _clustered(rng: np.random.Generator, n: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Catalogue-like vectors: a mixture of many Gaussian clusters (no duplicates)."""
    centers = rng.normal(size=(max(8, n // 200), d)).astype(np.float32)
    t = centers[rng.integers(0, len(centers), n)] + rng.normal(0, 0.5, (n, d))
    return t.astype(np.float32), rng.normal(0, 0.2, (n, d)).astype(np.float32)


def _items(rng: np.random.Generator, n: int, sem_table: np.ndarray, w_t: np.ndarray,
           w_r: np.ndarray, centroids: np.ndarray, m: int, clustered: bool = False
           ) -> tuple[pa.Table, np.ndarray]:
    if clustered:  # fast for large n
        texts = [" ".join(t) for t in np.array(WORDS)[rng.integers(0, len(WORDS), (n, 3))]
                 .tolist()]
    else:
        texts = [" ".join(rng.choice(WORDS, 3)) for _ in range(n)]
    warm = np.arange(n) % 4 != 0  # every 4th item is cold: its vectors are text-only
    if clustered:
        transferable, residual = _clustered(rng, n, w_t.shape[1])
    else:
        sem = _semantic(texts, sem_table)
        transferable = sem @ w_t
        residual = sem @ w_r + warm[:, None] * rng.normal(0, 0.1, (n, w_t.shape[1]))
    residual = residual.astype(np.float32)
    full = transferable + residual
    logits = transferable @ centroids.T / 0.1
    top = np.argsort(-logits, axis=1)[:, :m]
    w = np.exp(np.take_along_axis(logits, top, 1) - logits.max(1, keepdims=True))
    w = (w / w.sum(1, keepdims=True)).astype(np.float32)
    ids = np.arange(1, n + 1, dtype=np.int64)
    domain = np.where(ids <= n // 3, SYNTH_DOMAINS[0], SYNTH_DOMAINS[1])
    table = pa.table({
        "item_id": ids, "domain": domain, "text": texts,
        "full": _fixed(full), "transferable": _fixed(transferable), "residual": _fixed(residual),
        "intent_ids": _list(top.astype(np.int64), pa.int64()),
        "intent_weights": _list(w, pa.float32()), "warm": warm})
    return table, full


def _index(path: Path, ids: np.ndarray, vectors: np.ndarray) -> None:
    index = faiss.IndexIDMap(faiss.IndexHNSWFlat(vectors.shape[1], 16,
                                                 faiss.METRIC_INNER_PRODUCT))
    index.add_with_ids(np.ascontiguousarray(vectors), ids)
    faiss.write_index(index, str(path))


def publish_synthetic(root: str | Path, *, seed: int = 0, n_items: int = 600, d: int = 16,
                      version: str | None = None, make_current: bool = True,
                      ipc: bool = False, index: IndexConfig | None = None,
                      clustered: bool = False) -> Manifest:
    """Write, commit and (by default) make current a synthetic version under ``root``.

    ``ipc`` also writes the memory-mapped serving tables (``items.arrow``, ``users.arrow``)
    as publish does; without it the version looks like one published before them. ``index``
    builds, measures and records the indexes with publish's own code (``xemb.serving.ann``)
    instead of a fixed small HNSW. ``clustered`` draws item vectors from a mixture of
    Gaussians (no duplicate vectors, as in a real catalogue) instead of from 3 of 15 words."""
    rng = np.random.default_rng(seed)
    store = VersionStore(root)
    version, stage = store.new_staging(version)
    s, k, m = 8, 8, 3
    sem_table = rng.normal(size=(len(WORDS) + 2, s)).astype(np.float32)
    w_t, w_r = (rng.normal(0, 0.5, (s, d)).astype(np.float32) for _ in range(2))
    centroids = rng.normal(size=(k, d)).astype(np.float32)
    items, full = _items(rng, n_items, sem_table, w_t, w_r, centroids, m, clustered)
    pq.write_table(items, stage / layout.ITEMS)
    pq.write_table(pa.table({
        "intent_id": np.arange(k, dtype=np.int64), "vector": _fixed(centroids),
        "label": [f"intent {i}" for i in range(k)], "support": np.ones(k, np.int64),
        "domain_support": ["{}"] * k}), stage / layout.INTENTS)
    users = rng.normal(size=(4, d)).astype(np.float32)
    pq.write_table(pa.table({
        "user_id": ["u1", "u1", "u2", "u2"], "target_domain": SYNTH_DOMAINS * 2,
        "vector": _fixed(users), "top_intent_ids": [[0, 1, 2]] * 4,
        "top_intent_weights": [[0.5, 0.3, 0.2]] * 4}), stage / layout.USERS)
    _composer(stage / layout.COMPOSER_ONNX, centroids)
    _adapter(stage / layout.ADAPTER_ONNX, w_t, w_r)
    _encoder(stage / layout.ENCODER_DIR, sem_table)
    params: dict = {"composer_max_len": 10, "top_m": m, "n_intents": k, "top_intents": 3}
    metrics: dict = {}
    if index is not None:
        params["search"], metrics["index"] = _measured_indexes(stage, items, full, index)
    else:
        _fixed_indexes(stage, items, full)
    if ipc:
        write_ipc(items_for_serving(items, SYNTH_DOMAINS, m), stage / layout.ITEMS_ARROW)
        write_ipc(users_for_serving(pq.read_table(stage / layout.USERS), SYNTH_DOMAINS),
                  stage / layout.USERS_ARROW)
    manifest = Manifest(
        version=version, created_at=datetime.now(timezone.utc).isoformat(),
        domains=SYNTH_DOMAINS, dims={"embedding": d, "semantic": s},
        counts={"items": n_items, "intents": k, "users": len(users)},
        params=params, metrics=metrics)
    store.commit(stage, manifest)
    store.mark_published(version)  # a synthetic version counts as fully published
    return store.set_current(version) if make_current else store.manifest(version)


def _fixed_indexes(stage: Path, items: pa.Table, full: np.ndarray) -> None:
    domains = items.column("domain").to_numpy(zero_copy_only=False)
    for name in SYNTH_DOMAINS:
        rows = np.flatnonzero(domains == name)
        _index(stage / layout.index_file(name), items.column("item_id").to_numpy()[rows],
               full[rows])


def _measured_indexes(stage: Path, items: pa.Table, full: np.ndarray,
                      index: IndexConfig) -> tuple[dict, dict]:
    from xemb.serving.ann import write_domain_indexes

    codes = np.array([SYNTH_DOMAINS.index(x) for x in items.column("domain").to_pylist()])
    return write_domain_indexes(stage, full.astype(np.float32), items.column("item_id")
                                .to_numpy(), codes, SYNTH_DOMAINS, index, layout.index_file)


def clone_version(root: str | Path, source: str, *, scale: float | None = None,
                  make_current: bool = False) -> Manifest:
    """Publish a copy of ``source`` under a new id (published data stays immutable).

    ``scale`` multiplies every item vector, so responses show which version they came from.
    """
    import shutil

    store = VersionStore(root)
    src = store.manifest(source)
    version, stage = store.new_staging()
    shutil.copytree(store.path(source), stage, dirs_exist_ok=True)
    (stage / "manifest.json").unlink()
    if scale is not None:
        table = pq.read_table(stage / layout.ITEMS)
        for part in layout.VECTOR_PARTS:
            vec = np.stack(table.column(part).to_numpy(zero_copy_only=False)) * np.float32(scale)
            table = table.set_column(table.schema.get_field_index(part), part,
                                     _fixed(vec.astype(np.float32)))
        pq.write_table(table, stage / layout.ITEMS)
        if (stage / layout.ITEMS_ARROW).exists():  # the serving copy follows
            write_ipc(items_for_serving(table, src.domains, int(src.params["top_m"])),
                      stage / layout.ITEMS_ARROW)
        _reindex(stage, src, table)
    store.commit(stage, src.model_copy(update={"version": version, "files": {}}))
    store.mark_published(version)
    return store.set_current(version) if make_current else store.manifest(version)


def _reindex(stage: Path, manifest: Manifest, table: pa.Table) -> None:
    domains = table.column("domain").to_numpy(zero_copy_only=False)
    full = np.stack(table.column("full").to_numpy(zero_copy_only=False)).astype(np.float32)
    for name in manifest.domains:
        path = stage / layout.index_file(name)
        if path.exists():
            rows = np.flatnonzero(domains == name)
            _index(path, table.column("item_id").to_numpy()[rows], full[rows])


@contextmanager
def running(root: str | Path, **serving: object) -> Iterator[tuple[XembServer, XembClient]]:
    """A started server on a free loopback port with a client to it; stopped on exit."""
    from xemb.serving.client import XembClient
    from xemb.serving.server import create_server
    from xemb.settings import XembConfig

    config = XembConfig.model_validate({"serving": {"port": 0, "poll_interval_s": 0,
                                                    **serving}})
    server, port = create_server(config, root)
    server.start()
    client = XembClient(f"127.0.0.1:{port}", timeout=10)
    try:
        yield server, client
    finally:
        client.close()
        server.stop(0).wait()


def copy_published(src_root: str | Path, dst_root: str | Path) -> Manifest:
    """Copy the current version of ``src_root`` into ``dst_root`` and make it current there
    (tests that publish more versions must not touch a shared, read-only root)."""
    import shutil

    src = VersionStore(src_root)
    version = src.current()
    dst = VersionStore(dst_root)
    dst.versions_dir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src.path(version), dst.versions_dir / version)
    dst.mark_published(version)
    return dst.set_current(version)
