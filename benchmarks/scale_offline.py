"""The offline stages at N items: wall time, items/s and peak RSS per stage, one table.

A synthetic catalogue of N items (titles drawn from the food-kitchen vocabulary, by word
frequency; two domains) and behaviour from a Zipf popularity; then every stage of the local
engine, each in its own process so its peak RSS is its own:

  encode        every title through an encoder into a memory-mapped semantic.npy + cache
                shards (default: a tiny random 2-layer BERT, so N titles fit in minutes on
                CPU; ``--minilm-sample`` also times MiniLM on a sample and extrapolates)
  adapt         adapter + composer training, one epoch
  item_vectors  transferable/residual/full of every item through the adapter (torch)
  intents       k-means on ``intents.train_sample`` items, assignment + labels in batches
  compose       composer fine-tuning, one epoch (item->intent weights sparse)
  materialize   every item through adapter.onnx (ONNX Runtime) in batches

    python benchmarks/scale_offline.py --items 100000
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import resource
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
import _repo  # noqa: E402,F401
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from xemb.settings import XembConfig  # noqa: E402

EXAMPLE = _repo.ROOT / "examples" / "food-kitchen" / "items.parquet"
DOMAINS = ["grocery", "kitchen"]


# ---- the synthetic catalogue ------------------------------------------------------------
def vocabulary() -> tuple[list[str], np.ndarray, np.ndarray]:
    """Words of the food-kitchen titles, their frequencies, and title lengths in words."""
    titles = pq.read_table(EXAMPLE, columns=["title"]).column("title").to_pylist()
    words = [t.split() for t in titles]
    counts = Counter(w for ws in words for w in ws)
    vocab = sorted(counts)
    freq = np.array([counts[w] for w in vocab], np.float64)
    return vocab, freq / freq.sum(), np.array([len(ws) for ws in words if ws])


def make_catalogue(n_items: int, folder: Path, seed: int = 0, events_per_item: float = 1.0,
                   zipf: float = 1.1) -> None:
    """items.parquet (item_id, domain, text) and sequences.npz (one array per user)."""
    rng = np.random.default_rng(seed)
    vocab, p, lengths = vocabulary()
    n_words = rng.choice(lengths, n_items)
    flat = rng.choice(len(vocab), int(n_words.sum()), p=p)
    cuts = np.cumsum(n_words)[:-1]
    texts = [" ".join(vocab[w] for w in ws) for ws in np.split(flat, cuts)]
    domain = (rng.random(n_items) < 0.5).astype(np.int64)
    pq.write_table(pa.table({"item_id": np.arange(1, n_items + 1), "domain": domain,
                             "text": texts}), folder / "items.parquet")
    popularity = 1.0 / np.arange(1, n_items + 1) ** zipf
    popularity = rng.permutation(popularity / popularity.sum())
    n_events = int(n_items * events_per_item)
    lens = np.clip(rng.geometric(1 / 12, n_events // 12 + 1), 2, 200)
    lens = lens[np.cumsum(lens) <= n_events]
    rows = rng.choice(n_items, int(lens.sum()), p=popularity)
    seqs = np.split(rows, np.cumsum(lens)[:-1])
    np.savez(folder / "sequences.npz", lengths=lens, rows=rows)
    print(f"catalogue: {n_items:,} items, {len(seqs):,} users, {len(rows):,} events",
          file=sys.stderr)


@dataclass
class Catalogue:
    folder: Path
    texts: list[str]
    domain: np.ndarray
    sequences: list[np.ndarray]

    @classmethod
    def load(cls, folder: Path) -> Catalogue:
        t = pq.read_table(folder / "items.parquet")
        z = np.load(folder / "sequences.npz")
        seqs = np.split(z["rows"], np.cumsum(z["lengths"])[:-1])
        return cls(folder, t.column("text").to_pylist(),
                   t.column("domain").to_numpy().astype(np.int64), seqs)

    @property
    def warm(self) -> np.ndarray:
        warm = np.zeros(len(self.texts), bool)
        warm[np.concatenate(self.sequences)] = True
        return warm


def bench_config(encoder_model: Path | None, batch_items: int, threads: int) -> XembConfig:
    """Food-kitchen's model sizes, one epoch of training, the given encoder."""
    return XembConfig.model_validate({
        "encoder": {"model": encoder_model, "batch_size": 128, "max_length": 32,
                    "backend": "torch", "export_onnx": False},
        "adapter": {"epochs": 1}, "composer": {"epochs": 1},
        "build": {"device": "cpu", "batch_items": batch_items, "threads": threads},
    })


