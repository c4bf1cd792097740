"""Cached text generation with a local causal LM, shared by the describe and profile stages.

:class:`Generator` loads an ``AutoModelForCausalLM`` checkpoint and its tokenizer from a local
folder (never a hub) and generates greedily (deterministic), in left-padded batches capped by
``max_new_tokens``, on a resolved ``build.device``. :func:`generate_cached` runs it over
prompts through a :class:`TextCache`: one ``{"key", "text"}`` line per generated text, keyed by
a hash of (model fingerprint, rendered prompt) and fsynced batch by batch, so a second run
generates nothing and a killed run resumes where it stopped (a torn last line is ignored).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

from tqdm.auto import tqdm

from xemb.errors import ConfigError
from xemb.settings.offline import EncoderConfig

__all__ = ["GenerationSettings", "Generator", "TextCache", "TextGenerator", "generate_cached",
           "generator_fingerprint", "text_key"]


class GenerationSettings(Protocol):
    """The config fields a generating stage shares (``describe:``, ``profile:``)."""

    @property
    def model(self) -> Path | None: ...
    @property
    def max_new_tokens(self) -> int: ...
    @property
    def max_prompt_tokens(self) -> int: ...
    @property
    def batch_size(self) -> int: ...


class TextCache:
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


def _checkpoint(cfg: GenerationSettings, section: str) -> Path:
    if cfg.model is None or not cfg.model.is_dir():
        raise ConfigError(f"a local causal LM folder is needed (got {cfg.model})",
                          field=f"{section}.model")
    return cfg.model


def generator_fingerprint(cfg: GenerationSettings, section: str = "describe") -> str:
    """Hash of the checkpoint's files and the generation settings that change its output
    (``section`` names the config section in errors)."""
    from xemb.embedders.encode import _model_fingerprint

    model = _checkpoint(cfg, section)
    settings = json.dumps({"max_new_tokens": cfg.max_new_tokens,
                           "max_prompt_tokens": cfg.max_prompt_tokens}, separators=(",", ":"))
    base = _model_fingerprint(model, EncoderConfig())  # checkpoint files
    return hashlib.sha256((base + settings).encode()).hexdigest()[:16]


def text_key(fingerprint: str, prompt: str) -> str:
    """The cache key of one generated text."""
    return hashlib.sha256(f"{fingerprint}\0{prompt}".encode()).hexdigest()


class Generator:
    """A local ``AutoModelForCausalLM`` and its tokenizer, greedy, left-padded batches, on
    ``device`` (a resolved ``build.device``: ``cpu`` or ``cuda``)."""

    def __init__(self, cfg: GenerationSettings, device: str = "cpu",
                 section: str = "describe") -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = _checkpoint(cfg, section)
        self.cfg, self.device = cfg, device
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(model), local_files_only=True)
            self.model = AutoModelForCausalLM.from_pretrained(str(model),
                                                              local_files_only=True
                                                              ).eval().to(device)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load {model}: {exc}", field=f"{section}.model") from exc
        self.tokenizer.padding_side = "left"  # generated tokens follow every prompt directly
        self.tokenizer.truncation_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.fingerprint = generator_fingerprint(cfg, section)

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

    def run(self, batches: Sequence[list[str]]) -> Iterator[tuple[list[str], list[str]]]:
        """(prompts, texts) per batch, in order (the Ray engine's ``RayGenerator`` yields
        them as its replicas finish)."""
        for batch in batches:
            yield batch, self.generate(batch)


class TextGenerator(Protocol):
    """What :func:`generate_cached` runs: a :class:`Generator`, or its batches on Ray
    (``xemb.embedders.engine_ray.RayGenerator``)."""

    fingerprint: str

    def run(self, batches: Sequence[list[str]]) -> Iterable[tuple[list[str], list[str]]]: ...


def generate_cached(gen: TextGenerator, cache: TextCache, prompts: Sequence[str],
                    batch_size: int, desc: str = "generate") -> tuple[list[str], int]:
    """One text per prompt, generating (``batch_size`` prompts a call, similar lengths
    together, a progress bar named ``desc``) only those not in ``cache``; returns the texts
    and how many were generated now. Each batch is cached as it comes back."""
    todo = list(dict.fromkeys(p for p in prompts
                              if text_key(gen.fingerprint, p) not in cache.texts))
    todo.sort(key=len)  # similar lengths waste less padding
    batches = [todo[s:s + batch_size] for s in range(0, len(todo), batch_size)]
    for batch, texts in tqdm(gen.run(batches), total=len(batches), desc=desc, unit="batch",
                             disable=len(batches) < 2):
        cache.add(zip((text_key(gen.fingerprint, p) for p in batch), texts))
    return [cache.texts[text_key(gen.fingerprint, p)] for p in prompts], len(todo)

