"""Entity rows and request vectors a ranking model can get wrong: each is InvalidArgument
naming the field (no ValueError, TypeError or IndexError from inside Feast, no wrong number)."""

from __future__ import annotations

import numpy as np
import pytest
from feast.value_type import ValueType

from xemb.errors import InvalidArgument
from xemb.feature_repo import affinity
from xemb.feature_repo.entities import check_entity_rows

TYPES = {"item_id": ValueType.INT64, "user_id": ValueType.STRING,
         "target_domain": ValueType.STRING}
GOOD = {"item_id": 7, "user_id": "u1", "target_domain": "food", "user_vector": [0.5] * 4}


def _bad(rows, field: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message) as err:
        check_entity_rows(TYPES, rows)
    assert err.value.field == field


@pytest.mark.parametrize("item_id", [2**63, 2**70, -(2**63) - 1])
def test_ids_outside_int64_are_refused(item_id):
    _bad([dict(GOOD, item_id=item_id)], "item_id", "row 0: outside the int64 range")
    _bad({k: [v] for k, v in dict(GOOD, item_id=item_id).items()}, "item_id", "int64 range")


def test_int64_limits_themselves_pass():
    check_entity_rows(TYPES, [dict(GOOD, item_id=2**63 - 1), dict(GOOD, item_id=-(2**63))])
    check_entity_rows(TYPES, [dict(GOOD, item_id=np.int64(5))])


@pytest.mark.parametrize("value", [[], "12", 1.5, True, None, {"a": 1}])
def test_ids_of_the_wrong_type_are_refused(value):
    _bad([GOOD, dict(GOOD, item_id=value)], "item_id", "row 1: expected an integer")


@pytest.mark.parametrize("rows", [[], {}, {"item_id": []}, None, "item_id", 5, [GOOD, 3]])
def test_no_rows_or_no_list_of_rows_is_refused(rows):
    _bad(rows, "entity_rows", "no rows|expected")


def test_rows_with_different_keys_are_refused():
    _bad([GOOD, {"item_id": 8}], "entity_rows", "row 1: keys")


def test_columns_of_different_lengths_are_refused():
    _bad({"item_id": [1, 2], "user_id": ["u1"]}, "entity_rows", "different lengths")


@pytest.mark.parametrize(("vector", "message"), [([], "row 0: empty vector"),
                                                 (3.0, "expected a list of numbers"),
                                                 ("0.5", "expected a list of numbers")])
def test_empty_or_scalar_request_vectors_are_refused(vector, message):
    _bad([dict(GOOD, user_vector=vector)], "user_vector", message)


def test_good_rows_pass_in_both_shapes():
    check_entity_rows(TYPES, [GOOD, dict(GOOD, item_id=8)])
    check_entity_rows(TYPES, {k: [v, v] for k, v in GOOD.items()})


@pytest.mark.parametrize("value", [1e200, -1e39, 3.5e38])
def test_request_vector_beyond_float32_is_refused_not_a_wrong_cosine(value):
    with pytest.raises(InvalidArgument, match="row 1: values beyond the float32 range") as err:
        affinity.affinity_columns([[1.0] * 4, [1.0] * 4], [[0.5] * 4, [value] * 4])
    assert err.value.field == "user_vector"


def test_largest_float32_request_vector_still_scores_exactly():
    big = float(np.finfo(np.float32).max)
    out = affinity.affinity_columns([[1.0, 0.0]], [[big, big]])
    assert out["affinity_cosine"] == [pytest.approx(2 ** -0.5)]
    assert np.isfinite(out["affinity_dot"][0])


@pytest.mark.parametrize(("key", "value", "message"), [
    ("user_vector_version", [], "expected a string"),
    ("user_vector_version", 5, "expected a string"),
    ("row_id", [], "empty list"),
    ("row_id", {}, "empty dict"),
])
def test_request_and_extra_fields_feast_cannot_type_are_refused(key, value, message):
    _bad([dict(GOOD, **{key: value})], key, message)


def test_a_row_without_keys_is_refused():
    _bad([{}], "entity_rows", "row 0: no keys")