# ---- one function per stage (inputs and outputs are files in the catalogue folder) -------
def stage_encode(cat: Catalogue, cfg: XembConfig) -> None:
    from xemb.embedders.device import resolve_device
    from xemb.embedders.encode import encode_items, load_encoder, semantic_file

    encoder = load_encoder(cfg.encoder, resolve_device(cfg.build.device))
    out = semantic_file(cat.folder / "semantic.npy", len(cat.texts), encoder.dim)
    encode_items(encoder, cat.texts, None, cat.folder / "cache", out=out,
                 flush_items=cfg.build.batch_items)
    out.flush()


def _train_inputs(cat: Catalogue):  # type: ignore[no-untyped-def]
    import torch

    from xemb.embedders.train import TrainInputs

    sem = np.load(cat.folder / "semantic.npy", mmap_mode="c")
    return TrainInputs(torch.from_numpy(sem), torch.from_numpy(cat.domain),
                       torch.from_numpy(cat.warm), cat.sequences, len(DOMAINS))


def _adapter(cat: Catalogue, cfg: XembConfig):  # type: ignore[no-untyped-def]
    import torch

    from xemb.embedders.models import Adapter
    from xemb.embedders.train import fixed_prior_rows

    a = cfg.adapter
    sem_dim = np.load(cat.folder / "semantic.npy", mmap_mode="r").shape[1]
    adapter = Adapter(sem_dim, a.dim, a.hidden, len(DOMAINS), len(cat.texts), a.dropout,
                      a.residual, a.prior, fixed_prior_rows(a, len(cat.texts)))
    adapter.load_state_dict(torch.load(cat.folder / "adapt.pt", weights_only=True)["adapter"])
    return adapter.eval()


def stage_adapt(cat: Catalogue, cfg: XembConfig) -> None:
    import torch

    from xemb.embedders.device import resolve_device
    from xemb.embedders.train import train_adapter

    adapter, composer, _ = train_adapter(_train_inputs(cat), cfg.adapter, cfg.composer,
                                         device=resolve_device(cfg.build.device))
    torch.save({"adapter": adapter.state_dict(), "composer": composer.state_dict()},
               cat.folder / "adapt.pt")


def stage_item_vectors(cat: Catalogue, cfg: XembConfig) -> None:
    from xemb.embedders.device import resolve_device
    from xemb.embedders.pipeline import adapter_outputs

    device = resolve_device(cfg.build.device)
    sem = np.load(cat.folder / "semantic.npy", mmap_mode="r")
    t, _, f = adapter_outputs(_adapter(cat, cfg).to(device), sem, cat.domain, cat.warm,
                              cfg.build.batch_items, device)
    np.save(cat.folder / "transferable.npy", t)
    np.save(cat.folder / "full.npy", f)


def stage_intents(cat: Catalogue, cfg: XembConfig) -> None:
    from xemb.embedders.intents import build_intents

    trans = np.load(cat.folder / "transferable.npy", mmap_mode="r")
    build_intents(trans, cat.texts, cat.domain, DOMAINS, cfg.intents,
                  cfg.build.batch_items).save(cat.folder / "intents.npz")


def stage_compose(cat: Catalogue, cfg: XembConfig) -> None:
    import torch

    from xemb.embedders.device import resolve_device
    from xemb.embedders.intents import IntentLibrary
    from xemb.embedders.models import Composer
    from xemb.embedders.train import ItemIntents, train_composer

    lib = IntentLibrary.load(cat.folder / "intents.npz")
    c = cfg.composer
    composer = Composer(cfg.adapter.dim, len(DOMAINS), torch.from_numpy(lib.vectors), c.heads,
                        c.dropout, cfg.adapter.prior, c.recency, c.intents)
    full = torch.from_numpy(np.load(cat.folder / "full.npy", mmap_mode="c"))
    train_composer(composer, _train_inputs(cat), full,
                   ItemIntents.from_arrays(lib.item_ids, lib.item_weights, len(lib.vectors)),
                   c, cfg.adapter.logq, None, resolve_device(cfg.build.device))


