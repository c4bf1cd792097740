"""describe: a local causal LM writes item descriptions from prompts in the config (issue 8).

Generation is batched with left padding, greedy (deterministic) and capped by
``max_new_tokens``. Every result is appended to an on-disk cache keyed by a hash of (model,
generation settings, rendered prompt), flushed batch by batch: a second run generates nothing,
and a killed run resumes where it stopped (a torn last line is ignored).

A function of item rows -> one text column per prompt, so it runs in one process and as a
``map_batches`` stage. In the build (``describe.enabled``) it runs before encode: its columns
are published in ``items.parquet`` and the Feast item view, and ``describe.use: concat``
joins them to the text the encoder reads (:func:`with_descriptions`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import pyarrow as pa
from tqdm.auto import tqdm

from xemb.errors import ConfigError
from xemb.settings.offline import DescribeConfig, EncoderConfig

__all__ = ["DescribeCache", "Generator", "describe_items", "describe_table",
           "generator_fingerprint", "item_rows", "render_prompts", "with_descriptions"]


class DescribeCache:
    """``<dir>/<model fingerprint>.jsonl``: one ``{"key", "text"}`` line per generated text."""

    def __init__(self, directory: Path, fingerprint: str) -> None:
        self.path = directory / f"{fingerprint}.jsonl"
        self.texts: dict[str, str] = {}
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:  # a run killed mid-write
                    continue
                self.texts[row["key"]] = row["text"]

    def add(self, pairs: Iterable[tuple[str, str]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        rows = list(pairs)
        with open(self.path, "a", encoding="utf-8") as fh:
            if fh.tell() and not self._ends_with_newline():
                fh.write("\n")  # after a torn line, start a fresh one
            fh.write("".join(json.dumps({"key": k, "text": t}) + "\n" for k, t in rows))
            fh.flush()
            os.fsync(fh.fileno())
        self.texts.update(rows)

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as fh:
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) == b"\n"


def generator_fingerprint(cfg: DescribeConfig) -> str:
    """Hash of the checkpoint's files and the generation settings that change its output."""
    from embedders.encode import _model_fingerprint

    if cfg.model is None or not cfg.model.is_dir():
        raise ConfigError(f"describe.model: a local causal LM folder is needed "
                          f"(got {cfg.model})")
    settings = cfg.model_dump_json(include={"max_new_tokens", "max_prompt_tokens"})
    base = _model_fingerprint(cfg.model, EncoderConfig())  # checkpoint files
    return hashlib.sha256((base + settings).encode()).hexdigest()[:16]


class Generator:
    """A local ``AutoModelForCausalLM`` and its tokenizer, greedy, left-padded batches, on
    ``device`` (a resolved ``build.device``: ``cpu`` or ``cuda``)."""

    def __init__(self, cfg: DescribeConfig, device: str = "cpu") -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if cfg.model is None or not cfg.model.is_dir():
            raise ConfigError(f"describe.model: a local causal LM folder is needed "
                              f"(got {cfg.model})")
        self.cfg, self.device = cfg, device
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(cfg.model), local_files_only=True)
            self.model = AutoModelForCausalLM.from_pretrained(str(cfg.model),
                                                              local_files_only=True
                                                              ).eval().to(device)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"describe.model: cannot load {cfg.model}: {exc}") from exc
        self.tokenizer.padding_side = "left"  # generated tokens follow every prompt directly
        self.tokenizer.truncation_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.fingerprint = generator_fingerprint(cfg)

    def generate(self, prompts: list[str]) -> list[str]:
        import torch

        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, truncation=True,
                             max_length=self.cfg.max_prompt_tokens).to(self.device)
        with torch.inference_mode():
            out = self.model.generate(**enc, max_new_tokens=self.cfg.max_new_tokens,
                                      do_sample=False, num_beams=1,
                                      pad_token_id=self.tokenizer.pad_token_id)
        new = out[:, enc["input_ids"].shape[1]:].cpu()
        return [t.strip() for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]


def render_prompts(template: str, items: Sequence[Mapping[str, object]]) -> list[str]:
    """``{title}``, ``{domain}`` and any other item field, filled per item."""
    try:
        return [template.format_map(dict(item)) for item in items]
    except KeyError as exc:
        raise ConfigError(f"describe.prompts: no item field {exc} (fields: "
                          f"{', '.join(items[0]) if items else '-'})") from exc


def _key(fingerprint: str, prompt: str) -> str:
    return hashlib.sha256(f"{fingerprint}\0{prompt}".encode()).hexdigest()


def describe_items(cfg: DescribeConfig, items: Sequence[Mapping[str, object]], cache_dir: Path,
                   generator: Generator | None = None,
                   log: Callable[[str], None] = print,
                   device: str = "cpu") -> tuple[dict[str, list[str]], int]:
    """One generated text per item and prompt (``cfg.prompts``: column -> template); returns
    the columns and how many texts were generated now (the rest came from the cache). The
    model runs on ``device`` (pass ``resolve_device(cfg.build.device)``) unless a
    ``generator`` is given."""
    gen = generator or Generator(cfg, device)
    cache = DescribeCache(cache_dir, gen.fingerprint)
    rendered = {col: render_prompts(t, items) for col, t in cfg.prompts.items()}
    todo = list(dict.fromkeys(p for ps in rendered.values() for p in ps
                              if _key(gen.fingerprint, p) not in cache.texts))
    todo.sort(key=len)  # similar lengths waste less padding
    for s in tqdm(range(0, len(todo), cfg.batch_size), desc="describe", unit="batch",
                  disable=len(todo) <= cfg.batch_size):
        batch = todo[s:s + cfg.batch_size]
        cache.add(zip((_key(gen.fingerprint, p) for p in batch), gen.generate(batch)))
    log(f"describe: {len(todo)} texts generated, the rest from cache")
    cols = {col: [cache.texts[_key(gen.fingerprint, p)] for p in ps]
            for col, ps in rendered.items()}
    return cols, len(todo)


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
                   log: Callable[[str], None] = print) -> pa.Table:
    """The describe stage over an items table: ``item_id`` and one string column per prompt
    (``describe.prompts``), in the table's row order."""
    cols, _ = describe_items(cfg, item_rows(items), cache_dir, log=log, device=device)
    return pa.table({"item_id": items.column("item_id"),
                     **{c: pa.array(v, pa.string()) for c, v in cols.items()}})


def with_descriptions(texts: list[str], descriptions: pa.Table) -> list[str]:
    """``describe.use: concat``: each item text with its descriptions, joined by '. ' (empty
    ones left out), in the order of ``describe.prompts``."""
    cols = [descriptions.column(c).to_pylist() for c in descriptions.column_names
            if c != "item_id"]
    return [". ".join(p for p in (t, *(c[i] for c in cols)) if p) for i, t in enumerate(texts)]
