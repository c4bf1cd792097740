"""Input contract: every bad input names its file, row and field."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from xemb.embedders.data import load_dataset
from xemb.errors import DataValidationError
from xemb.settings.offline import DataConfig

ITEMS = ("item_id,domain,title\n1,grocery,Green tea\n2,grocery,Dark chocolate\n"
         "3,kitchen,Tea kettle\n")
EVENTS = "user_id,item_id,position\nu1,1,0\nu1,3,1\nu2,2,0\nu2,1,1\n"


def _tables(tmp_path: Path, items: str = ITEMS, events: str = EVENTS, **kw) -> DataConfig:
    (tmp_path / "items.csv").write_text(items, encoding="utf-8")
    (tmp_path / "events.csv").write_text(events, encoding="utf-8")
    return DataConfig(format="tables", items=tmp_path / "items.csv",
                      events=tmp_path / "events.csv", **kw)


def test_reads_tables_format(tmp_path: Path) -> None:
    ds = load_dataset(_tables(tmp_path))
    assert ds.domains == ["grocery", "kitchen"]
    assert ds.item_ids.tolist() == [1, 2, 3]
    seqs = dict(ds.sequences["train"])
    assert ds.item_ids[seqs["u1"]].tolist() == [1, 3]
    assert ds.item_ids[seqs["u2"]].tolist() == [2, 1]


def test_events_are_ordered_by_timestamp(tmp_path: Path) -> None:
    events = "user_id,item_id,ts\nu1,3,20\nu1,1,10\n"
    ds = load_dataset(_tables(tmp_path, events=events))
    assert ds.item_ids[dict(ds.sequences["train"])["u1"]].tolist() == [1, 3]


def test_text_fields_are_joined(tmp_path: Path) -> None:
    items = "item_id,domain,title,brand\n1,grocery,Green tea,Acme\n2,kitchen,Kettle,\n"
    ds = load_dataset(_tables(tmp_path, items=items, events="user_id,item_id,position\n",
                              text_fields=["title", "brand"]))
    assert ds.texts == ["Green tea. Acme", "Kettle"]


@pytest.mark.parametrize(("items", "events", "kw", "expected"), [
    (ITEMS + "2,kitchen,Again\n", EVENTS, {}, r"items\.csv, row 4, field 'item_id': duplicate"),
    (ITEMS, EVENTS, {"domains": ["grocery"]}, r"row 3, field 'domain': unknown domain 'kitchen'"),
    (ITEMS, EVENTS, {"domains": ["grocery", "kitchen", "toys"]},
     r"field 'domain': domain 'toys' has no items"),
    (ITEMS, EVENTS + "u3,99,0\n", {}, r"events\.csv, row 5, field 'item_id': unknown item_id 99"),
    (ITEMS.replace("Dark chocolate", ""), EVENTS, {}, r"row 2, field 'title': empty text"),
    (ITEMS, "user_id,item_id\nu1,1\n", {}, r"field 'position': missing column"),
    (ITEMS.replace("item_id", "id"), EVENTS, {}, r"field 'item_id': missing column"),
    (ITEMS.replace("3,kitchen", "x3,kitchen"), EVENTS, {}, r"field 'item_id': ids must be"),
    (ITEMS, EVENTS.replace("u2,2,0", "u2,2,0,oops"), {}, r"events\.csv: unreadable CSV"),
])
def test_bad_inputs_name_file_row_field(tmp_path: Path, items: str, events: str, kw: dict,
                                        expected: str) -> None:
    with pytest.raises(DataValidationError, match=expected):
        load_dataset(_tables(tmp_path, items, events, **kw))


def test_non_utf8_names_the_row(tmp_path: Path) -> None:
    cfg = _tables(tmp_path)
    (tmp_path / "items.csv").write_bytes(ITEMS.encode() + b"4,kitchen,Caf\xe9 press\n")
    with pytest.raises(DataValidationError, match=r"items\.csv, row 4: not valid UTF-8"):
        load_dataset(cfg)


def test_non_utf8_parquet(tmp_path: Path) -> None:
    cfg = _tables(tmp_path)
    bad = pa.Array.from_buffers(pa.string(), 1, [None, pa.py_buffer(
        b"\x00\x00\x00\x00\x03\x00\x00\x00"), pa.py_buffer(b"\xff\xfea")])
    table = pa.table({"item_id": [1], "domain": ["grocery"], "title": bad})
    pq.write_table(table, tmp_path / "items.parquet")
    cfg = cfg.model_copy(update={"items": tmp_path / "items.parquet"})
    with pytest.raises(DataValidationError, match=r"items\.parquet, field 'title': not valid"):
        load_dataset(cfg)


def test_bad_split_value(tmp_path: Path) -> None:
    events = "user_id,item_id,position,split\nu1,1,0,train\nu2,2,0,holdout\n"
    with pytest.raises(DataValidationError, match=r"row 2, field 'split'"):
        load_dataset(_tables(tmp_path, events=events))


def test_missing_image_file(tmp_path: Path) -> None:
    items = "item_id,domain,title,image_path\n1,grocery,Tea,nope.png\n2,kitchen,Pot,\n"
    with pytest.raises(DataValidationError, match=r"row 1, field 'image_path': image not found"):
        load_dataset(_tables(tmp_path, items=items, events="user_id,item_id,position\n"))


def test_food_kitchen_reader_keeps_file_order(tmp_path: Path) -> None:
    (tmp_path / "items.csv").write_text(ITEMS)
    (tmp_path / "sequences.tsv").write_text(
        "split\tuser_id\titem_ids\ntrain\tg1\t1,2\ntest\tt2\t2,3\ntest\tt10\t1,3\n")
    ds = load_dataset(DataConfig(format="food-kitchen", path=tmp_path))
    assert [u for u, _ in ds.sequences["test"]] == ["t2", "t10"]
    assert ds.item_ids[ds.sequences["test"][1][1]].tolist() == [1, 3]


def test_bundled_example_loads() -> None:
    from xemb.settings import load_config

    repo = Path(__file__).resolve().parents[2]
    ds = load_dataset(load_config(repo / "examples/food-kitchen/xemb.yaml").data)
    assert len(ds.item_ids) == 36298
    assert {k: len(v) for k, v in ds.sequences.items()} == {"train": 51164, "valid": 960,
                                                             "test": 937}


def test_events_without_split_hold_out_valid_users() -> None:
    """A user's own data: the last event of a seeded sample of users becomes valid, and the
    training sequences never contain it."""
    import numpy as np

    from xemb.embedders.data import hold_out_valid

    train = [(f"u{i}", np.arange(i % 7 + 1) + 100 * i) for i in range(200)]
    seqs = {"train": train, "valid": [], "test": []}
    out = hold_out_valid(seqs, n_users=25, seed=3)
    assert len(out["valid"]) == 25
    kept = dict(out["train"])
    for user, full in out["valid"]:
        assert len(full) >= 3
        np.testing.assert_array_equal(kept[user], full[:-1])  # target not trained on
    untouched = [u for u, _ in train if u not in dict(out["valid"])]
    assert all(len(kept[u]) == len(dict(train)[u]) for u in untouched)
    again = hold_out_valid(seqs, n_users=25, seed=3)
    assert [u for u, _ in again["valid"]] == [u for u, _ in out["valid"]]
    other = hold_out_valid(seqs, n_users=25, seed=4)["valid"]
    assert [u for u, _ in other] != [u for u, _ in out["valid"]]
    # too few users to hold out any: unchanged, the build trains without selection
    tiny = {"train": train[:4], "valid": [], "test": []}
    assert hold_out_valid(tiny, 25, 0)["valid"] == []