def stage_materialize(cat: Catalogue, cfg: XembConfig) -> None:
    import torch

    from xemb.embedders.device import ort_session, resolve_device
    from xemb.embedders.export import export_onnx
    from xemb.embedders.materialize import materialize_items
    from xemb.embedders.models import AdapterExport

    sem = np.load(cat.folder / "semantic.npy", mmap_mode="r")
    pick = np.arange(min(64, len(sem)))
    example = {"semantic": torch.from_numpy(np.array(sem[pick])),
               "domain": torch.from_numpy(cat.domain[pick]),
               "item_row": torch.from_numpy(np.where(pick % 2 == 0, pick, -1))}
    path = cat.folder / "adapter.onnx"
    export_onnx(AdapterExport(_adapter(cat, cfg)), example, path,
                ["transferable", "residual", "full"], {k: {0: "batch"} for k in example},
                cfg.build.parity_tol)
    sess = ort_session(path, cfg.build.threads, resolve_device(cfg.build.device))
    materialize_items(sess, sem, cat.domain, cat.warm, cfg.build.batch_items)


STAGES: dict[str, Callable[[Catalogue, XembConfig], None]] = {
    "encode": stage_encode, "adapt": stage_adapt, "item_vectors": stage_item_vectors,
    "intents": stage_intents, "compose": stage_compose, "materialize": stage_materialize}


# ---- running a stage in its own process ------------------------------------------------
def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _child(name: str, folder: str, cfg_json: str, q: mp.Queue) -> None:
    import torch

    from xemb.embedders.encode import load_encoder  # noqa: F401  (imports paid before the clock)

    cfg = XembConfig.model_validate_json(cfg_json)
    torch.set_num_threads(cfg.build.threads or len(os.sched_getaffinity(0)))
    cat = Catalogue.load(Path(folder))
    start = _rss_mb()
    t0 = time.perf_counter()
    STAGES[name](cat, cfg)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    q.put((wall, start, peak))


def run_stage(name: str, folder: Path, cfg: XembConfig) -> tuple[float, float, float]:
    """(wall s, RSS at the stage's start MiB, peak RSS MiB) of one stage in a fresh process."""
    ctx = mp.get_context("spawn")
    q: mp.Queue = ctx.Queue()
    p = ctx.Process(target=_child, args=(name, str(folder), cfg.model_dump_json(), q))
    p.start()
    p.join()
    if p.exitcode != 0:
        raise SystemExit(f"stage {name} failed (exit {p.exitcode})")
    return q.get()


def minilm_rate(texts: list[str]) -> float:
    """Items/s of the bundled MiniLM (torch, CPU) on these titles."""
    from xemb.embedders.encode import load_encoder
    from xemb.settings.offline import EncoderConfig

    enc = load_encoder(EncoderConfig(batch_size=64, max_length=64), "cpu")
    enc.encode(texts[:64])  # warm-up
    t0 = time.perf_counter()
    enc.encode(texts)
    return len(texts) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--batch-items", type=int, default=65_536)
    ap.add_argument("--events-per-item", type=float, default=1.0)
    ap.add_argument("--minilm-sample", type=int, default=2000,
                    help="titles MiniLM encodes to extrapolate its encode time (0: skip)")
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--threads", type=int, default=1,
                    help="torch/ONNX Runtime threads per stage (1: steady on a shared box)")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    folder = args.workdir or Path(tempfile.mkdtemp(prefix="xemb-scale-"))
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "items.parquet").is_file():
        make_catalogue(args.items, folder, events_per_item=args.events_per_item)
    from tests.conftest import make_tiny_bert

    bert = folder / "tiny-bert"
    if not bert.is_dir():
        make_tiny_bert(bert)
    cfg = bench_config(bert, args.batch_items, args.threads)
    n = args.items
    rows = []
    for name in args.stages.split(","):
        wall, start, peak = run_stage(name, folder, cfg)
        rows.append((name, wall, n / wall, start, peak))
        print(f"{name}: {wall:.1f}s", file=sys.stderr, flush=True)
    print(f"\nxemb offline stages at {n:,} items ({platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, {args.threads} thread(s), CPU; "
          f"batch_items {args.batch_items:,}; "
          f"encoder: tiny random BERT)\n")
    print("| stage | wall s | items/s | RSS at start MiB | peak RSS MiB |")
    print("|---|---:|---:|---:|---:|")
    for name, wall, rate, start, peak in rows:
        print(f"| {name} | {wall:.1f} | {rate:,.0f} | {start:,.0f} | {peak:,.0f} |")
    if args.minilm_sample:
        import torch

        torch.set_num_threads(args.threads)
        texts = Catalogue.load(folder).texts[: args.minilm_sample]
        rate = minilm_rate(texts)
        print(f"| encode, MiniLM (measured on {len(texts):,} titles, extrapolated) | "
              f"{n / rate:,.0f} | {rate:,.0f} | | |")


if __name__ == "__main__":
    main()
