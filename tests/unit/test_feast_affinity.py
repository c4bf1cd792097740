"""The request-time affinity math and its input checks (no Feast needed)."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from xemb.errors import FailedPrecondition, InvalidArgument
from xemb.feature_repo import affinity


def _batch(n: int = 32, dim: int = 24, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, dim)).astype(np.float32),
            rng.standard_normal((n, dim)).astype(np.float32))


def test_matches_numpy_to_1e6() -> None:
    items, users = _batch()
    out = affinity.affinity_columns([list(map(float, r)) for r in items], users.tolist())
    dot = np.einsum("ij,ij->i", items.astype(np.float64), users.astype(np.float64))
    cos = dot / (np.linalg.norm(items, axis=1) * np.linalg.norm(users, axis=1))
    np.testing.assert_allclose(out["affinity_dot"], dot, rtol=0, atol=1e-6)
    np.testing.assert_allclose(out["affinity_cosine"], cos, rtol=0, atol=1e-6)


def test_unknown_item_gives_none_and_zero_norm_gives_zero_cosine() -> None:
    out = affinity.affinity_columns([None, [0.0, 0.0]], [[1.0, 2.0], [3.0, 4.0]])
    assert out == {"affinity_dot": [None, 0.0], "affinity_cosine": [None, 0.0]}


@pytest.mark.parametrize(("vector", "message"), [
    ([1.0, 2.0], "expected 3 values"),
    ([1.0, float("nan"), 2.0], "NaN"),
    ([1.0, float("inf"), 2.0], "NaN or infinite"),
    (None, "missing"),
    ([[1.0, 2.0, 3.0]], "flat vector"),
    (["a", "b", "c"], "not a list of numbers"),
])
def test_bad_request_vectors_are_invalid_argument(vector: object, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message) as err:
        affinity.affinity_columns([[1.0, 2.0, 3.0]], [vector])
    assert err.value.field == "user_vector"
    assert "row 0" in str(err.value)


def test_row_count_mismatch() -> None:
    with pytest.raises(InvalidArgument, match="2 request vectors for 1 rows"):
        affinity.affinity_columns([[1.0]], [[1.0], [2.0]])


def test_full_feature_names_inputs_are_accepted() -> None:
    out = affinity.affinity_from_inputs({"item_embeddings__full": [[1.0, 0.0]],
                                         "user_vector": [[2.0, 0.0]],
                                         "item_embeddings__xemb_version": ["v1"],
                                         "user_vector_request__user_vector_version": ["v1"]})
    assert out == {"affinity_dot": [2.0], "affinity_cosine": [1.0]}


def test_user_vector_of_another_version_is_refused_naming_both() -> None:
    """Issue 7.1: an old-version user vector scored against new items gave cosine 0.02."""
    inputs = {"full": [[1.0, 0.0], None], "user_vector": [[1.0, 0.0], [1.0, 0.0]],
              "xemb_version": ["v2", None], "user_vector_version": ["v1", "v1"]}
    with pytest.raises(FailedPrecondition, match=r"row 0: .*version 'v1'.*version 'v2'"):
        affinity.affinity_from_inputs(inputs)
    inputs["xemb_version"] = ["v1", None]  # unknown items carry no version: not a mismatch
    assert affinity.affinity_from_inputs(inputs)["affinity_dot"] == [1.0, None]
    with pytest.raises(InvalidArgument, match="user_vector_version"):
        affinity.affinity_from_inputs({"full": [[1.0]], "user_vector": [[1.0]],
                                       "xemb_version": ["v1"]})


def test_udf_source_runs_in_a_bare_namespace() -> None:
    """Feast re-executes the UDF from its source text on readers; it must stand alone."""
    namespace: dict = {"__name__": "feast_udf_rehydrate"}
    exec(inspect.getsource(affinity.item_user_affinity), namespace)  # noqa: S102
    out = namespace["item_user_affinity"]({"full": [[3.0, 4.0]], "user_vector": [[3.0, 4.0]],
                                           "xemb_version": ["v1"],
                                           "user_vector_version": ["v1"]})
    assert out == {"affinity_dot": [25.0], "affinity_cosine": [1.0]}
