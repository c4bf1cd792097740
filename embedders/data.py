"""Input contract: an items table and behaviour events, read from Parquet or CSV and validated.

Items: ``item_id`` (integer), ``domain``, the configured text fields, optional ``image_path``.
Events: ``user_id``, ``item_id``, and ``ts`` or ``position`` (order within a user); an optional
``split`` column (``train``/``valid``/``test``) marks held-out users for ``xemb eval``.
The food-kitchen layout (items + one row of item ids per user) is converted to that form.

Every error names the file, the row (1-based, as a person counts data rows) and the field.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from xemb.errors import DataValidationError
from xemb.settings.offline import DataConfig

__all__ = ["Dataset", "hold_out_valid", "load_dataset", "read_table"]

SPLITS = ("train", "valid", "test")
NUMERIC_COLUMNS = frozenset({"item_id", "ts", "position"})


@dataclass
class Dataset:
    """Validated inputs. Items are sorted by id; sequences hold row indices into ``items``."""

    items: pa.Table
    domains: list[str]
    item_domain: np.ndarray
    sequences: dict[str, list[tuple[str, np.ndarray]]] = field(default_factory=dict)
    fingerprint: str = ""

    @property
    def item_ids(self) -> np.ndarray:
        return self.items.column("item_id").to_numpy()

    @property
    def texts(self) -> list[str]:
        return self.items.column("text").to_pylist()

    def rows_of(self, item_ids: np.ndarray) -> np.ndarray:
        """Row index of each id; -1 where the id is unknown."""
        ids = self.item_ids
        pos = np.searchsorted(ids, item_ids)
        pos = np.clip(pos, 0, len(ids) - 1)
        return np.where(ids[pos] == item_ids, pos, -1)


def _check_utf8(path: Path) -> None:
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n")  # header is line 1, so data row = line
        raise DataValidationError("not valid UTF-8 text" + ("" if line else " in the header"),
                                  file=str(path), row=line or None) from exc


def _is_text(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        return _is_text(t.value_type)
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _is_bytes(t: pa.DataType) -> bool:
    return (pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t)
            or pa.types.is_fixed_size_binary(t))


def read_table(path: Path, *, delimiter: str = ",") -> pa.Table:
    """Read Parquet or CSV/TSV; strings must be valid UTF-8 in both, column names unique."""
    if not path.is_file():
        raise DataValidationError("file not found", file=str(path))
    if path.suffix == ".parquet":
        table = _read_parquet(path)
    else:
        _check_utf8(path)
        table = _read_csv(path, "\t" if path.suffix == ".tsv" else delimiter)
    seen: set[str] = set()
    for name in table.column_names:
        if name in seen:
            raise DataValidationError("duplicate column", file=str(path), field=name)
        seen.add(name)
    return table


def _read_parquet(path: Path) -> pa.Table:
    try:  # not pq.read_table: its dataset reader fails on a duplicate column name, unnamed
        with pq.ParquetFile(path) as parquet:
            table = parquet.read()
    except (pa.ArrowException, OSError) as exc:
        raise DataValidationError(f"unreadable Parquet: {exc}", file=str(path)) from exc
    for i, name in enumerate(table.column_names):
        if _is_text(table.schema.field(i).type):
            try:
                table.column(i).validate(full=True)
            except pa.ArrowInvalid as exc:
                raise DataValidationError("not valid UTF-8", file=str(path),
                                          field=name) from exc
    return table


def _read_csv(path: Path, delimiter: str) -> pa.Table:
    """Fast read; when that fails, a slower one that allows any row length and quoted values
    spanning lines in files over a block (1 MiB), which the fast one refuses."""
    convert = _csv_types(path, delimiter)
    try:
        return _check_quotes(pacsv.read_csv(
            path, parse_options=pacsv.ParseOptions(delimiter=delimiter),
            convert_options=convert), path, delimiter)
    except pa.ArrowInvalid:
        pass
    block = min(max(path.stat().st_size + 1, 1 << 20), (1 << 31) - 1)
    try:
        return _check_quotes(pacsv.read_csv(
            path, read_options=pacsv.ReadOptions(block_size=block),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
            convert_options=convert), path, delimiter)
    except pa.ArrowInvalid as exc:
        raise DataValidationError(f"unreadable CSV: {exc}", file=str(path)) from exc


def _check_quotes(table: pa.Table, path: Path, delimiter: str) -> pa.Table:
    """A quote left open swallows the rest of the file into the last row's value, which
    the CSV reader accepts: when that value spans lines, a strict parse decides."""
    last = table.slice(max(table.num_rows - 1, 0)).to_pylist()
    if not any(isinstance(v, str) and "\n" in v for row in last for v in row.values()):
        return table
    limit = csv.field_size_limit(min(path.stat().st_size + 1, (1 << 31) - 1))
    records = 0  # read so far, the header included: the next one is data row `records`
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            for _ in csv.reader(f, delimiter=delimiter, strict=True):
                records += 1
    except csv.Error as exc:
        raise DataValidationError(f"malformed CSV ({exc}): a quote left open?",
                                  file=str(path), row=records) from exc
    finally:
        csv.field_size_limit(limit)
    return table


def _csv_types(path: Path, delimiter: str) -> pacsv.ConvertOptions:
    """Text stays text: every column but the numeric ones is read as a string that is never
    null (a title ``nan``, ``NA``, ``null`` or ``007`` is kept as written; an empty cell is
    ``""``). Numeric columns are inferred, and their empty or ``NA`` cells are null, so a
    missing id is reported as missing."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        header = next(csv.reader(f, delimiter=delimiter), [])
    return pacsv.ConvertOptions(
        column_types={name: pa.string() for name in header if name not in NUMERIC_COLUMNS},
        strings_can_be_null=False)


