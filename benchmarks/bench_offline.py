"""Offline-vs-online cost, one table from one run (needs a published build):

* item encoding throughput of the frozen encoder, torch vs ONNX Runtime (items/s);
* composer latency per request on one thread (p50/p99), histories of 10, 50 and 1,000 items,
  including building its inputs from the published tables (what the server does);
* the ratio to encoding the same history's concatenated titles with the LLM online, in
  512-token windows (the approach AIR replaces), on the same single thread.

    python benchmarks/bench_offline.py -c examples/food-kitchen/xemb.yaml
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402
from _timing import percentiles  # noqa: E402

from xemb import layout  # noqa: E402
from xemb.composer_io import composer_feeds  # noqa: E402
from xemb.embedders.encode import _sorted_batches, load_encoder  # noqa: E402
from xemb.embedders.evaluate import served_items  # noqa: E402
from xemb.settings import load_config  # noqa: E402
from xemb.store import VersionStore  # noqa: E402


def _session(path: Path, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def encode_throughput(encoder, onnx_path: Path, texts: list[str], batch: int
                      ) -> tuple[float, float]:
    t0 = time.perf_counter()
    with torch.inference_mode():
        for idx in _sorted_batches(texts, batch):
            encoder.module(**encoder.tokenize([texts[i] for i in idx]))
    torch_rate = len(texts) / (time.perf_counter() - t0)
    sess = _session(onnx_path, torch.get_num_threads())
    t0 = time.perf_counter()
    for idx in _sorted_batches(texts, batch):
        feeds = {k: v.numpy() for k, v in encoder.tokenize([texts[i] for i in idx]).items()}
        sess.run(None, feeds)
    return torch_rate, len(texts) / (time.perf_counter() - t0)


def llm_online(encoder, sess: ort.InferenceSession, texts: list[str]) -> None:
    """Encode the concatenated titles in 512-token windows (MiniLM's limit)."""
    ids = encoder.tokenizer(" ".join(texts), add_special_tokens=False)["input_ids"]
    windows = [ids[i:i + 510] for i in range(0, len(ids), 510)]
    cls, sep = encoder.tokenizer.cls_token_id, encoder.tokenizer.sep_token_id
    for w in windows:
        x = np.array([[cls, *w, sep]], np.int64)
        sess.run(None, {"input_ids": x, "attention_mask": np.ones_like(x)})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-c", "--config", type=Path, required=True)
    ap.add_argument("--items", type=int, default=2000, help="titles for the throughput test")
    ap.add_argument("--requests", type=int, default=300, help="timed requests per row")
    args = ap.parse_args()
    cfg = load_config(args.config)
    store = VersionStore(cfg.build.root)
    version = store.current()
    vdir = store.path(version)
    manifest = store.manifest(version)
    items = pq.read_table(vdir / layout.ITEMS)
    texts = items.column("text").to_pylist()
    rng = np.random.default_rng(0)
    sample = [texts[i] for i in rng.choice(len(texts), min(args.items, len(texts)),
                                           replace=False)]
    encoder = load_encoder(cfg.encoder)
    t_rate, o_rate = encode_throughput(encoder, vdir / layout.ENCODER_ONNX, sample, 64)

    torch.set_num_threads(1)
    _, arrays = served_items(vdir)
    comp = _session(vdir / layout.COMPOSER_ONNX, 1)
    llm = _session(vdir / layout.ENCODER_ONNX, 1)
    max_len = int(manifest.params["composer_max_len"])
    rows = []
    for n in (10, 50, 1000):
        hist = rng.choice(len(texts), n, replace=True)
        c50, c99 = percentiles(lambda h=hist: comp.run(None, composer_feeds(
            arrays, [h], np.array([0]), max_len)), args.requests)
        l50, l99 = percentiles(lambda h=hist: llm_online(encoder, llm, [texts[i] for i in h]),
                               max(5, args.requests // 30))
        rows.append((n, c50, c99, l50, l99, l50 / c50))

    cpu = platform.processor() or platform.machine()
    print(f"\nxemb offline/online cost - version {version}; {cpu}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, onnxruntime {ort.__version__}\n")
    print(f"| item encoding ({len(sample)} titles, batch 64, {os.cpu_count()} threads) | items/s |")
    print("| --- | --- |")
    print(f"| torch (transformers) | {t_rate:,.0f} |")
    print(f"| ONNX Runtime | {o_rate:,.0f} |")
    print(f"| ONNX Runtime / torch | {o_rate / t_rate:.2f}x |\n")
    print("| history | composer p50 ms | composer p99 ms | LLM online p50 ms | "
          "LLM online p99 ms | LLM / composer (p50) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for n, c50, c99, l50, l99, ratio in rows:
        print(f"| {n} items | {c50:.3f} | {c99:.3f} | {l50:.1f} | {l99:.1f} | {ratio:,.0f}x |")
    print("\nOne thread for the per-request rows. The composer sees the last "
          f"{max_len} items (inputs gathered from the published tables are included); the LLM "
          "reads all titles of the history, concatenated, in 512-token windows.")


if __name__ == "__main__":
    main()
