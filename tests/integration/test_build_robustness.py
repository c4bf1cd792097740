"""A killed build leaves the current version serving; seeds make training repeatable;
a CLIP-style multimodal build works with a tiny local model; the encode cache is incremental."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_config

from tests.helpers.wait import wait_for

pytestmark = pytest.mark.integration


def test_killed_build_leaves_current_unchanged(tiny_build, tmp_path: Path) -> None:
    """Kill `xemb build --force` while it trains; CURRENT and its files stay intact, and a
    re-run resumes and publishes."""
    import shutil

    root = tmp_path / "root"
    shutil.copytree(tiny_build.root, root, symlinks=True)
    before = tiny_build.store.current()
    cfg_path = write_config(tmp_path, {
        "data": {"path": str(tiny_build.config.data.path)},
        "encoder": {"model": str(tiny_build.config.encoder.model)},
        "build": {"root": str(root)},
        "adapter": {"epochs": 50, "seed": 7}})  # a new adapter key: training starts again
    proc = subprocess.Popen([sys.executable, "-m", "xemb.cli", "build", "-c", str(cfg_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    wait_for(lambda: proc.poll() is not None or any((root / "work").glob(".adapt-*.tmp")),
             240, interval=0.05, what="adapter training to start")
    assert proc.poll() is None, "the build ended before training started"
    os.killpg(proc.pid, signal.SIGKILL)  # training is under way
    proc.wait(timeout=30)
    from xemb.store import VersionStore

    store = VersionStore(root)
    assert store.current() == before
    assert store.verify(before).version == before
    assert store.list_ids() == tiny_build.store.list_ids()


def test_training_is_deterministic_under_a_seed(tiny_build) -> None:
    from xemb.embedders.pipeline import prepare
    from xemb.embedders.train import train_adapter

    ctx = prepare(tiny_build.config)
    sem = np.load(ctx.out("encode") / "semantic.npy")
    cfg = tiny_build.config.adapter.model_copy(update={"epochs": 1})
    runs = [train_adapter(ctx.train_inputs(sem), cfg, tiny_build.config.composer)
            for _ in range(2)]
    for (a1, c1, _), (a2, c2, _) in [runs]:
        for x, y in zip(list(a1.state_dict().values()) + list(c1.state_dict().values()),
                        list(a2.state_dict().values()) + list(c2.state_dict().values())):
            assert torch.equal(x, y)
    other = train_adapter(ctx.train_inputs(sem), cfg.model_copy(update={"seed": 1}),
                          tiny_build.config.composer)[0]
    assert not torch.equal(other.shared[0].weight, runs[0][0].shared[0].weight)


def test_encode_cache_reencodes_only_changed_items(tiny_build, tmp_path: Path) -> None:
    from xemb.embedders.encode import encode_items, load_encoder

    enc = load_encoder(tiny_build.config.encoder)
    texts = ["green tea", "cast iron pan", "dark chocolate"]
    v1, n1 = encode_items(enc, texts, None, tmp_path)
    v2, n2 = encode_items(enc, [*texts[:2], "milk chocolate", "kettle"], None, tmp_path)
    assert (n1, n2) == (3, 2)
    np.testing.assert_array_equal(v1[:2], v2[:2])
    np.testing.assert_allclose(np.linalg.norm(v2, axis=1), 1.0, atol=1e-5)


def _tiny_clip(dst: Path) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, PreTrainedTokenizerFast

    torch.manual_seed(0)
    words = sorted({w for line in ["<pad> <unk> <s> </s>", "tea pan kettle chocolate milk "
                                   "green cast iron dark coffee mug"] for w in line.split()})
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                   bos_token="<s>", eos_token="</s>")
    cfg = CLIPConfig(
        text_config={"vocab_size": len(words), "hidden_size": 32, "intermediate_size": 64,
                     "num_hidden_layers": 2, "num_attention_heads": 2,
                     "max_position_embeddings": 32, "eos_token_id": words.index("</s>"),
                     "pad_token_id": words.index("<pad>")},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                       "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
        projection_dim=16)
    CLIPModel(cfg).save_pretrained(dst)
    fast.save_pretrained(dst)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
                       ).save_pretrained(dst)
    return dst


def test_multimodal_build_with_tiny_clip(tmp_path: Path) -> None:
    from PIL import Image

    from xemb.embedders.pipeline import build
    from xemb.settings import load_config

    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    names = ["green tea", "dark chocolate", "milk chocolate", "coffee", "cast iron pan",
             "kettle", "coffee mug", "tea kettle"]
    rows = ["item_id,domain,title,image_path"]
    for i, name in enumerate(names, start=1):
        img = ""
        if i % 2:
            img = f"img{i}.png"
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(data / img)
        rows.append(f"{i},{'grocery' if i <= 4 else 'kitchen'},{name},{img}")
    (data / "items.csv").write_text("\n".join(rows) + "\n")
    seqs = [[1, 2, 5], [3, 6, 7], [4, 8, 1, 5], [2, 3, 6], [7, 8, 4], [1, 5, 6, 2]]
    ev = ["user_id,item_id,position"] + [f"u{u},{i},{p}" for u, s in enumerate(seqs)
                                         for p, i in enumerate(s)]
    (data / "events.csv").write_text("\n".join(ev) + "\n")
    model = _tiny_clip(tmp_path / "clip")
    cfg_path = write_config(tmp_path, {
        "data": {"format": "tables", "items": "data/items.csv", "events": "data/events.csv",
                 "path": None},
        "encoder": {"type": "clip", "model": str(model), "max_length": 16},
        "adapter": {"dim": 8, "hidden": 16, "epochs": 1, "batch_tokens": 32, "negatives": 4},
        "intents": {"k": 3, "top_m": 2, "niter": 3},
        "composer": {"epochs": 1, "batch_tokens": 32, "negatives": 4, "max_len": 5, "heads": 2}})
    manifest = build(load_config(cfg_path))
    assert manifest.dims == {"semantic": 16, "embedding": 9}  # 8 content + the item prior
    assert manifest.counts["items"] == 8
    assert manifest.models["encoder"]["file"] == "encoder/model.onnx"
