"""describe: a local causal LM writes item descriptions from prompts in the config (issue 8).

Generation is batched with left padding, greedy (deterministic) and capped by
``max_new_tokens``. Every result is appended to an on-disk cache keyed by a hash of (model,
generation settings, rendered prompt), flushed batch by batch: a second run generates nothing,
and a killed run resumes where it stopped (a torn last line is ignored). The generator and
the cache are shared with the profile stage (embedders/generate.py).

A function of item rows -> one text column per prompt, so it runs in one process and as a
``map_batches`` stage. In the build (``describe.enabled``) it runs before encode: its columns
are published in ``items.parquet`` and the Feast item view, and ``describe.use: concat``
joins them to the text the encoder reads (:func:`with_descriptions`); with ``separate`` the
encode stage encodes each description column apart with the same encoder and cache
(:func:`encode_descriptions`) and the adapter fuses them with the title vector
(embedders/models.py ``DescriptionFusion``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from xemb.embedders.generate import (
    Generator,
    TextCache,
    TextGenerator,
    generate_cached,
    generator_fingerprint,
    image_prompt,
)
from xemb.errors import ConfigError
from xemb.settings.offline import DescribeConfig

if TYPE_CHECKING:
    from xemb.embedders.encode import Encoder

__all__ = ["DESCRIPTION_MASK", "DESCRIPTION_VECTORS", "DescribeCache", "Generator",
           "describe_items", "describe_table", "description_columns", "encode_descriptions",
           "generator_fingerprint", "item_rows", "render_prompts", "with_descriptions"]

DescribeCache = TextCache  # the cache is shared with the profile stage (embedders/generate.py)

DESCRIPTION_VECTORS = "descriptions.npy"
"""``separate``: the encode stage's [N, K, S] float32 description vectors (K columns in
``describe.prompts`` order; rows of missing descriptions are the empty text's vector)."""
DESCRIPTION_MASK = "description_mask.npy"
"""``separate``: [N, K] bool, True where the item's description is not empty."""


def render_prompts(template: str, items: Sequence[Mapping[str, object]],
                   column: str = "") -> list[str]:
    """``{title}``, ``{domain}`` and any other item field, filled per item (a field the items
    lack, or a format the value does not take, is a ``ConfigError`` naming the prompt)."""
    where = f"describe.prompts.{column}" if column else "describe.prompts"
    return [_fill(template, item, row, where) for row, item in enumerate(items)]


def _fill(template: str, item: Mapping[str, object], row: int, where: str) -> str:
    try:
        return template.format_map(dict(item))
    except KeyError as exc:
        raise ConfigError(f"{where}: no item field {exc} (fields: {', '.join(item)})") from exc
    except (ValueError, IndexError, AttributeError, TypeError) as exc:
        raise ConfigError(f"{where}: cannot fill the template for item row {row}: "
                          f"{exc}") from exc


def describe_items(cfg: DescribeConfig, items: Sequence[Mapping[str, object]], cache_dir: Path,
                   generator: TextGenerator | None = None,
                   log: Callable[[str], None] = print,
                   device: str = "cpu", images: Sequence[str | None] | None = None
                   ) -> tuple[dict[str, list[str]], int]:
    """One generated text per item and prompt (``cfg.prompts``: column -> template); returns
    the columns and how many texts were generated now (the rest came from the cache). The
    model runs on ``device`` (pass ``resolve_device(cfg.build.device)``) unless a
    ``generator`` is given. ``images``: per item, an image path or None (``model_class:
    image-text-to-text``; the image goes into each of the item's prompts)."""
    rendered = {col: render_prompts(t, items, col) for col, t in cfg.prompts.items()}
    if images is not None:
        rendered = {col: [image_prompt(p, im) for p, im in zip(ps, images, strict=True)]
                    for col, ps in rendered.items()}
    gen = generator or Generator(cfg, device)  # after the prompts: a bad one fails fast
    flat = [p for ps in rendered.values() for p in ps]
    texts, n_new = generate_cached(gen, TextCache(cache_dir, gen.fingerprint), flat,
                                   cfg.batch_size, "describe")
    log(f"describe: {n_new} texts generated, the rest from cache")
    cols: dict[str, list[str]] = {}
    start = 0
    for col, ps in rendered.items():
        cols[col], start = texts[start:start + len(ps)], start + len(ps)
    return cols, n_new


def item_rows(items: pa.Table) -> list[dict[str, object]]:
    """The fields a prompt may use, per item: every column of the items table (``item_id``,
    ``domain``, ``text`` and the source columns such as ``title``); ``title`` is the item's
    text where the table has none."""
    rows = items.drop_columns([c for c in ("image_path",) if c in items.column_names])
    out = rows.to_pylist()
    if "title" not in rows.column_names:
        for row in out:
            row["title"] = row["text"]
    return out


def describe_table(cfg: DescribeConfig, items: pa.Table, cache_dir: Path, device: str = "cpu",
                   log: Callable[[str], None] = print,
                   generator: TextGenerator | None = None) -> pa.Table:
    """The describe stage over an items table: ``item_id`` and one string column per prompt
    (``describe.prompts``), in the table's row order."""
    images = (items.column("image_path").to_pylist()
              if cfg.model_class == "image-text-to-text" and "image_path" in items.column_names
              else None)
    cols, _ = describe_items(cfg, item_rows(items), cache_dir, generator, log=log,
                             device=device, images=images)
    return pa.table({"item_id": items.column("item_id"),
                     **{c: pa.array(v, pa.string()) for c, v in cols.items()}})


def with_descriptions(texts: list[str], descriptions: pa.Table) -> list[str]:
    """``describe.use: concat``: each item text with its descriptions, joined by '. ' (empty
    ones left out), in the order of ``describe.prompts``."""
    cols = [descriptions.column(c).to_pylist() for c in descriptions.column_names
            if c != "item_id"]
    return [". ".join(p for p in (t, *(c[i] for c in cols)) if p) for i, t in enumerate(texts)]


def description_columns(descriptions: pa.Table) -> list[str]:
    """The description columns of the describe stage's table, in ``describe.prompts`` order."""
    return [c for c in descriptions.column_names if c != "item_id"]


def encode_descriptions(encoder: Encoder, descriptions: pa.Table, out: Path, cache_dir: Path,
                        flush_items: int = 65_536) -> int:
    """``describe.use: separate``: each description column encoded apart by ``encoder``
    (the one that encodes the titles, through the same content-addressed cache), batch by
    batch into a memory-mapped ``out/descriptions.npy`` [N, K, S], and ``out/
    description_mask.npy`` [N, K] (an empty description is missing: its mask is False).
    Returns how many texts were encoded now (the rest came from the cache)."""
    from xemb.embedders.encode import encode_items

    cols = description_columns(descriptions)
    n = descriptions.num_rows
    vectors = np.lib.format.open_memmap(out / DESCRIPTION_VECTORS, mode="w+",
                                        dtype=np.float32, shape=(n, len(cols), encoder.dim))
    mask = np.zeros((n, len(cols)), bool)
    n_new = 0
    for k, col in enumerate(cols):
        texts = [t or "" for t in descriptions.column(col).to_pylist()]
        mask[:, k] = [bool(t.strip()) for t in texts]
        n_new += encode_items(encoder, texts, None, cache_dir, out=vectors[:, k],
                              flush_items=flush_items)[1]
    vectors.flush()
    np.save(out / DESCRIPTION_MASK, mask)
    return n_new
