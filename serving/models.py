"""The ONNX models the service runs: the per-request composer and the cold-start encoder.

Sessions use one intra-op thread: requests are tiny and already run in parallel on the gRPC
worker threads, and a thread pool per call would only add hand-offs (ONNX Runtime's ``run`` is
thread-safe and releases the GIL).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort

from xemb.adapter_io import adapter_feeds
from xemb.composer_io import ItemArrays, composer_feeds
from xemb.errors import VersionIntegrityError
from xemb.layout import ADAPTER_INPUTS, ADAPTER_OUTPUTS, COMPOSER_INPUTS, COMPOSER_OUTPUTS
from xemb.serving.tables import ItemTable

__all__ = ["Composer", "ColdStartEncoder", "TextGraph", "session"]


def session(path: Path, needs: tuple[str, ...] = (), gives: tuple[str, ...] = (),
            threads: int = 1) -> ort.InferenceSession:
    """Open one model on the CPU (``threads`` intra-op threads: 1 in the server, whose calls
    run on worker threads) and check its signature names."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise VersionIntegrityError(f"{path.name}: cannot load ONNX model: {exc}") from exc
    inputs = {i.name for i in sess.get_inputs()}
    outputs = {o.name for o in sess.get_outputs()}
    if not set(needs) <= inputs or not set(gives) <= outputs:
        raise VersionIntegrityError(f"{path.name}: inputs {sorted(inputs)} / outputs "
                                    f"{sorted(outputs)}, expected {needs} / {gives}")
    return sess


class Composer:
    """Behaviour history -> user-intent vector and intent weights, for one target domain.

    Feeds are built by :func:`xemb.composer_io.composer_feeds`, the same code the offline
    evaluation uses, so what is served is exactly what was measured.
    """

    def __init__(self, path: Path, max_len: int, items: ItemTable) -> None:
        self.sess = session(path, COMPOSER_INPUTS, COMPOSER_OUTPUTS)
        self.max_len = max_len
        self.arrays = ItemArrays(items.parts["full"], items.domain, items.intent_ids,
                                 items.intent_w)

    def feed(self, rows: np.ndarray, target: int) -> dict[str, np.ndarray]:
        """One history of item rows (oldest first, at least one) -> the model's inputs."""
        return composer_feeds(self.arrays, [rows], np.array([target], np.int64), self.max_len)

    def run(self, feed: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        user_vec, weights = self.sess.run(list(COMPOSER_OUTPUTS), feed)
        return user_vec[0], weights[0]


class TextGraph:
    """A published ``encoder/`` folder (``model.onnx``, ``tokenizer.json``, ``encoder.json``):
    item text -> semantic vector, exactly as cold start computes it. The session opens on
    first use, so the object pickles (a Ray replica reopens it)."""

    def __init__(self, encoder_dir: Path, threads: int = 1) -> None:
        self.dir, self.threads = Path(encoder_dir), threads
        self.meta = json.loads((self.dir / "encoder.json").read_text(encoding="utf-8"))
        self.dim = int(self.meta.get("dim", 0))
        self.fingerprint = str(self.meta.get("fingerprint", ""))
        self._open()

    def _open(self) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(self.dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(int(self.meta.get("max_length", 64)))
        pad_id = int(self.meta.get("pad_id", 0))
        self.tokenizer.enable_padding(pad_id=pad_id,
                                      pad_token=self.tokenizer.id_to_token(pad_id) or "[PAD]")
        self.session = session(self.dir / "model.onnx", ("input_ids", "attention_mask"),
                               threads=self.threads)
        self.inputs = {i.name for i in self.session.get_inputs()}

    def __getstate__(self) -> dict:
        return {"dir": self.dir, "threads": self.threads, "meta": self.meta, "dim": self.dim,
                "fingerprint": self.fingerprint}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._open()

    def semantic(self, texts: list[str]) -> np.ndarray:
        encs = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encs], np.int64)
        feed = {"input_ids": ids, "attention_mask": np.array([e.attention_mask for e in encs],
                                                             np.int64)}
        if "token_type_ids" in self.inputs:
            feed["token_type_ids"] = np.zeros_like(ids)
        return self.session.run(None, feed)[0].astype(np.float32, copy=False)


class ColdStartEncoder:
    """Item text -> semantic vector (frozen encoder) -> transferable/residual/full (adapter).

    New items come without generated descriptions (the describe stage's LLM runs offline
    only): an adapter built with ``describe.use: separate`` gets them masked out and takes
    its title-only path, the one its training kept in distribution (``describe.dropout``)."""

    def __init__(self, encoder_dir: Path, adapter: Path, threads: int = 1) -> None:
        self.text = TextGraph(encoder_dir, threads)
        # a build without residual heads / per-item vectors has no domain / item_row input
        self.adapter = session(adapter, ADAPTER_INPUTS[:1], ADAPTER_OUTPUTS)
        self.adapter_inputs = {i.name: i.shape for i in self.adapter.get_inputs()}

    def semantic(self, texts: list[str]) -> np.ndarray:
        return self.text.semantic(texts)

    def adapt(self, semantic: np.ndarray, domain: int) -> dict[str, np.ndarray]:
        n = len(semantic)  # item_row -1: a new item (text only, no descriptions)
        feed = adapter_feeds(self.adapter_inputs, semantic, np.full(n, domain, np.int64),
                             np.full(n, -1, np.int64))
        outs = self.adapter.run(list(ADAPTER_OUTPUTS), feed)
        return dict(zip(ADAPTER_OUTPUTS, outs, strict=True))
