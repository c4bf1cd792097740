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
           "generator_fingerprint", "image_prompt", "prompt_identity", "split_prompt",
           "text_key"]


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
    fields = {"max_new_tokens": cfg.max_new_tokens, "max_prompt_tokens": cfg.max_prompt_tokens}
    if _model_class(cfg) != "causal-lm":  # only then, so earlier caches keep their keys
        fields["model_class"] = _model_class(cfg)
    settings = json.dumps(fields, separators=(",", ":"))
    base = _model_fingerprint(model, EncoderConfig())  # checkpoint files
    return hashlib.sha256((base + settings).encode()).hexdigest()[:16]


def text_key(fingerprint: str, prompt: str) -> str:
    """The cache key of one generated text (``prompt``: its identity, see
    :func:`prompt_identity`)."""
    return hashlib.sha256(f"{fingerprint}\0{prompt}".encode()).hexdigest()


IMAGE_MARK = "\x1e"
"""Between a prompt's text and its image's path in a prompt string (an ASCII record
separator: prompts stay plain strings through sorting, caching and the Ray engine)."""


def image_prompt(text: str, image: str | None) -> str:
    """The prompt string of ``text`` with an image (``image``: a file path, or None)."""
    return text if not image else f"{text}{IMAGE_MARK}{image}"


def split_prompt(prompt: str) -> tuple[str, str | None]:
    """(text, image path or None) of a prompt string."""
    text, _, image = prompt.partition(IMAGE_MARK)
    return text, image or None


def prompt_identity(prompt: str) -> str:
    """What a generated text depends on: the prompt's text and its image's bytes (not where
    the image lives, so a moved dataset keeps its cache)."""
    text, image = split_prompt(prompt)
    if image is None:
        return text
    return f"{text}\0image\0{hashlib.sha256(Path(image).read_bytes()).hexdigest()}"


def _model_class(cfg: GenerationSettings) -> str:
    return str(getattr(cfg, "model_class", "causal-lm"))


class Generator:
    """A local ``AutoModelForCausalLM`` and its tokenizer, greedy, left-padded batches, on
    ``device`` (a resolved ``build.device``: ``cpu`` or ``cuda``)."""

    def __init__(self, cfg: GenerationSettings, device: str = "cpu",
                 section: str = "describe") -> None:
        model = _checkpoint(cfg, section)
        self.cfg, self.device, self.section = cfg, device, section
        self.processor = None
        try:
            if _model_class(cfg) == "image-text-to-text":
                from transformers import AutoModelForImageTextToText, AutoProcessor

                self.processor = AutoProcessor.from_pretrained(str(model),
                                                               local_files_only=True)
                self.tokenizer = self.processor.tokenizer
                loader = AutoModelForImageTextToText
            else:
                from transformers import AutoModelForCausalLM, AutoTokenizer

                self.tokenizer = AutoTokenizer.from_pretrained(str(model),
                                                               local_files_only=True)
                loader = AutoModelForCausalLM
            self.model = loader.from_pretrained(str(model), local_files_only=True
                                                ).eval().to(device)
        except (OSError, ValueError, AttributeError) as exc:
            raise ConfigError(f"cannot load {model} as {_model_class(cfg)}: {exc}",
                              field=f"{section}.model") from exc
        self.tokenizer.padding_side = "left"  # generated tokens follow every prompt directly
        self.tokenizer.truncation_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.fingerprint = generator_fingerprint(cfg, section)

    def generate(self, prompts: list[str]) -> list[str]:
        """One text per prompt string; prompts with an image (``image-text-to-text``) are
        generated apart from those without, each group in one left-padded batch."""
        split = [split_prompt(p) for p in prompts]
        with_image = [i for i, (_, im) in enumerate(split) if im is not None]
        if not with_image:
            return self._generate([t for t, _ in split])
        if self.processor is None:
            raise ConfigError("an image prompt needs model_class: image-text-to-text",
                              field=f"{self.section}.model_class")
        out = [""] * len(prompts)
        plain = [i for i in range(len(prompts)) if i not in set(with_image)]
        for i, t in zip(plain, self._generate([split[i][0] for i in plain]) if plain else []):
            out[i] = t
        texts = self._generate([split[i][0] for i in with_image],
                               [split[i][1] for i in with_image])  # type: ignore[misc]
        for i, t in zip(with_image, texts):
            out[i] = t
        return out

    def _image_text(self, text: str) -> str:
        """A prompt with an image slot: the processor's chat template, else its image token."""
        proc = self.processor
        if getattr(proc, "chat_template", None):
            return proc.apply_chat_template(  # type: ignore[union-attr]
                [{"role": "user", "content": [{"type": "image"}, {"type": "text",
                                                                  "text": text}]}],
                add_generation_prompt=True, tokenize=False)
        return f"{getattr(proc, 'image_token', '<image>')} {text}"

    def _feeds(self, texts: list[str], images: list[str] | None):  # type: ignore[no-untyped-def]
        if self.processor is None:
            return self.tokenizer(texts, return_tensors="pt", padding=True, truncation=True,
                                  max_length=self.cfg.max_prompt_tokens)
        if images is None:
            return self.processor(text=texts, return_tensors="pt", padding=True,
                                  truncation=True, max_length=self.cfg.max_prompt_tokens)
        from PIL import Image

        pics = []
        for path in images:
            try:
                pics.append(Image.open(path).convert("RGB"))
            except OSError as exc:
                raise ConfigError(f"cannot read image {path}: {exc}",
                                  field="image_path") from exc
        return self.processor(images=pics, text=[self._image_text(self._clip(t)) for t in texts],
                              return_tensors="pt", padding=True)

    def _clip(self, text: str) -> str:
        """The text's last ``max_prompt_tokens`` tokens (an image prompt is not truncated as
        a whole: that would cut its image tokens)."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) <= self.cfg.max_prompt_tokens:
            return text
        return self.tokenizer.decode(ids[-self.cfg.max_prompt_tokens:])

    def _generate(self, prompts: list[str], images: list[str] | None = None) -> list[str]:
        import torch

        enc = self._feeds(prompts, images).to(self.device)
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
    keys = {p: text_key(gen.fingerprint, prompt_identity(p)) for p in dict.fromkeys(prompts)}
    todo = [p for p, k in keys.items() if k not in cache.texts]
    todo.sort(key=len)  # similar lengths waste less padding
    batches = [todo[s:s + batch_size] for s in range(0, len(todo), batch_size)]
    for batch, texts in tqdm(gen.run(batches), total=len(batches), desc=desc, unit="batch",
                             disable=len(batches) < 2):
        cache.add(zip((keys[p] for p in batch), texts))
    return [cache.texts[keys[p]] for p in prompts], len(todo)

