"""Encoding streams: batches go straight into a memory-mapped .npy and into cache shards
flushed as they fill; a rerun encodes nothing; caches of earlier versions (one .npz) still
count; items with the same content share one vector."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from xemb.embedders.encode import (
    EncodeCache,
    content_keys,
    encode_batch,
    encode_items,
    load_encoder,
    semantic_file,
)
from xemb.settings.offline import EncoderConfig

TEXTS = [f"{w} {i}" for i, w in enumerate(["green tea", "cast iron pan", "dark chocolate",
                                             "espresso beans", "chef knife"] * 4)]
TEXTS[7] = TEXTS[2]  # the same content twice
TEXTS[15] = TEXTS[2]


@pytest.fixture(scope="module")
def encoder(tiny_bert: Path):  # type: ignore[no-untyped-def]
    return load_encoder(EncoderConfig(model=tiny_bert, batch_size=4, max_length=16), "cpu")


def test_streamed_into_a_memmap_and_shards(encoder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = semantic_file(tmp_path / "semantic.npy", len(TEXTS), encoder.dim)
    vec, n_new = encode_items(encoder, TEXTS, None, tmp_path / "cache", out=out, flush_items=5)
    assert vec is out and n_new == len(TEXTS)
    shards = sorted((tmp_path / "cache" / encoder.fingerprint).glob("*.npz"))
    assert len(shards) == 3  # batches of 4, flushed once 5 or more wait, then the rest
    direct = encoder.encode(TEXTS)  # the same length-sorted batches, in one array
    np.testing.assert_array_equal(np.load(tmp_path / "semantic.npy")[[0, 1, 15]],
                                  direct[[0, 1, 15]])
    assert np.array_equal(vec[2], vec[15]) and np.array_equal(vec[7], vec[15])  # the last one
    again, n_again = encode_items(encoder, TEXTS, None, tmp_path / "cache")
    assert n_again == 0 and np.array_equal(again, vec)
    np.testing.assert_allclose(encode_batch(encoder, TEXTS[:3]), direct[:3], atol=1e-6)


def test_an_earlier_single_file_cache_still_counts(encoder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    keys = content_keys(TEXTS[:3], None)
    vectors = np.eye(3, encoder.dim, dtype=np.float32)
    np.savez(tmp_path / f"{encoder.fingerprint}.npz",
             keys=np.frombuffer(keys.tobytes(), np.uint8).reshape(-1, 32), vectors=vectors)
    vec, n_new = encode_items(encoder, TEXTS[:5], None, tmp_path)
    assert n_new == 2 and np.array_equal(vec[:3], vectors)
    shard, row = EncodeCache(tmp_path, encoder.fingerprint).lookup(content_keys(TEXTS[:6], None))
    assert list(shard >= 0) == [True] * 5 + [False] and list(row[:3]) == [0, 1, 2]


def test_checkpoint_fingerprint_reads_files_once_and_sees_changes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkpoint's files are hashed once per process while unchanged (a build asks per
    stage key and model load; generative checkpoints are gigabytes); a rewritten file, even
    of the same size, is hashed again and changes the fingerprint."""
    import builtins
    import os

    from xemb.embedders import encode
    from xemb.settings.offline import EncoderConfig

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "weights.bin").write_bytes(b"a" * 1000)
    first = encode._model_fingerprint(ckpt, EncoderConfig())
    opened: list[str] = []
    real_open = builtins.open

    def counting(file, *a, **k):  # type: ignore[no-untyped-def]
        opened.append(str(file))
        return real_open(file, *a, **k)

    monkeypatch.setattr(builtins, "open", counting)
    assert encode._model_fingerprint(ckpt, EncoderConfig()) == first
    assert opened == []
    (ckpt / "weights.bin").write_bytes(b"b" * 1000)
    st = (ckpt / "weights.bin").stat()
    os.utime(ckpt / "weights.bin", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert encode._model_fingerprint(ckpt, EncoderConfig()) != first
    assert opened == [str(ckpt / "weights.bin")]
    assert encode._model_fingerprint(ckpt, EncoderConfig(pooling="cls")) != first
