"""The models and losses do what they say, on small constructed cases."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the offline extra")

from xemb.embedders.batches import SeqBatch  # noqa: E402
from xemb.embedders.models import Adapter, Composer  # noqa: E402
from xemb.embedders.train import (  # noqa: E402
    ItemIntents,
    TrainInputs,
    _align_loss,
    _Negatives,
    _next_item_loss,
    _orth_loss,
)


def _composer(prior: bool, recency: bool = True) -> Composer:
    torch.manual_seed(0)
    intents = torch.nn.functional.normalize(torch.randn(6, 9 if prior else 8), dim=-1)
    c = Composer(8, 2, intents, heads=2, dropout=0.0, prior=prior, recency=recency)
    with torch.no_grad():  # wake the intent pathway up (it starts at zero)
        c.intent_out.weight.normal_(0, 0.3)
        c.intent_decay.normal_()
        c.dist_bias.normal_()
        c.prior_scale.fill_(0.7)
    return c.eval()


@pytest.mark.parametrize("prior", [False, True])
def test_training_path_equals_serving_path(prior: bool) -> None:
    """``causal`` (training, one query per position) and ``forward`` (serving/ONNX, one query
    per history) give the same user vector for the same history."""
    c = _composer(prior)
    length, width = 7, 9 if prior else 8
    vec = torch.nn.functional.normalize(torch.randn(1, length, width), dim=-1)
    dom = torch.tensor([[0, 1, 1, 0, 1, 0, 0]])
    ids = torch.randint(0, 6, (1, length, 2))
    w = torch.softmax(torch.randn(1, length, 2), -1)
    dense = torch.zeros(1, length, 6).scatter_add(2, ids, w)
    target = torch.ones(1, length, dtype=torch.int64)
    with torch.no_grad():
        causal = c.with_prior(c.causal(vec, dom, torch.ones(1, length, dtype=torch.bool),
                                       target, dense))
        for t in range(length):
            n = t + 1
            user, _ = c(vec[:, :n], dom[:, :n], torch.ones(1, n), ids[:, :n], w[:, :n],
                        torch.tensor([1]))
            np.testing.assert_allclose(user[0].numpy(), causal[0, t].numpy(), atol=1e-5)
    if prior:
        assert float(user[0, -1]) == pytest.approx(0.7)  # the prior's weight, last coord


def test_padding_in_front_changes_nothing() -> None:
    c = _composer(True)
    vec = torch.nn.functional.normalize(torch.randn(1, 4, 9), dim=-1)
    args = (torch.tensor([[0, 1, 0, 1]]), torch.ones(1, 4), torch.zeros(1, 4, 2).long(),
            torch.full((1, 4, 2), 0.5), torch.tensor([0]))
    padded = [torch.cat([torch.zeros_like(a[:, :3]), a], 1) if a.dim() > 1 else a
              for a in (vec, *args)]
    padded[2] = torch.cat([torch.zeros(1, 3), torch.ones(1, 4)], 1)
    with torch.no_grad():
        a, _ = c(vec, *args)
        b, _ = c(*padded)
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)


def test_adapter_prior_is_the_last_coordinate() -> None:
    torch.manual_seed(0)
    a = Adapter(16, 8, 32, 2, n_items=5, dropout=0.0, prior=True).eval()
    with torch.no_grad():
        a.item_bias.weight.fill_(0.3)
        a.prior_head.bias.fill_(-0.1)
        t, r, f = a.items(torch.randn(5, 16), torch.tensor([0, 1, 0, 1, 1]), torch.arange(5),
                          torch.tensor([True, True, False, False, True]))
    assert f.shape == (5, 9)
    np.testing.assert_allclose((t + r).numpy(), f.numpy(), atol=1e-6)
    np.testing.assert_allclose(f[:, :8].norm(dim=-1).numpy(), 1.0, atol=1e-5)
    assert (t[:, 8] == 0).all()
    # text part (the head starts at 0 weights: just its bias) + per-item part where warm
    np.testing.assert_allclose(f[:, 8].numpy(), [0.2, 0.2, -0.1, -0.1, 0.2], atol=1e-6)
    np.testing.assert_allclose(r[:, 8].numpy(), f[:, 8].numpy())


def test_fixed_prior_is_the_log_count_of_warm_items_and_never_trained() -> None:
    from xemb.embedders.train import TrainInputs, _init_prior

    torch.manual_seed(0)
    a = Adapter(16, 8, 32, 2, n_items=5, dropout=0.0, prior=True, prior_rows=5).eval()
    assert a.prior_head is None and a.item_bias is None and a.width == 9
    assert all("prior" not in n for n, _ in a.named_parameters())  # a buffer, not trained
    data = TrainInputs(torch.randn(5, 16), torch.tensor([0, 1, 0, 1, 1]),
                       torch.tensor([True, True, False, False, True]),
                       [np.array([0, 1, 0]), np.array([4, 0])], 2)
    _init_prior(a, data, 0.1)
    with torch.no_grad():
        t, r, f = a.items(data.semantic, data.domain, torch.arange(5), data.warm)
    np.testing.assert_allclose(f[:, 8].numpy(), 0.1 * np.log1p([3, 1, 0, 0, 1]), atol=1e-6)
    assert (t[:, 8] == 0).all()
    np.testing.assert_allclose((t + r).numpy(), f.numpy(), atol=1e-6)
    # a new item (the export's text-only path: not warm) gets no prior
    with torch.no_grad():
        _, _, cold = a.items(data.semantic[:1], data.domain[:1], torch.tensor([0]),
                             torch.tensor([False]))
    assert float(cold[0, 8]) == 0.0
    # the table travels in the state dict: a reloaded adapter serves the same prior
    b = Adapter(16, 8, 32, 2, n_items=5, dropout=0.0, prior=True, prior_rows=5)
    b.load_state_dict(a.state_dict())
    assert torch.equal(b.prior_counts, a.prior_counts)


def _batch(rows: list[list[int]]) -> SeqBatch:
    r = torch.tensor(rows)
    return SeqBatch(r, torch.ones_like(r, dtype=torch.bool))


def test_next_item_loss_prefers_the_target_and_logq_discounts_popular_ones() -> None:
    cand = torch.eye(4)
    dom = torch.zeros(4, dtype=torch.int64)
    batch = _batch([[0, 1]])
    local = torch.tensor([[0, 1]])
    good = torch.stack([cand[1], cand[1]]).unsqueeze(0)  # position 0 predicts item 1
    bad = torch.stack([cand[2], cand[2]]).unsqueeze(0)
    lg = _next_item_loss(good, batch, local, cand, dom, 0.1)
    lb = _next_item_loss(bad, batch, local, cand, dom, 0.1)
    assert lg < 0.01 < 5 < lb
    # the prior adds to the score: a high prior on the target lowers the loss
    with_prior = _next_item_loss(bad, batch, local, cand, dom, 0.1,
                                 torch.tensor([0.0, 2.0, 0.0, 0.0]))
    assert with_prior < lb
    # logQ: a target drawn often (log q near 0) gets less credit than a rare one
    popular = _next_item_loss(good, batch, local, cand, dom, 1.0, None,
                              torch.tensor([-5.0, 0.0, -5.0, -5.0]))
    rare = _next_item_loss(good, batch, local, cand, dom, 1.0, None,
                           torch.tensor([0.0, -5.0, 0.0, 0.0]))
    assert popular > rare


def test_other_domains_are_not_candidates() -> None:
    cand = torch.eye(3)
    batch, local = _batch([[0, 1]]), torch.tensor([[0, 1]])
    out = torch.stack([cand[2], cand[2]]).unsqueeze(0)  # points at item 2, another domain
    same = _next_item_loss(out, batch, local, cand, torch.tensor([0, 0, 0]), 0.1)
    masked = _next_item_loss(out, batch, local, cand, torch.tensor([0, 0, 1]), 0.1)
    assert masked < same


def test_orthogonality_loss() -> None:
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert float(_orth_loss(x, x)) == pytest.approx(1.0)
    assert float(_orth_loss(x, x.flip(1))) == pytest.approx(0.0)
    assert float(_orth_loss(x, torch.zeros_like(x))) == pytest.approx(0.0)  # no residual


def test_alignment_loss_rewards_aligned_cross_domain_pairs() -> None:
    # 4 users, each one grocery item (rows 0..3) then one kitchen item (rows 4..7)
    batch = _batch([[0, 4], [1, 5], [2, 6], [3, 7]])
    local = batch.rows.clone()
    dom = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    base = torch.eye(4)
    aligned = torch.cat([base, base])  # each user's two items point the same way
    shuffled = torch.cat([base, base[[1, 2, 3, 0]]])
    gen = torch.Generator().manual_seed(0)
    la = _align_loss(aligned, batch, local, dom, 0.1, gen)
    ls = _align_loss(shuffled, batch, local, dom, 0.1, gen)
    assert la < 0.01 and ls > 5


def test_inclusion_probabilities() -> None:
    seqs = [np.array([0, 0, 0, 0, 1]), np.array([0, 2])]
    data = TrainInputs(torch.zeros(6, 2), torch.tensor([0, 0, 0, 1, 1, 1]),
                       torch.ones(6, dtype=torch.bool), seqs, 2)
    negs = _Negatives(data, 2, logq=True)
    lq = negs.log_q(torch.arange(6), batch_events=3).numpy()
    assert lq[0] > lq[1] > lq[3]  # popular > seen once > never seen (uniform only)
    assert np.all(lq <= 0)
    assert _Negatives(data, 2, logq=False).log_q(torch.arange(6), 3) is None


def _old_dense(ids: np.ndarray, weights: np.ndarray, k: int) -> np.ndarray:
    """What the composer used to train on: the whole [N,K] item->intent matrix."""
    out = np.zeros((len(ids), k), np.float32)
    np.put_along_axis(out, ids, weights, axis=1)
    return out


def test_sparse_item_intents_equal_the_old_dense_matrix() -> None:
    """A batch's [B,L,K] intent weights built from ids + weights are exactly the rows of the
    old dense N x K matrix, and the composer's training output is bit for bit the same."""
    rng = np.random.default_rng(0)
    n, k, m = 40, 6, 3
    ids = np.stack([rng.choice(k, m, replace=False) for _ in range(n)]).astype(np.int64)
    w = rng.dirichlet(np.ones(m), n).astype(np.float32)
    sparse, dense = ItemIntents.from_arrays(ids, w, k), torch.from_numpy(_old_dense(ids, w, k))
    rows = torch.from_numpy(rng.integers(0, n, (4, 7)))
    assert torch.equal(sparse.rows(rows), dense[rows])
    c = _composer(prior=False)
    vec = torch.nn.functional.normalize(torch.randn(n, 8), dim=-1)
    dom, mask = torch.from_numpy(rng.integers(0, 2, n)), torch.ones(4, 7, dtype=torch.bool)
    with torch.no_grad():
        old = c.causal(vec[rows], dom[rows], mask, dom[rows], dense[rows])
        new = c.causal(vec[rows], dom[rows], mask, dom[rows], sparse.rows(rows))
    assert torch.equal(old, new)
