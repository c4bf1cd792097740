"""Issue 8 (describe.use: separate): a real build on a small slice (tiny GPT-2 writing the
descriptions, tiny BERT encoding them) where the title and each description are encoded apart
and the adapter fuses them; its ONNX export keeps parity with torch, descriptions change what
it gives, a missing description takes the title-only path, and cold-start ``EncodeItems``
over a real gRPC server on loopback serves that path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.integration.test_describe import DESCRIBE, make_tiny_gpt2

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="module")
def small_slice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.conftest import make_slice

    return make_slice(tmp_path_factory.mktemp("separate-slice") / "data", n_train=8,
                      n_eval=4, n_cold=4)


def _config(folder: Path, data: Path, tiny_bert: Path, gpt2: Path,
            **describe: object):  # type: ignore[no-untyped-def]
    from tests.conftest import write_config
    from xemb.settings import load_config

    if not (folder / "data").exists():
        (folder / "data").symlink_to(data)
    return load_config(write_config(folder, {
        "encoder": {"model": str(tiny_bert)},
        "describe": {**DESCRIBE, "model": str(gpt2), "use": "separate", **describe}}))


@pytest.fixture(scope="module")
def separate(tmp_path_factory: pytest.TempPathFactory, small_slice: Path, tiny_bert: Path,
             gpt2: Path):  # type: ignore[no-untyped-def]
    """One real build with ``describe.use: separate`` (read-only for the tests)."""
    from xemb.embedders.pipeline import build, prepare

    cfg = _config(tmp_path_factory.mktemp("separate"), small_slice, tiny_bert, gpt2)
    manifest = build(cfg)
    assert manifest is not None
    return cfg, manifest, prepare(cfg)


def _cold_start_encoder(cfg, manifest):  # type: ignore[no-untyped-def]
    from xemb import layout
    from xemb.serving.models import ColdStartEncoder

    base = cfg.build.root / "versions" / manifest.version
    return ColdStartEncoder(base / layout.ENCODER_DIR, base / layout.ADAPTER_ONNX)


def _run(enc, semantic, domain, rows, descriptions=None, mask=None):  # type: ignore[no-untyped-def]
    """(transferable, residual, full) through the published adapter.onnx."""
    from xemb.adapter_io import adapter_feeds

    return enc.adapter.run(None, adapter_feeds(enc.adapter_inputs, semantic, domain, rows,
                                               descriptions, mask))


def test_titles_and_descriptions_are_encoded_apart(separate) -> None:  # type: ignore[no-untyped-def]
    import pyarrow as pa

    from xemb import layout
    from xemb.embedders.describe import description_columns, encode_descriptions
    from xemb.embedders.encode import OnnxTextEncoder, TextEncoder

    cfg, manifest, ctx = separate
    assert ctx.encoder_texts() == ctx.ds.texts  # the encoder read the titles alone
    described = ctx.descriptions()
    vectors, mask = ctx.description_vectors()
    n, s = ctx.semantic().shape
    assert vectors.shape == (n, 2, s) and mask.shape == (n, 2)
    columns = description_columns(described)  # the order of describe.prompts
    assert sorted(columns) == ["description_domain", "description_general"]
    texts = {c: described.column(c).to_pylist() for c in columns}
    assert mask.tolist() == [[float(bool(texts[c][i].strip())) for c in texts]
                             for i in range(n)]
    assert mask.mean() > 0.5  # the tiny GPT-2 wrote something for most items
    # each text went through the published encoder alone: title, then each description
    enc = _cold_start_encoder(cfg, manifest)
    np.testing.assert_allclose(ctx.semantic()[:8], enc.semantic(ctx.ds.texts[:8]), atol=1e-4)
    for k, c in enumerate(columns):
        np.testing.assert_allclose(vectors[:8, k], enc.semantic(texts[c][:8]), atol=1e-4)
    assert not np.allclose(vectors[:8, 0], ctx.semantic()[:8], atol=1e-2)
    # through the same content-addressed encode cache: encoding them again encodes nothing
    onnx = OnnxTextEncoder(TextEncoder(cfg.encoder), ctx.out("encode") / layout.ENCODER_ONNX)
    out = cfg.build.root.parent / "again"
    out.mkdir()
    assert encode_descriptions(onnx, described, out, cfg.build.root / "cache" / "encode") == 0
    np.testing.assert_array_equal(np.load(out / "descriptions.npy"), vectors)
    # an empty (or absent) generation is a missing description: masked out
    few = pa.table({"item_id": [1, 2, 3], columns[0]: ["a kettle", "", None],
                    columns[1]: ["  ", "a knife", "a pan"]})
    (out / "few").mkdir()
    encode_descriptions(onnx, few, out / "few", out / "cache")  # not the build's cache
    assert np.load(out / "few" / "description_mask.npy").tolist() == [
        [True, False], [False, True], [False, True]]


def test_the_adapter_fuses_descriptions_and_exports_with_parity(separate) -> None:  # type: ignore[no-untyped-def]
    import pyarrow.parquet as pq
    import torch

    from xemb import layout
    from xemb.embedders.context import load_adapter
    from xemb.embedders.materialize import item_rows

    cfg, manifest, ctx = separate
    columns = list(cfg.describe.prompts)  # the order of the description inputs
    assert manifest.params["describe"] == {"use": "separate", "dropout": 0.25,
                                           "columns": columns}
    assert manifest.models["adapter"]["descriptions"] == columns
    assert manifest.models["adapter"]["parity_max_abs"] <= cfg.build.parity_tol
    enc = _cold_start_encoder(cfg, manifest)
    assert set(layout.ADAPTER_DESCRIPTION_INPUTS) <= set(enc.adapter_inputs)
    adapter, _ = load_adapter(ctx, ctx.semantic().shape[1])
    assert adapter.fusion is not None
    assert max(float(m.weight.detach().abs().max()) for m in adapter.fusion.maps) > 0  # trained

    vectors, mask = ctx.description_vectors()
    rows = np.flatnonzero(mask.all(1))[:16]  # items with both descriptions
    sem, dom = np.asarray(ctx.semantic()[rows]), ctx.ds.item_domain[rows]
    item_row = item_rows(ctx.warm)[rows]
    desc = np.asarray(vectors[rows])
    fused = _run(enc, sem, dom, item_row, desc, mask[rows])
    items = pq.read_table(cfg.build.root / "versions" / manifest.version / layout.ITEMS)
    published = np.stack(items.column("transferable").to_numpy(zero_copy_only=False))[rows]
    np.testing.assert_allclose(fused[0], published, atol=1e-5)  # what was published

    # another general description changes the item's transferable vector
    other = desc.copy()
    other[:, 0] = enc.semantic(["a heavy cast iron frying pan for outdoor cooking"])
    changed = _run(enc, sem, dom, item_row, other, mask[rows])
    assert np.abs(changed[0] - fused[0]).max() > 1e-4
    # missing descriptions (mask 0): nothing of them is read, the title-only path
    none = _run(enc, sem, dom, item_row)
    masked_junk = _run(enc, sem, dom, item_row, np.random.default_rng(0).normal(
        size=desc.shape), np.zeros_like(mask[rows]))
    np.testing.assert_array_equal(masked_junk[0], none[0])
    assert np.abs(none[0] - fused[0]).max() > 1e-4

    # ONNX Runtime against torch on both paths
    t = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in (
        ("semantic", sem), ("domain", dom), ("rows", np.maximum(item_row, 0)),
        ("desc", desc), ("mask", mask[rows]))}
    warm = torch.from_numpy(item_row >= 0)
    with torch.no_grad():
        ref = adapter.items(t["semantic"], t["domain"], t["rows"], warm, t["desc"], t["mask"])
        ref_none = adapter.items(t["semantic"], t["domain"], t["rows"], warm)
    for got, want in ((fused, ref), (none, ref_none)):
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w.numpy(), atol=cfg.build.parity_tol)


def test_encode_items_serves_cold_start_items_through_the_title_only_path(separate) -> None:  # type: ignore[no-untyped-def]
    import pyarrow.parquet as pq

    from tests.helpers.synthetic_serving import running
    from xemb import layout

    cfg, manifest, ctx = separate
    items = pq.read_table(cfg.build.root / "versions" / manifest.version / layout.ITEMS)
    cold = np.flatnonzero(~np.asarray(items.column("warm")))
    assert len(cold) >= 2
    domain_codes = ctx.ds.item_domain[cold]
    code = int(domain_codes[0])
    rows = cold[domain_codes == code]
    texts = [ctx.ds.texts[i] for i in rows]
    full = np.stack(items.column("full").to_numpy(zero_copy_only=False))
    enc = _cold_start_encoder(cfg, manifest)
    title_only = _run(enc, enc.semantic(texts), np.full(len(rows), code), np.full(len(rows), -1))
    with running(cfg.build.root) as (_, client):
        r = client.encode_items(texts, ctx.ds.domains[code])
    assert r.version == manifest.version
    assert r.full.shape == (len(rows), manifest.dims["embedding"])
    np.testing.assert_allclose(r.full, title_only[2], atol=1e-5)
    np.testing.assert_allclose(r.full, r.transferable + r.residual, atol=1e-5)
    # a sensible vector: nearest, among the catalogue, to the item's own published one
    # (which its descriptions moved; the title-only path is what was trained without them)
    content = manifest.dims["embedding"] - int(manifest.params["prior"])  # not the prior
    sims = r.full[:, :content] @ full[:, :content].T
    assert (sims.argmax(1) == rows).all()
    assert not np.allclose(r.full, full[rows], atol=1e-4)  # descriptions did count offline


def test_use_and_dropout_feed_the_stage_keys(small_slice: Path, tiny_bert: Path, gpt2: Path,
                                             tmp_path: Path) -> None:
    from xemb.embedders.pipeline import prepare

    def keys(**describe: object) -> dict[str, str]:
        return prepare(_config(tmp_path, small_slice, tiny_bert, gpt2, **describe)).keys

    sep, concat = keys(), keys(use="concat")
    assert sep["describe"] == concat["describe"]  # the same texts either way
    for stage in ("encode", "adapt", "intents", "compose", "publish"):
        assert sep[stage] != concat[stage], stage
    more = keys(dropout=0.5)  # only the adapter reads the description dropout
    assert more["encode"] == sep["encode"] and more["adapt"] != sep["adapt"]
    assert keys(use="concat", dropout=0.5) == concat  # concat ignores it


def test_separate_with_a_static_student_encodes_descriptions_by_the_student(
        tmp_path: Path, small_slice: Path, tiny_bert: Path, gpt2: Path) -> None:
    """With a distilled student on, the student (the published encoder, as cold start would)
    encodes every description; the titles keep the teacher/student split."""
    from xemb import layout
    from xemb.embedders.describe import DESCRIPTION_VECTORS, description_columns
    from xemb.embedders.pipeline import build, prepare
    from xemb.serving.models import ColdStartEncoder

    cfg = _config(tmp_path, small_slice, tiny_bert, gpt2)
    student = {"enabled": True, "kind": "static", "teacher_sample": 60, "holdout": 0.2,
               "epochs": 2, "quantize": False}
    cfg = cfg.model_copy(update={"encoder": cfg.encoder.model_copy(update={
        "student": cfg.encoder.student.model_validate(student)})})
    manifest = build(cfg)
    assert manifest is not None and manifest.metrics["student"]["kind"] == "static"
    ctx = prepare(cfg)
    described = ctx.descriptions()
    assert described is not None
    vectors = np.load(ctx.out("encode") / DESCRIPTION_VECTORS)
    base = cfg.build.root / "versions" / manifest.version
    served = ColdStartEncoder(base / layout.ENCODER_DIR, base / layout.ADAPTER_ONNX)
    for k, col in enumerate(description_columns(described)):
        texts = described.column(col).to_pylist()[:20]
        got = served.semantic([t or "" for t in texts])
        assert (got * vectors[:20, k]).sum(1).min() > 0.999, col
