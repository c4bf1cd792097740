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
        raise DataValidationError("not valid UTF-8 text", file=str(path), row=line) from exc


def read_table(path: Path, *, delimiter: str = ",") -> pa.Table:
    """Read Parquet or CSV/TSV; strings must be valid UTF-8 in both."""
    if not path.is_file():
        raise DataValidationError("file not found", file=str(path))
    if path.suffix == ".parquet":
        try:
            table = pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataValidationError(f"unreadable Parquet: {exc}", file=str(path)) from exc
        for name in table.column_names:
            if pa.types.is_string(table.schema.field(name).type):
                try:
                    table.column(name).validate(full=True)
                except pa.ArrowInvalid as exc:
                    raise DataValidationError("not valid UTF-8", file=str(path),
                                              field=name) from exc
        return table
    _check_utf8(path)
    delimiter = "\t" if path.suffix == ".tsv" else delimiter
    try:
        return pacsv.read_csv(path, parse_options=pacsv.ParseOptions(delimiter=delimiter),
                              convert_options=_csv_types(path, delimiter))
    except pa.ArrowInvalid as exc:
        raise DataValidationError(f"unreadable CSV: {exc}", file=str(path)) from exc


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


def _int_ids(table: pa.Table, name: str, file: Path) -> np.ndarray:
    col = table.column(name)
    if col.null_count:
        raise DataValidationError("missing id", file=str(file), field=name,
                                  row=_first_bad(col.is_null().to_numpy(zero_copy_only=False)))
    if not pa.types.is_integer(col.type):
        try:
            col = pc.cast(col, pa.int64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise DataValidationError(f"ids must be integers ({exc})", file=str(file),
                                      field=name) from exc
    return col.to_numpy().astype(np.int64)


def _item_text(table: pa.Table, fields: list[str], file: Path) -> list[str]:
    _require(table, file, tuple(fields))
    cols = [[("" if v is None else str(v)).strip() for v in table.column(f).to_pylist()]
            for f in fields]
    texts = [". ".join(p for p in parts if p) for parts in zip(*cols)]
    for i, text in enumerate(texts):
        if not text:
            raise DataValidationError("empty text", file=str(file), row=i + 1,
                                      field="+".join(fields))
    return texts


def _validate_items(table: pa.Table, cfg: DataConfig, file: Path) -> tuple[pa.Table, list[str]]:
    _require(table, file, ("item_id", "domain"))
    ids = _int_ids(table, "item_id", file)
    order = np.argsort(ids, kind="stable")
    dup = np.flatnonzero(ids[order][1:] == ids[order][:-1])
    if dup.size:
        row = int(order[dup[0] + 1]) + 1
        raise DataValidationError(f"duplicate item_id {ids[order][dup[0]]}", file=str(file),
                                  row=row, field="item_id")
    domains_col = [("" if d is None else str(d)) for d in table.column("domain").to_pylist()]
    domains = cfg.domains or sorted({d for d in domains_col if d})
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


def _sequences(events: pa.Table, ds: Dataset, file: Path) -> dict[str, list]:
    """Group events into per-user, per-split sequences of item rows, oldest first."""
    _require(events, file, ("user_id", "item_id"))
    order_col = "ts" if "ts" in events.column_names else "position"
    _require(events, file, (order_col,))
    item_ids = _int_ids(events, "item_id", file)
    rows = ds.rows_of(item_ids)
    if (rows < 0).any():
        bad = int(np.flatnonzero(rows < 0)[0])
        line = events.column("_row")[bad].as_py() if "_row" in events.column_names else bad + 1
        raise DataValidationError(f"unknown item_id {item_ids[bad]}", file=str(file),
                                  row=line, field="item_id")
    split = (events.column("split").to_pylist() if "split" in events.column_names
             else ["train"] * events.num_rows)
    bad_split = [i for i, s in enumerate(split) if s not in SPLITS]
    if bad_split:
        raise DataValidationError(f"split must be one of {SPLITS}", file=str(file),
                                  row=bad_split[0] + 1, field="split")
    users = events.column("user_id").cast(pa.string()).to_pylist()
    # users keep the order they first appear in (the eval protocol draws negatives in file order)
    codes = pd.factorize(np.asarray(users, dtype=object))[0]
    order = np.lexsort((events.column(order_col).to_numpy(), codes))
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