def _require(table: pa.Table, file: Path, names: tuple[str, ...]) -> None:
    for name in names:
        if name not in table.column_names:
            raise DataValidationError("missing column", file=str(file), field=name)


def _first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0]) + 1


def _line(table: pa.Table, i: int) -> int:
    """The data row of table row ``i`` (food-kitchen events map back to their sequence)."""
    return table.column("_row")[i].as_py() if "_row" in table.column_names else i + 1


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _scalar(table: pa.Table, name: str, file: Path) -> pa.ChunkedArray:
    """A column of single values: dictionary-encoded is decoded, binary must be UTF-8 text;
    a list, struct or map where one value per row is expected is refused."""
    col = table.column(name)
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    if _is_bytes(col.type):
        return _cast(table, name, col, pa.string(), file, "not valid UTF-8")
    if (pa.types.is_nested(col.type) or pa.types.is_list_view(col.type)
            or pa.types.is_large_list_view(col.type)):
        raise DataValidationError(f"one value per row expected, got {col.type}",
                                  file=str(file), field=name)
    return col


def _cast(table: pa.Table, name: str, col: pa.ChunkedArray, to: pa.DataType, file: Path,
          what: str) -> pa.ChunkedArray:
    """``col`` cast to ``to``; when a value cannot be, the error names its row (bisection)."""
    try:
        return pc.cast(col, to)
    except pa.ArrowNotImplementedError as exc:
        raise DataValidationError(f"{what}: a {col.type} column", file=str(file),
                                  field=name) from exc
    except pa.ArrowInvalid as exc:
        lo, hi = 0, len(col)  # the first value that fails is in [lo, hi)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            try:
                pc.cast(col.slice(lo, mid - lo), to)
                lo = mid
            except pa.ArrowInvalid:
                hi = mid
        raise DataValidationError(f"{what}: {_show(col[lo].as_py())}", file=str(file),
                                  row=_line(table, lo), field=name) from exc


