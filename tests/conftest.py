"""Shared fixtures: small real slices of the bundled food-kitchen data and one real tiny build
per test session (the MiniLM encoder, a few training epochs, a handful of intents)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "food-kitchen"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def make_slice(dst: Path, n_train: int = 60, n_eval: int = 20, n_cold: int = 20) -> Path:
    """Write a food-kitchen-layout slice: ``n_train`` train users of each group, ``n_eval``
    valid and test rows, their items, plus ``n_cold`` items never seen in behaviour."""
    seqs = pq.read_table(EXAMPLE / "sequences.parquet")
    parts = []
    for split, prefixes, n in (("train", ("g", "k", "x"), n_train), ("valid", ("",), n_eval),
                               ("test", ("",), n_eval)):
        rows = seqs.filter(pc.equal(seqs["split"], split))
        for p in prefixes:
            sub = rows.filter(pc.starts_with(rows["user_id"], p)) if p else rows
            parts.append(sub.slice(0, n))
    sl = pa.concat_tables(parts)
    used = set(pc.list_flatten(sl["item_ids"]).to_pylist())
    items = pq.read_table(EXAMPLE / "items.parquet")
    ids = items["item_id"].to_pylist()
    cold = [i for i in ids if i not in used][:: max(1, len(ids) // (4 * n_cold))][:n_cold]
    keep = pa.array(sorted(used | set(cold)), pa.int64())
    dst.mkdir(parents=True, exist_ok=True)
    pq.write_table(items.filter(pc.is_in(items["item_id"], keep)), dst / "items.parquet")
    pq.write_table(sl, dst / "sequences.parquet")
    return dst


TINY_CONFIG: dict[str, dict[str, object]] = {
    "data": {"format": "food-kitchen", "path": "data"},
    "encoder": {"type": "text", "batch_size": 128, "max_length": 32},
    "adapter": {"dim": 32, "hidden": 64, "epochs": 2, "batch_tokens": 512, "negatives": 128},
    # k-means on a sample of the slice's ~2,100 items; every per-item stage (encode-cache
    # flushes, adapter outputs, intent assignment and labels, ONNX materialization) runs in
    # several batches, on an explicitly chosen device
    "intents": {"k": 16, "top_m": 3, "niter": 5, "train_sample": 1500},
    "composer": {"epochs": 1, "batch_tokens": 512, "negatives": 128, "max_len": 20},
    "build": {"root": "root", "keep_versions": 3, "device": "cpu", "batch_items": 1000},
    "feast": {"enabled": False},
    # A random tiny BERT recommends nothing; these builds test the machinery, so they are
    # made current whatever the quality gate says (tests/integration/test_gate.py tests it).
    "gate": {"accept": True},
}


def write_config(folder: Path, overrides: dict | None = None) -> Path:
    cfg = {k: dict(v) for k, v in TINY_CONFIG.items()}
    for section, values in (overrides or {}).items():
        cfg.setdefault(section, {}).update(values)
    path = folder / "xemb.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@dataclass
class TinyBuild:
    config_path: Path
    config: object  # XembConfig
    root: Path
    store: object  # VersionStore
    manifest: object  # Manifest


def make_tiny_bert(dst: Path) -> Path:
    """A real BERT checkpoint with small random weights and MiniLM's tokenizer: the full
    transformers loading path, in milliseconds per batch."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from xemb.embedders.encode import default_model_path

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(default_model_path()), local_files_only=True)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    BertModel(cfg).save_pretrained(dst)
    tok.save_pretrained(dst)
    return dst


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch", reason="needs the 'offline' extra")
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_slice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_slice(tmp_path_factory.mktemp("slice") / "data")


@pytest.fixture(scope="session")
def tiny_build(tmp_path_factory: pytest.TempPathFactory, tiny_slice: Path,
               tiny_bert: Path) -> TinyBuild:
    """One real build of a small slice, shared by the whole session (read-only!)."""
    pytest.importorskip("torch", reason="the offline job needs the 'offline' extra")
    from xemb.embedders.pipeline import build
    from xemb.settings import load_config
    from xemb.store import VersionStore

    folder = tmp_path_factory.mktemp("tiny")
    (folder / "data").symlink_to(tiny_slice)
    path = write_config(folder, {"encoder": {"model": str(tiny_bert)}})
    cfg = load_config(path)
    manifest = build(cfg)
    return TinyBuild(path, cfg, cfg.build.root, VersionStore(cfg.build.root), manifest)
