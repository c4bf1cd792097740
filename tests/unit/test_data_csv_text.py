"""The CSV reader never turns a text value into null or a number: a title ``nan`` is a real
product title. Empty or ``NA`` ids stay detectable as missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from xemb.embedders.data import load_dataset, read_table
from xemb.errors import DataValidationError
from xemb.settings.offline import DataConfig

TITLES = ["nan", "NA", "null", "N/A", "NaN", "NULL", "#N/A", "None", "-nan", "n/a", "",
          "007", "1e5", "true", "2020-01-01", "inf"]


def _csv(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_null_like_and_number_like_titles_stay_text(tmp_path: Path) -> None:
    rows = ["item_id,domain,title"] + [f"{i},g,{t}" for i, t in enumerate(TITLES, 1)]
    table = read_table(_csv(tmp_path / "items.csv", rows))
    assert table.column("title").null_count == 0
    assert table.column("title").to_pylist() == TITLES
    assert table.column("item_id").to_pylist() == list(range(1, len(TITLES) + 1))


def test_a_column_of_only_nan_titles_is_text_too(tmp_path: Path) -> None:
    table = read_table(_csv(tmp_path / "items.csv", ["item_id,domain,title", "1,g,nan",
                                                     "2,g,NaN", "3,NA,007"]))
    assert table.column("title").to_pylist() == ["nan", "NaN", "007"]
    assert table.column("domain").to_pylist() == ["g", "g", "NA"]


def test_quoted_text_with_delimiters_and_newlines(tmp_path: Path) -> None:
    rows = ['item_id,domain,title', '1,g,"salt, sea"', '2,g,"two\nlines"', '3,g,""""']
    assert read_table(_csv(tmp_path / "items.csv", rows)).column("title").to_pylist() == \
        ["salt, sea", "two\nlines", '"']


@pytest.mark.parametrize("cell", ["", "NA", "null", "nan"])
def test_missing_ids_are_still_reported_as_missing(tmp_path: Path, cell: str) -> None:
    items = _csv(tmp_path / "items.csv", ["item_id,domain,title", "1,g,tea", f"{cell},g,pan"])
    events = _csv(tmp_path / "events.csv", ["user_id,item_id,position", "u1,1,0"])
    with pytest.raises(DataValidationError, match="row 2, field 'item_id'") as err:
        load_dataset(DataConfig(format="tables", items=items, events=events))
    assert "missing id" in str(err.value) or "integers" in str(err.value)


def test_the_build_loader_keeps_a_nan_title(tmp_path: Path) -> None:
    items = _csv(tmp_path / "items.csv", ["item_id,domain,title", "1,grocery,nan",
                                          "2,grocery,NA", "3,kitchen,null", "4,kitchen,N/A"])
    events = _csv(tmp_path / "events.csv", ["user_id,item_id,position,split", "u1,1,0,train",
                                            "u1,3,1,train", "u2,2,0,valid", "u2,4,1,valid"])
    ds = load_dataset(DataConfig(format="tables", items=items, events=events,
                                 domains=["grocery", "kitchen"]))
    assert ds.texts == ["nan", "NA", "null", "N/A"]


def test_an_empty_title_is_still_refused_naming_the_row(tmp_path: Path) -> None:
    items = _csv(tmp_path / "items.csv", ["item_id,domain,title", "1,grocery,tea",
                                          "2,grocery,"])
    events = _csv(tmp_path / "events.csv", ["user_id,item_id,position", "u1,1,0"])
    with pytest.raises(DataValidationError, match="row 2.*empty text"):
        load_dataset(DataConfig(format="tables", items=items, events=events))