def _missing(col: pa.ChunkedArray) -> np.ndarray:
    """Null, or NaN in a float column (pandas writes a missing number as NaN)."""
    mask = col.is_null(nan_is_null=pa.types.is_floating(col.type))
    return mask.to_numpy(zero_copy_only=False)


def _refuse_missing(table: pa.Table, name: str, col: pa.ChunkedArray, file: Path,
                    what: str) -> None:
    mask = _missing(col)
    if mask.any():
        raise DataValidationError(what, file=str(file), field=name,
                                  row=_line(table, _first_bad(mask) - 1))


def _int_ids(table: pa.Table, name: str, file: Path) -> np.ndarray:
    """Ids as int64: integers, whole floats up to 2**53 (exact there), or integer text;
    never negative (the search index returns -1 for "no result")."""
    col = _scalar(table, name, file)
    _refuse_missing(table, name, col, file, "missing id")
    kind = col.type
    if pa.types.is_floating(kind):
        values = col.to_numpy()
        inexact = ~np.isfinite(values) | (values != np.round(values)) | (np.abs(values) > 2**53)
        if inexact.any():
            i = _first_bad(inexact) - 1
            raise DataValidationError(
                f"ids must be integers: {float(values[i])!r} (the column holds floats, whole "
                "and exact only up to 2**53)", file=str(file), row=_line(table, i), field=name)
    elif pa.types.is_boolean(kind) or not (pa.types.is_integer(kind) or _is_text(kind)
                                            or pa.types.is_null(kind)):
        raise DataValidationError(f"ids must be integers, got a {kind} column", file=str(file),
                                  field=name)
    ids = _cast(table, name, col, pa.int64(), file, "ids must be integers").to_numpy()
    if (ids < 0).any():
        i = _first_bad(ids < 0) - 1
        raise DataValidationError(f"ids must not be negative: {ids[i]}", file=str(file),
                                  row=_line(table, i), field=name)
    return ids.astype(np.int64)


def _item_text(table: pa.Table, fields: list[str], file: Path) -> list[str]:
    _require(table, file, tuple(fields))
    cols = [[("" if v is None else str(v)).strip() for v in _scalar(table, f, file).to_pylist()]
            for f in fields]
    texts = [". ".join(p for p in parts if p) for parts in zip(*cols)]
    for i, text in enumerate(texts):
        if not text:
            raise DataValidationError("empty text", file=str(file), row=i + 1,
                                      field="+".join(fields))
    return texts


def _domains(table: pa.Table, file: Path) -> list[str]:
    values = _scalar(table, "domain", file).to_pylist()
    for i, d in enumerate(values):
        if d is None or d == "":
            raise DataValidationError("missing domain", file=str(file), row=i + 1,
                                      field="domain")
    return [str(d) for d in values]


def _validate_items(table: pa.Table, cfg: DataConfig, file: Path) -> tuple[pa.Table, list[str]]:
    _require(table, file, ("item_id", "domain"))
    ids = _int_ids(table, "item_id", file)
    order = np.argsort(ids, kind="stable")
    dup = np.flatnonzero(ids[order][1:] == ids[order][:-1])
    if dup.size:
        row = int(order[dup[0] + 1]) + 1
        raise DataValidationError(f"duplicate item_id {ids[order][dup[0]]}", file=str(file),
                                  row=row, field="item_id")
    if not table.num_rows:
        raise DataValidationError("no items", file=str(file))
    domains_col = _domains(table, file)
    domains = cfg.domains or sorted(set(domains_col))
    known = set(domains)
    for i, d in enumerate(domains_col):
        if d not in known:
            raise DataValidationError(f"unknown domain {d!r} (known: {domains})",
                                      file=str(file), row=i + 1, field="domain")
    empty = sorted(known - set(domains_col))
    if empty:
        raise DataValidationError(f"domain {empty[0]!r} has no items", file=str(file),
                                  field="domain")
    cols = {"item_id": pa.array(ids, pa.int64()), "domain": pa.array(domains_col),
            "text": pa.array(_item_text(table, cfg.text_fields, file))}
    if "image_path" in table.column_names:
        cols["image_path"] = _image_paths(table, file)
    for name in table.column_names:  # other item fields, e.g. for describe's prompts
        cols.setdefault(name, table.column(name))
    return pa.table(cols).take(pa.array(order)), domains


