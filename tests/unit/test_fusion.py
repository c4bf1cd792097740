"""describe.use: separate: the adapter's description fusion on small constructed cases (a
missing description is the title-only path, exactly; present ones count; training masks out
whole items' descriptions)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the offline extra")

from xemb.embedders.models import Adapter  # noqa: E402
from xemb.embedders.train import TrainInputs, _descriptions  # noqa: E402

S, B = 16, 6


def _adapters(wake: bool = True) -> tuple[Adapter, Adapter]:
    """A fusing adapter and a title-only one with the same other weights."""
    torch.manual_seed(0)
    fused = Adapter(S, 8, 32, 2, n_items=B, dropout=0.0, prior=True, n_descriptions=2).eval()
    if wake:  # the maps start at 0; give them something to say
        with torch.no_grad():
            for m in fused.fusion.maps:  # type: ignore[union-attr]
                m.weight.normal_(0, 0.3)
                m.bias.normal_(0, 0.1)
    plain = Adapter(S, 8, 32, 2, n_items=B, dropout=0.0, prior=True).eval()
    plain.load_state_dict({k: v for k, v in fused.state_dict().items()
                           if not k.startswith("fusion.")})
    return fused, plain


def _inputs() -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(1)
    sem = torch.nn.functional.normalize(torch.randn(B, S, generator=g), dim=-1)
    return (sem, torch.tensor([0, 1, 0, 1, 0, 1]), torch.arange(B),
            torch.tensor([True, False, True, False, True, False]))


def test_missing_descriptions_are_exactly_the_title_only_path() -> None:
    fused, plain = _adapters()
    args = _inputs()
    junk = torch.randn(B, 2, S) * 5
    with torch.no_grad():
        masked = fused.items(*args, junk, torch.zeros(B, 2))
        absent = fused.items(*args)
        title_only = plain.items(*args)
    for m, a, t in zip(masked, absent, title_only):
        assert torch.equal(m, a) and torch.equal(m, t)


def test_fusion_starts_as_the_title_only_adapter() -> None:
    fused, plain = _adapters(wake=False)  # as constructed: maps at 0
    args = _inputs()
    with torch.no_grad():
        got = fused.items(*args, torch.randn(B, 2, S), torch.ones(B, 2))
        want = plain.items(*args)
    for g, w in zip(got, want):
        assert torch.equal(g, w)


def test_a_present_description_changes_the_vector_a_masked_one_does_not() -> None:
    fused, _ = _adapters()
    args = _inputs()
    desc = torch.nn.functional.normalize(torch.randn(B, 2, S), dim=-1)
    other = desc.clone()
    other[:, 0] = torch.nn.functional.normalize(torch.randn(B, S), dim=-1)
    with torch.no_grad():
        base = fused.items(*args, desc, torch.ones(B, 2))[0]
        changed = fused.items(*args, other, torch.ones(B, 2))[0]
        only_second = fused.items(*args, desc, torch.tensor([[0.0, 1.0]] * B))[0]
        only_second_changed = fused.items(*args, other, torch.tensor([[0.0, 1.0]] * B))[0]
        none = fused.items(*args)[0]
    assert (changed - base).abs().max() > 1e-3
    assert torch.equal(only_second, only_second_changed)  # description 0 is masked out
    assert (only_second - none).abs().max() > 1e-3  # description 1 still counts


def _data(n: int, with_descriptions: bool = True) -> TrainInputs:
    mask = torch.ones(n, 2)
    mask[::4, 1] = 0.0  # some items lack their second description
    return TrainInputs(torch.zeros(n, S), torch.zeros(n, dtype=torch.int64),
                       torch.zeros(n, dtype=torch.bool), [], 1,
                       *((torch.randn(n, 2, S), mask) if with_descriptions else ()))


def test_description_dropout_masks_out_whole_items() -> None:
    data = _data(4000)
    rows = torch.arange(4000)
    vectors, mask = _descriptions(data, rows, 0.3, torch.Generator().manual_seed(0))
    assert vectors is not None and mask is not None
    assert torch.equal(vectors, data.descriptions)
    dropped = (mask == 0).all(1)
    assert 0.27 < float(dropped.float().mean()) < 0.33
    assert torch.equal(mask[~dropped], data.description_mask[~dropped])  # kept as they were
    _, kept = _descriptions(data, rows, 0.0, torch.Generator().manual_seed(0))
    assert torch.equal(kept, data.description_mask)  # type: ignore[arg-type]
    assert _descriptions(_data(8, False), torch.arange(8), 0.3, torch.Generator()) == (None,
                                                                                       None)
    assert _data(8).n_descriptions == 2 and _data(8, False).n_descriptions == 0


def test_train_inputs_carry_the_descriptions_to_the_device() -> None:
    data = _data(8).to("cpu")
    assert data.descriptions is not None and data.description_mask is not None
    assert np.array_equal(data.description_mask.numpy()[::4, 1], np.zeros(2))
