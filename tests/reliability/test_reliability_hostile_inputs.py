"""Hostile CSV and Parquet inputs to the data loader (issue 7, item 7).

Every case is either legitimate, and then the loaded values are checked, or hostile, and then
``load_dataset`` must raise a ``DataValidationError`` (an ``InvalidArgument``) whose message
names the file, and the row and the field where they exist: never a raw pyarrow, pandas or
numpy exception, a crash, a hang or silently wrong data.

Decisions a user may look up here:

- ids: integers, whole floats up to 2**53 (pandas writes an int column with a gap as floats),
  or text holding an integer; never negative (the search index returns -1 for "no result"),
  never booleans, never beyond int64. A NaN id is a missing id.
- text fields and ``domain``: one value per row; a list or struct column is refused (it would
  become the text "['a', 'b']"); binary is read as UTF-8 text and refused, naming the row,
  where it is not; dictionary-encoded text is ordinary text.
- a 1 MB title loads whole, in CSV and Parquet: the loader keeps the user's data as written;
  the encoder truncates to its ``max_length`` tokens.
- ``ts``/``position``: numbers, text that reads as a number, timestamps or dates; null, NaN
  or other text is refused naming the row.
- extra columns are kept (items) or ignored (events); an events file with no rows loads
  (nothing to train on is the build's call), an items file with no rows is refused.
- CSV: a UTF-8 BOM and CRLF line endings are ordinary, and so are rows longer than the
  reader's 1 MiB block and quoted values spanning lines in files over a block; a quote left
  open (which would swallow the rest of the file into one title) is refused naming the row
  where it opens.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from xemb.embedders.data import Dataset, load_dataset
from xemb.errors import DataValidationError, InvalidArgument
from xemb.settings.offline import DataConfig

pytestmark = pytest.mark.reliability

TITLES = ["Green tea", "Dark chocolate", "Tea kettle"]
ITEMS = {"item_id": [1, 2, 3], "domain": ["grocery", "grocery", "kitchen"], "title": TITLES}
EVENTS = {"user_id": ["u1", "u1", "u2", "u2"], "item_id": [1, 3, 2, 1], "position": [0, 1, 0, 1]}
ITEMS_CSV = "item_id,domain,title\n1,grocery,Green tea\n2,grocery,Dark chocolate\n" \
            "3,kitchen,Tea kettle\n"
EVENTS_CSV = "user_id,item_id,position\nu1,1,0\nu1,3,1\nu2,2,0\nu2,1,1\n"
BIG = "x" * 1_000_000
HUGE = "y" * (3 << 20)  # longer than the CSV reader's 1 MiB block

Source: TypeAlias = "dict | pa.Table | bytes | str"  # dict or Table: written as Parquet


@dataclass
class Case:
    id: str
    fmt: str  # "parquet" or "csv": the extension of both files
    items: Source | None = None  # None: ITEMS (Parquet) or ITEMS_CSV
    events: Source | None = None
    error: str | None = None  # hostile: a regex the message must match
    check: Callable[[Dataset], None] | None = None  # legitimate: the loaded values

    def __post_init__(self) -> None:
        if self.items is None:
            self.items = ITEMS if self.fmt == "parquet" else ITEMS_CSV
        if self.events is None:
            self.events = EVENTS if self.fmt == "parquet" else EVENTS_CSV


def _with(base: dict, **cols: object) -> dict:
    return {**base, **cols}


def _parquet_bytes(table: dict | pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table if isinstance(table, pa.Table) else pa.table(table), sink)
    return sink.getvalue().to_pybytes()


def _write(path: Path, source: Source) -> Path:
    if isinstance(source, (dict, pa.Table)):
        path.write_bytes(_parquet_bytes(source))
    elif isinstance(source, bytes):
        path.write_bytes(source)
    else:
        path.write_text(source, encoding="utf-8", newline="")
    return path


def _binary(values: list[bytes]) -> pa.Array:
    return pa.array(values, pa.binary())


def _sequences(ds: Dataset) -> dict[str, list[int]]:
    return {u: ds.item_ids[rows].tolist() for u, rows in ds.sequences["train"]}


def _default(ds: Dataset) -> None:
    """What ITEMS and EVENTS (in either format) must load as."""
    assert ds.item_ids.tolist() == [1, 2, 3]
    assert ds.domains == ["grocery", "kitchen"]
    assert ds.item_domain.tolist() == [0, 0, 1]
    assert ds.texts == TITLES
    assert _sequences(ds) == {"u1": [1, 3], "u2": [2, 1]}


def _texts(*texts: str) -> Callable[[Dataset], None]:
    def check(ds: Dataset) -> None:
        assert ds.texts == list(texts)
        assert ds.item_ids.tolist() == [1, 2, 3]
    return check


def _no_events(ds: Dataset) -> None:
    assert ds.item_ids.tolist() == [1, 2, 3]
    assert all(not seqs for seqs in ds.sequences.values())


def _ordered_by_ts(ds: Dataset) -> None:
    assert _sequences(ds) == {"u1": [3, 1], "u2": [1, 2]}


def _extra_columns(ds: Dataset) -> None:
    _default(ds)
    assert ds.items.column("price").to_pylist() == [1.5, 2.0, 3.25]
    assert ds.items.column("tags").to_pylist() == [["a"], [], ["b", "c"]]


def _dictionary(ds: Dataset) -> None:
    _default(ds)
    assert ds.items.column("domain").to_pylist() == ["grocery", "grocery", "kitchen"]


def _long_title(ds: Dataset) -> None:
    assert ds.texts[1] == BIG  # whole: the encoder, not the loader, truncates
    assert ds.texts[0] == "Green tea" and ds.texts[2] == "Tea kettle"
    assert _sequences(ds) == {"u1": [1, 3], "u2": [2, 1]}


def _huge_title(ds: Dataset) -> None:
    assert ds.texts == ["Green tea", HUGE, "Tea kettle"]


def _bom_crlf(ds: Dataset) -> None:
    _default(ds)
    assert ds.items.column("domain").to_pylist() == ["grocery", "grocery", "kitchen"]  # no \r
    assert [u for u, _ in ds.sequences["train"]] == ["u1", "u2"]


def _multiline(n: int) -> Callable[[Dataset], None]:
    def check(ds: Dataset) -> None:
        assert len(ds.texts) == n
        assert ds.texts[0] == "line a 1\nline b 1" and ds.texts[-1] == f"line a {n}\nline b {n}"
    return check


def _random_bytes(n: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(n)


GOOD_PARQUET = _parquet_bytes(ITEMS)
BAD_UTF8 = _binary([b"Green tea", b"Caf\xe9 press", b"Tea kettle"])
LARGE_BAD_UTF8 = pa.Array.from_buffers(pa.large_string(), 3, [  # "tea", b"\xff\xfea", "pot"
    None, pa.py_buffer(np.array([0, 3, 6, 9], np.int64).tobytes()),
    pa.py_buffer(b"tea\xff\xfeapot")])
DICT_DOMAIN = pa.array(["grocery", "grocery", "kitchen"]).dictionary_encode()
MULTILINE_ROWS = 40_000  # a CSV over 1 MiB whose titles span lines

PARQUET_CASES = [
    # not Parquet at all
    Case("random-bytes", "parquet", items=_random_bytes(4096),
         error=r"items\.parquet: unreadable Parquet"),
    Case("empty-file", "parquet", items=b"", error=r"items\.parquet: unreadable Parquet"),
    Case("truncated", "parquet", items=GOOD_PARQUET[: len(GOOD_PARQUET) // 2],
         error=r"items\.parquet: unreadable Parquet"),
    Case("truncated-footer", "parquet", items=GOOD_PARQUET[:-3],
         error=r"items\.parquet: unreadable Parquet"),
    Case("footer-length-beyond-file", "parquet",
         items=b"PAR1" + b"\0" * 16 + (2**31 - 1).to_bytes(4, "little") + b"PAR1",
         error=r"items\.parquet: unreadable Parquet"),
    Case("csv-named-parquet", "parquet", items=ITEMS_CSV.encode(),
         error=r"items\.parquet: unreadable Parquet"),
    Case("events-random-bytes", "parquet", events=_random_bytes(100),
         error=r"events\.parquet: unreadable Parquet"),
    # item_id of the wrong type
    Case("id-text", "parquet", items=_with(ITEMS, item_id=["1", "x2", "3"]),
         error=r"items\.parquet, row 2, field 'item_id': ids must be integers: 'x2'"),
    Case("id-integer-text", "parquet", items=_with(ITEMS, item_id=["1", "2", "3"]),
         check=_default),
    Case("id-float-fraction", "parquet", items=_with(ITEMS, item_id=[1.0, 2.5, 3.0]),
         error=r"items\.parquet, row 2, field 'item_id': ids must be integers: 2\.5"),
    Case("id-float-whole", "parquet", items=_with(ITEMS, item_id=[1.0, 2.0, 3.0]),
         check=_default),
    Case("id-float-nan", "parquet", items=_with(ITEMS, item_id=[1.0, float("nan"), 3.0]),
         error=r"items\.parquet, row 2, field 'item_id': missing id"),
    Case("id-float-inf", "parquet", items=_with(ITEMS, item_id=[1.0, 2.0, float("inf")]),
         error=r"items\.parquet, row 3, field 'item_id': ids must be integers: inf"),
    Case("id-float-beyond-2**53", "parquet", items=_with(ITEMS, item_id=[1.0, 2.0**60, 3.0]),
         error=r"items\.parquet, row 2, field 'item_id': ids must be integers: .*2\*\*53"),
    Case("id-null", "parquet", items=_with(ITEMS, item_id=[1, None, 3]),
         error=r"items\.parquet, row 2, field 'item_id': missing id"),
    Case("id-negative", "parquet", items=_with(ITEMS, item_id=[1, -2, 3]),
         error=r"items\.parquet, row 2, field 'item_id': ids must not be negative: -2"),
    Case("id-beyond-int64", "parquet",
         items=_with(ITEMS, item_id=pa.array([1, 2, 2**63], pa.uint64())),
         error=r"items\.parquet, row 3, field 'item_id': ids must be integers: "
               r"9223372036854775808"),
    Case("id-uint64-in-range", "parquet",
         items=_with(ITEMS, item_id=pa.array([1, 2, 3], pa.uint64())), check=_default),
    Case("id-bool", "parquet", items=_with(ITEMS, item_id=[True, False, True]),
         error=r"items\.parquet, field 'item_id': ids must be integers, got a bool column"),
    Case("id-list", "parquet", items=_with(ITEMS, item_id=[[1], [2], [3]]),
         error=r"items\.parquet, field 'item_id': one value per row expected, got list"),
    Case("id-dictionary", "parquet",
         items=_with(ITEMS, item_id=pa.array([1, 2, 3]).dictionary_encode()), check=_default),
    Case("events-id-text", "parquet", events=_with(EVENTS, item_id=["1", "3", "two", "1"]),
         error=r"events\.parquet, row 3, field 'item_id': ids must be integers: 'two'"),
    Case("events-id-null", "parquet", events=_with(EVENTS, item_id=[1, None, 2, 1]),
         error=r"events\.parquet, row 2, field 'item_id': missing id"),
    # nested where one value is expected
    Case("title-list", "parquet", items=_with(ITEMS, title=[["Green", "tea"], ["x"], ["y"]]),
         error=r"items\.parquet, field 'title': one value per row expected, got list"),
    Case("domain-struct", "parquet",
         items=_with(ITEMS, domain=[{"name": "grocery"}, {"name": "grocery"}, {"name": "k"}]),
         error=r"items\.parquet, field 'domain': one value per row expected, got struct"),
    Case("user-list", "parquet", events=_with(EVENTS, user_id=[["u1"], ["u1"], ["u2"], ["u2"]]),
         error=r"events\.parquet, field 'user_id': one value per row expected, got list"),
    # bytes that are not UTF-8
    Case("title-binary-invalid-utf8", "parquet", items=_with(ITEMS, title=BAD_UTF8),
         error=r"items\.parquet, row 2, field 'title': not valid UTF-8: b'Caf\\xe9 press'"),
    Case("title-binary-utf8", "parquet",
         items=_with(ITEMS, title=_binary([t.encode() for t in TITLES])), check=_default),
    Case("title-dictionary-invalid-utf8", "parquet", items=_with(ITEMS, title=pa.DictionaryArray
         .from_arrays(pa.array([0, 1, 2], pa.int32()), LARGE_BAD_UTF8.cast(pa.string()))),
         error=r"items\.parquet, field 'title': not valid UTF-8"),
    Case("title-large-string-invalid-utf8", "parquet", items=_with(ITEMS, title=LARGE_BAD_UTF8),
         error=r"items\.parquet, field 'title': not valid UTF-8"),
    # nulls
    Case("domain-null", "parquet", items=_with(ITEMS, domain=["grocery", None, "kitchen"]),
         error=r"items\.parquet, row 2, field 'domain': missing domain"),
    Case("user-null", "parquet", events=_with(EVENTS, user_id=["u1", "u1", None, "u2"]),
         error=r"events\.parquet, row 3, field 'user_id': missing user_id"),
    Case("title-null", "parquet", items=_with(ITEMS, title=["Green tea", None, "Tea kettle"]),
         error=r"items\.parquet, row 2, field 'title': empty text"),
    # duplicate column names
    Case("duplicate-column", "parquet", items=pa.Table.from_arrays(
        [pa.array(v) for v in ITEMS.values()] + [pa.array([4, 5, 6])],
        names=[*ITEMS, "item_id"]),
         error=r"items\.parquet, field 'item_id': duplicate column"),
    # zero rows
    Case("items-empty", "parquet", items=pa.table({k: pa.array([], t) for k, t in (
        ("item_id", pa.int64()), ("domain", pa.string()), ("title", pa.string()))}),
         error=r"items\.parquet: no items"),
    Case("events-empty", "parquet", events=pa.table({k: pa.array([], t) for k, t in (
        ("user_id", pa.string()), ("item_id", pa.int64()), ("position", pa.int64()))}),
         check=_no_events),
    Case("events-empty-null-typed", "parquet", events=pa.table(
        {k: pa.array([], pa.null()) for k in EVENTS}), check=_no_events),
    Case("events-unknown-item", "parquet", events=_with(EVENTS, item_id=[1, 3, 99, 1]),
         error=r"events\.parquet, row 3, field 'item_id': unknown item_id 99"),
    # order columns
    Case("position-null", "parquet", events=_with(EVENTS, position=[0, None, 0, 1]),
         error=r"events\.parquet, row 2, field 'position': missing position"),
    Case("position-nan", "parquet", events=_with(EVENTS, position=[0.0, 1.0, float("nan"), 1.0]),
         error=r"events\.parquet, row 3, field 'position': missing position"),
    Case("position-text", "parquet", events=_with(EVENTS, position=["0", "1", "first", "1"]),
         error=r"events\.parquet, row 3, field 'position': not a number: 'first'"),
    Case("position-numeric-text", "parquet", events=_with(EVENTS, position=["0", "1", "0", "1"]),
         check=_default),
    Case("position-bool", "parquet", events=_with(EVENTS, position=[False, True, False, True]),
         error=r"events\.parquet, field 'position': must be numbers or timestamps, got a bool"),
    Case("ts-null", "parquet", events={**EVENTS, "ts": [5, 6, None, 8]},
         error=r"events\.parquet, row 3, field 'ts': missing ts"),
    Case("ts-text", "parquet", events={**EVENTS, "ts": ["5", "6", "7", "yesterday"]},
         error=r"events\.parquet, row 4, field 'ts': not a number: 'yesterday'"),
    Case("ts-timestamp", "parquet", events={**EVENTS, "ts": pa.array(
        np.array(["2024-01-02", "2024-01-01", "2024-03-01", "2024-02-01"], "datetime64[ms]"))},
         check=_ordered_by_ts),
    # legitimate shapes
    Case("dictionary-encoded-text", "parquet",
         items=_with(ITEMS, domain=DICT_DOMAIN, title=pa.array(TITLES).dictionary_encode()),
         events=_with(EVENTS, user_id=pa.array(EVENTS["user_id"]).dictionary_encode()),
         check=_dictionary),
    Case("extra-columns", "parquet",
         items={**ITEMS, "price": [1.5, 2.0, 3.25], "tags": [["a"], [], ["b", "c"]]},
         events={**EVENTS, "session": [{"a": 1}] * 4, "weight": [0.5] * 4},
         check=_extra_columns),
    Case("title-1mb", "parquet", items=_with(ITEMS, title=["Green tea", BIG, "Tea kettle"]),
         check=_long_title),
]

CSV_CASES = [
    Case("empty-file", "csv", items="", error=r"items\.csv: unreadable CSV"),
    Case("random-bytes", "csv", items=_random_bytes(4096),
         error=r"items\.csv: not valid UTF-8 text in the header"),  # not "row 0", as before
    Case("parquet-named-csv", "csv", items=GOOD_PARQUET,
         error=r"items\.csv, row 1: not valid UTF-8 text"),
    Case("latin1-title", "csv", items=ITEMS_CSV.replace("Tea kettle", "Caf\xe9 press").encode(
        "latin-1"), error=r"items\.csv, row 3: not valid UTF-8 text"),
    Case("id-text", "csv", items=ITEMS_CSV.replace("2,grocery", "x2,grocery"),
         error=r"items\.csv, row 2, field 'item_id': ids must be integers: 'x2'"),
    Case("id-float-fraction", "csv", items=ITEMS_CSV.replace("2,grocery", "2.5,grocery"),
         error=r"items\.csv, row 2, field 'item_id': ids must be integers: 2\.5"),
    Case("id-float-whole", "csv", items=ITEMS_CSV.replace("2,grocery", "2.0,grocery"),
         check=_default),
    Case("id-negative", "csv", items=ITEMS_CSV.replace("2,grocery", "-2,grocery"),
         error=r"items\.csv, row 2, field 'item_id': ids must not be negative: -2"),
    Case("id-beyond-int64", "csv",
         items=ITEMS_CSV.replace("3,kitchen", "9223372036854775808,kitchen"),
         error=r"items\.csv, row 3, field 'item_id': ids must be integers: .*2\*\*53"),
    Case("id-bool", "csv", items="item_id,domain,title\ntrue,grocery,a\nfalse,kitchen,b\n",
         error=r"items\.csv, field 'item_id': ids must be integers, got a bool column"),
    Case("id-missing", "csv", items=ITEMS_CSV.replace("2,grocery", ",grocery"),
         error=r"items\.csv, row 2, field 'item_id': missing id"),
    Case("domain-empty", "csv", items=ITEMS_CSV.replace("2,grocery", "2,"),
         error=r"items\.csv, row 2, field 'domain': missing domain"),
    Case("user-empty", "csv", events=EVENTS_CSV.replace("u2,2,0", ",2,0"),
         error=r"events\.csv, row 3, field 'user_id': missing user_id"),
    Case("duplicate-column", "csv", items="item_id,domain,title,title\n1,grocery,a,b\n",
         error=r"items\.csv, field 'title': duplicate column"),
    Case("items-header-only", "csv", items="item_id,domain,title\n",
         error=r"items\.csv: no items"),
    Case("events-header-only", "csv", events="user_id,item_id,position\n", check=_no_events),
    Case("events-unknown-item", "csv", events=EVENTS_CSV.replace("u2,2,0", "u2,99,0"),
         error=r"events\.csv, row 3, field 'item_id': unknown item_id 99"),
    Case("position-text", "csv", events=EVENTS_CSV.replace("u2,2,0", "u2,2,first"),
         error=r"events\.csv, row 3, field 'position': not a number: 'first'"),
    Case("position-empty", "csv", events=EVENTS_CSV.replace("u2,2,0", "u2,2,"),
         error=r"events\.csv, row 3, field 'position': missing position"),
    Case("position-nan", "csv", events=EVENTS_CSV.replace("u2,2,0", "u2,2,NaN"),
         error=r"events\.csv, row 3, field 'position': missing position"),
    Case("ts-iso-timestamps", "csv", events="user_id,item_id,ts\nu1,1,2024-01-02T00:00:00\n"
         "u1,3,2024-01-01T00:00:00\nu2,2,2024-03-01T00:00:00\nu2,1,2024-02-01T00:00:00\n",
         check=_ordered_by_ts),
    Case("bom-crlf", "csv", items=("\ufeffitem_id,title,domain\r\n1,Green tea,grocery\r\n"
                                   "2,Dark chocolate,grocery\r\n3,Tea kettle,kitchen\r\n"),
         events="\ufeffitem_id,position,user_id\r\n1,0,u1\r\n3,1,u1\r\n2,0,u2\r\n1,1,u2\r\n",
         check=_bom_crlf),
    Case("crlf", "csv", items=ITEMS_CSV.replace("\n", "\r\n"),
         events=EVENTS_CSV.replace("\n", "\r\n"), check=_bom_crlf),
    Case("extra-columns", "csv", items="item_id,domain,title,colour\n1,grocery,Green tea,green"
         "\n2,grocery,Dark chocolate,\n3,kitchen,Tea kettle,steel\n",
         events="user_id,item_id,position,device\nu1,1,0,phone\nu1,3,1,\nu2,2,0,tv\n"
         "u2,1,1,tv\n", check=_default),
    Case("title-1mb", "csv", items=ITEMS_CSV.replace("Dark chocolate", BIG), check=_long_title),
    Case("title-over-a-read-block", "csv", items=ITEMS_CSV.replace("Dark chocolate", HUGE),
         check=_huge_title),
    Case("multiline-titles-over-1mib", "csv", items="item_id,domain,title\n" + "".join(
        f'{i},{"grocery" if i % 2 else "kitchen"},"line a {i}\nline b {i}"\n'
        for i in range(1, MULTILINE_ROWS + 1)), events="user_id,item_id,position\n",
         check=_multiline(MULTILINE_ROWS)),
    Case("title-1mb-multiline-last-row", "csv",  # over the csv module's default field limit
         items=ITEMS_CSV.replace("Tea kettle", f'"{BIG}\n{BIG}"'),
         check=_texts("Green tea", "Dark chocolate", f"{BIG}\n{BIG}")),
    Case("quote-left-open", "csv",
         items=ITEMS_CSV.replace("Dark chocolate", '"Dark chocolate'),
         error=r"items\.csv, row 2: malformed CSV .*quote left open"),
    Case("ragged-row", "csv", events=EVENTS_CSV.replace("u2,2,0", "u2,2,0,oops"),
         error=r"events\.csv: unreadable CSV"),
]


def _config(tmp_path: Path, case: Case) -> DataConfig:
    items = _write(tmp_path / f"items.{case.fmt}", case.items)
    events = _write(tmp_path / f"events.{case.fmt}", case.events)
    return DataConfig(format="tables", items=items, events=events)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", PARQUET_CASES + CSV_CASES,
                         ids=[f"{c.fmt}-{c.id}" for c in PARQUET_CASES + CSV_CASES])
def test_hostile_input(tmp_path: Path, case: Case) -> None:
    cfg = _config(tmp_path, case)
    if case.error is None:
        assert case.check is not None
        case.check(load_dataset(cfg))
        return
    with pytest.raises(InvalidArgument) as err:  # anything else fails here, with its traceback
        load_dataset(cfg)
    assert isinstance(err.value, DataValidationError), repr(err.value)  # every case has a file
    assert re.search(case.error, str(err.value)), str(err.value)


def test_every_case_is_decided() -> None:
    for case in PARQUET_CASES + CSV_CASES:
        assert (case.error is None) != (case.check is None), case.id