def _image_paths(table: pa.Table, file: Path) -> pa.Array:
    """Image paths relative to the items file; missing files are an error, null is fine."""
    out: list[str | None] = []
    for i, p in enumerate(table.column("image_path").to_pylist()):
        if p is None or p == "":
            out.append(None)
            continue
        path = Path(p) if Path(p).is_absolute() else file.parent / p
        if not path.is_file():
            raise DataValidationError(f"image not found: {path}", file=str(file), row=i + 1,
                                      field="image_path")
        out.append(str(path))
    return pa.array(out, pa.string())


def _events_from_food_kitchen(seq: pa.Table, file: Path) -> pa.Table:
    _require(seq, file, ("split", "user_id", "item_ids"))
    col = seq.column("item_ids")
    if pa.types.is_string(col.type):  # TSV: comma-separated ids
        col = pc.split_pattern(col, ",")
    lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
    flat = pc.list_flatten(col)
    try:
        flat = pc.cast(flat, pa.int64())
    except pa.ArrowInvalid as exc:
        raise DataValidationError(f"item ids must be integers ({exc})", file=str(file),
                                  field="item_ids") from exc
    idx = np.repeat(np.arange(seq.num_rows), lengths)
    pos = np.concatenate([np.arange(n) for n in lengths]) if len(lengths) else np.array([])
    return pa.table({
        "user_id": pc.take(seq.column("user_id").cast(pa.string()), pa.array(idx)),
        "item_id": flat, "position": pa.array(pos, pa.int64()),
        "split": pc.take(seq.column("split"), pa.array(idx)),
        "_row": pa.array(idx + 1, pa.int64()),
    })


def _users(events: pa.Table, file: Path) -> list[str]:
    col = _scalar(events, "user_id", file)
    _refuse_missing(events, "user_id", col, file, "missing user_id")
    users = _cast(events, "user_id", col, pa.string(), file, "user ids must be text").to_pylist()
    if "" in users:
        raise DataValidationError("missing user_id", file=str(file), field="user_id",
                                  row=_line(events, users.index("")))
    return users


def _order_keys(events: pa.Table, name: str, file: Path) -> np.ndarray:
    """``ts`` or ``position``: numbers (text that reads as one too), timestamps or dates."""
    col = _scalar(events, name, file)
    _refuse_missing(events, name, col, file, f"missing {name}")
    kind = col.type
    if _is_text(kind):
        col = _cast(events, name, col, pa.float64(), file, "not a number")
    elif pa.types.is_null(kind) or pa.types.is_decimal(kind):
        col = col.cast(pa.float64())
    elif not (pa.types.is_integer(kind) or pa.types.is_floating(kind)
              or pa.types.is_timestamp(kind) or pa.types.is_date(kind)
              or pa.types.is_duration(kind)):
        raise DataValidationError(f"must be numbers or timestamps, got a {kind} column",
                                  file=str(file), field=name)
    return col.to_numpy()


