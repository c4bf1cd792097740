"""The ranking protocol: rank = negatives scoring at least as high (ties count against the
target); HR/NDCG per target domain."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from xemb.embedders.data import Dataset
from xemb.embedders.evaluate import EvalSet, eval_set, rank_metrics


def test_rank_metrics_by_hand() -> None:
    item_domain = np.array([0, 0, 0, 0, 1, 1, 1])
    scores = np.array([0.9, 0.5, 0.5, 0.1, 0.3, 0.2, 0.8])
    es = EvalSet(histories=[np.array([0]), np.array([1])], targets=np.array([1, 4]),
                 target_domain=np.array([0, 1]),
                 negatives=np.array([[0, 2], [5, 6]]))
    out = rank_metrics(lambda i, pool: scores[pool], es, item_domain, ["a", "b"], k=1,
                       recall_k=2)
    # target 1 (0.5): negative 0.9 higher, 0.5 tied (counts against) -> rank 2, a miss at k=1;
    # full ranking: 0.9 and the tie above it -> rank 2, outside the top 2
    assert out["a"] == {"HR@1": 0.0, "NDCG@1": 0.0, "Recall@2": 0.0, "n": 1}
    # target 4 (0.3): 0.8 is higher -> rank 1; full ranking: one item above -> inside top 2
    assert out["b"]["HR@1"] == 0.0 and out["b"]["Recall@2"] == 1.0
    out = rank_metrics(lambda i, pool: scores[pool], es, item_domain, ["a", "b"], k=2)
    assert out["a"]["HR@2"] == 0.0  # the tie pushed it to rank 2
    assert out["b"]["HR@2"] == 1.0
    assert abs(out["b"]["NDCG@2"] - 1 / np.log2(3)) < 1e-4
    out = rank_metrics(lambda i, pool: scores[pool], es, item_domain, ["a", "b"], k=3)
    assert out["a"]["HR@3"] == 1.0 and abs(out["a"]["NDCG@3"] - 0.5) < 1e-4


def test_constant_scores_never_hit() -> None:
    """A model that scores every item alike must not get credit through ties."""
    item_domain = np.zeros(80, np.int64)
    es = EvalSet(histories=[np.array([0])], targets=np.array([7]),
                 target_domain=np.array([0]), negatives=np.array([np.arange(20, 40)]))
    out = rank_metrics(lambda i, pool: np.zeros(len(pool)), es, item_domain, ["a"])
    assert out["a"]["HR@10"] == 0.0 and out["a"]["Recall@50"] == 0.0


def test_negatives_follow_the_papers_draw() -> None:
    ids = np.arange(1, 2001)
    items = pa.table({"item_id": ids, "domain": ["g"] * 1000 + ["k"] * 1000,
                      "text": ["t"] * 2000})
    ds = Dataset(items=items, domains=["g", "k"], item_domain=np.repeat([0, 1], 1000))
    ds.sequences = {"test": [("u1", np.array([0, 5])), ("u2", np.array([3, 1500]))]}
    es = eval_set(ds, "test", n_neg=999, seed=42)
    rng = np.random.default_rng(42)
    first = rng.choice(np.delete(ids[:1000], 5), 999, replace=False)
    second = rng.choice(np.delete(ids[1000:], 500), 999, replace=False)
    assert ids[es.negatives[0]].tolist() == first.tolist()
    assert ids[es.negatives[1]].tolist() == second.tolist()
    assert es.target_domain.tolist() == [0, 1]
