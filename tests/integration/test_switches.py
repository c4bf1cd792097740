"""Every documented model switch removes its part and still builds end to end (ONNX export
with parity, served-path scoring); the part is really gone in what is published.

Switches that do not interact are built together (three builds instead of eight, to keep CI
inside its budget); each one's own check runs on the build that has it off."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pyarrow.parquet as pq
import pytest

from tests.conftest import write_config
from xemb import layout

pytestmark = pytest.mark.integration

SMALL = {"adapter": {"dim": 8, "hidden": 16, "epochs": 1, "batch_tokens": 256,
                     "negatives": 16},
         "intents": {"k": 6, "top_m": 2, "niter": 3},
         "composer": {"epochs": 1, "batch_tokens": 256, "negatives": 16, "max_len": 8}}

SWITCHES = {
    "id_embedding_off": {"adapter": {"id_embedding": False}},
    "residual_off": {"adapter": {"residual": False}},
    "prior_off": {"adapter": {"prior": False}},
    "prior_learned": {"adapter": {"prior_fit": "learned"}},
    "prior_counts": {"adapter": {"prior_fit": "counts"}},
    "logq_off": {"adapter": {"logq": False}},
    "alignment_off": {"adapter": {"align_weight": 0.0}},
    "orthogonality_off": {"adapter": {"orth_weight": 0.0}},
    "intents_off": {"composer": {"intents": False}},
    "recency_off": {"composer": {"recency": False}},
}
# the orthogonality term needs a residual, so it is off in a build that keeps one
GROUPS = {
    "id_residual_intents": ("id_embedding_off", "residual_off", "intents_off", "prior_counts"),
    "prior_recency_orth": ("prior_off", "recency_off", "orthogonality_off"),
    "logq_alignment": ("logq_off", "alignment_off", "prior_learned"),
}


def test_groups_cover_every_switch_once() -> None:
    names = [n for group in GROUPS.values() for n in group]
    assert sorted(names) == sorted(SWITCHES)


def _overrides(tiny_bert, names: tuple[str, ...]) -> dict:
    out = {k: dict(v) for k, v in SMALL.items()}
    for name in names:
        for section, values in SWITCHES[name].items():
            out.setdefault(section, {}).update(values)
    out["encoder"] = {"model": str(tiny_bert)}
    return out


def _matrix(table, name: str) -> np.ndarray:
    return np.stack(table.column(name).to_numpy(zero_copy_only=False))


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_switches_build_and_remove_their_parts(group, tmp_path, tiny_slice, tiny_bert) -> None:
    from xemb.embedders.pipeline import build, prepare
    from xemb.settings import load_config

    off = GROUPS[group]
    (tmp_path / "data").symlink_to(tiny_slice)
    cfg = load_config(write_config(tmp_path, _overrides(tiny_bert, off)))
    manifest = build(cfg)
    vdir = cfg.build.root / "versions" / manifest.version
    items = pq.read_table(vdir / layout.ITEMS)
    t, r, full = (_matrix(items, p) for p in ("transferable", "residual", "full"))
    width = 8 if "prior_off" in off else 9
    assert manifest.dims["embedding"] == width == full.shape[1]
    np.testing.assert_allclose(full, t + r, atol=1e-5)
    adapter = ort.InferenceSession(str(vdir / layout.ADAPTER_ONNX))
    inputs = {i.name for i in adapter.get_inputs()}
    if "id_embedding_off" in off and "prior_counts" not in off:
        # no per-item part: the graph takes no item row, and warm items equal their text path
        assert "item_row" not in inputs
    if "prior_learned" in off:
        state = _adapter_state(cfg, prepare)
        assert "prior_head.weight" in state and "prior_counts" not in state
    elif "prior_off" not in off:  # a fixed prior: tau * log(1 + training count), 0 if cold
        assert "item_row" in inputs  # the prior is looked up by row even without id vectors
        _assert_log_count_prior(cfg, prepare, full[:, -1])
    if "residual_off" in off:
        state = _adapter_state(cfg, prepare)
        assert not any(k.startswith("heads.") for k in state)
        cold = ~items.column("warm").to_numpy(zero_copy_only=False)
        np.testing.assert_allclose(r[cold][:, :8], 0.0, atol=1e-6)  # nothing but the prior
    if "prior_off" in off:
        assert manifest.params["prior"] is False and manifest.params["prior_scale"] is None
    else:
        assert (t[:, -1] == 0).all()
    if "intents_off" in off:
        _assert_intents_ignored(vdir, items, manifest)
    if "recency_off" in off:
        _assert_order_free(vdir, items, manifest)
    assert "candidate" in manifest.metrics["quality"]


def _assert_log_count_prior(cfg, prepare, prior: np.ndarray) -> None:
    ctx = prepare(cfg)
    counts = ctx.train_inputs(ctx.semantic()).counts
    assert counts.max() > 1  # the slice has repeated items: the check can tell counts apart
    np.testing.assert_allclose(prior, cfg.adapter.temperature * np.log1p(counts), atol=1e-6)
    state = _adapter_state(cfg, prepare)
    assert "prior_head.weight" not in state and "prior_counts" in state


def _adapter_state(cfg, prepare) -> dict:
    import torch

    ctx = prepare(cfg)
    return torch.load(ctx.out("adapt") / "adapt.pt", weights_only=True)["adapter"]


def _compose(vdir, items, manifest, hist: np.ndarray, intent_w_scale: float = 1.0):
    from xemb.composer_io import ItemArrays, composer_feeds
    from xemb.serving.tables import read_items

    t = read_items(vdir / layout.ITEMS, manifest.domains, manifest.dims["embedding"],
                   int(manifest.params["top_m"]))
    arrays = ItemArrays(t.parts["full"], t.domain, t.intent_ids, t.intent_w * intent_w_scale)
    sess = ort.InferenceSession(str(vdir / layout.COMPOSER_ONNX))
    feeds = composer_feeds(arrays, [hist], np.array([0]), 8)
    return sess.run(None, feeds)


def _assert_intents_ignored(vdir, items, manifest) -> None:
    hist = np.arange(5)
    user, weights = _compose(vdir, items, manifest, hist)
    other, _ = _compose(vdir, items, manifest, hist, intent_w_scale=0.25)
    assert weights.shape[1] == manifest.counts["intents"]  # still reported to people
    np.testing.assert_allclose(user, other, atol=1e-6)  # but they do not move the vector


def _assert_order_free(vdir, items, manifest) -> None:
    # same last item (it forms the query), the rest in another order: same user vector
    a = np.array([3, 1, 4, 2, 7])
    b = np.array([2, 4, 1, 3, 7])
    np.testing.assert_allclose(_compose(vdir, items, manifest, a)[0],
                               _compose(vdir, items, manifest, b)[0], atol=1e-5)