def _sequences(events: pa.Table, ds: Dataset, file: Path) -> dict[str, list]:
    """Group events into per-user, per-split sequences of item rows, oldest first."""
    _require(events, file, ("user_id", "item_id"))
    order_col = "ts" if "ts" in events.column_names else "position"
    _require(events, file, (order_col,))
    item_ids = _int_ids(events, "item_id", file)
    rows = ds.rows_of(item_ids)
    if (rows < 0).any():
        bad = _first_bad(rows < 0) - 1
        raise DataValidationError(f"unknown item_id {item_ids[bad]}", file=str(file),
                                  row=_line(events, bad), field="item_id")
    split = (events.column("split").to_pylist() if "split" in events.column_names
             else ["train"] * events.num_rows)
    bad_split = [i for i, s in enumerate(split) if s not in SPLITS]
    if bad_split:
        raise DataValidationError(f"split must be one of {SPLITS}", file=str(file),
                                  row=_line(events, bad_split[0]), field="split")
    users = _users(events, file)
    # users keep the order they first appear in (the eval protocol draws negatives in file order)
    codes = pd.factorize(np.asarray(users, dtype=object))[0]
    order = np.lexsort((_order_keys(events, order_col, file), codes))
    out: dict[str, dict[str, list[int]]] = {s: {} for s in SPLITS}
    for i in order:
        out[split[i]].setdefault(users[i], []).append(int(rows[i]))
    return {s: [(u, np.asarray(r, np.int64)) for u, r in seqs.items()]
            for s, seqs in out.items()}


def hold_out_valid(sequences: dict[str, list], n_users: int, seed: int
                   ) -> dict[str, list]:
    """Data without valid rows: the last event of a seeded sample of training users (those
    with at least 3 events) becomes their valid target; training keeps only what came before
    it, so the build never trains on a valid target."""
    train = sequences["train"]
    eligible = np.flatnonzero([len(s) >= 3 for _, s in train])
    n = min(n_users, len(eligible) // 5)  # never more than a fifth of the usable users
    if n == 0:  # too little data to hold any out: the build says so and selects nothing
        return sequences
    rng = np.random.default_rng(seed)
    chosen = set(rng.choice(eligible, n, replace=False).tolist())
    out = dict(sequences)
    out["train"] = [(u, s[:-1] if i in chosen else s) for i, (u, s) in enumerate(train)]
    out["valid"] = [train[i] for i in sorted(chosen)]
    return out


def _fingerprint(files: list[Path], cfg: DataConfig) -> str:
    """File contents plus the path-free config: a clone at another path gets the same."""
    h = hashlib.sha256(cfg.model_dump_json(exclude={"path", "items", "events"}).encode())
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _pick(folder: Path, stem: str, exts: tuple[str, ...]) -> Path:
    for ext in exts:
        if (folder / f"{stem}{ext}").is_file():
            return folder / f"{stem}{ext}"
    raise DataValidationError(f"no {stem}{{{','.join(exts)}}} here", file=str(folder))


def load_dataset(cfg: DataConfig) -> Dataset:
    """Read and validate the configured inputs."""
    if cfg.format == "food-kitchen":
        if cfg.path is None:
            raise DataValidationError("data.path is required for format food-kitchen",
                                      file="config", field="data.path")
        items_file = _pick(cfg.path, "items", (".parquet", ".csv"))
        events_file = _pick(cfg.path, "sequences", (".parquet", ".tsv"))
        events = _events_from_food_kitchen(read_table(events_file), events_file)
    else:
        if cfg.items is None or cfg.events is None:
            raise DataValidationError("data.items and data.events are required for format "
                                      "tables", file="config", field="data.items")
        items_file, events_file = cfg.items, cfg.events
        events = read_table(events_file)
    items, domains = _validate_items(read_table(items_file), cfg, items_file)
    dom_index = {d: i for i, d in enumerate(domains)}
    item_domain = np.array([dom_index[d] for d in items.column("domain").to_pylist()], np.int64)
    ds = Dataset(items=items, domains=domains, item_domain=item_domain)
    ds.sequences = _sequences(events, ds, events_file)
    if not ds.sequences["valid"]:
        ds.sequences = hold_out_valid(ds.sequences, cfg.valid_users, cfg.valid_seed)
    ds.fingerprint = _fingerprint([items_file, events_file], cfg)
    return ds
