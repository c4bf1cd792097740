"""The quality gate: a build whose valid figures are below popularity is published but does
not become CURRENT unless the user accepts it; the CLI says why, with the figures."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import write_config

pytestmark = pytest.mark.integration

# A deliberately broken training config: no learning (lr ~ 0), so the vectors are the random
# initial ones; popularity beats them on valid.
BROKEN = {"adapter": {"dim": 8, "hidden": 16, "epochs": 1, "lr": 1e-12, "batch_tokens": 256,
                      "negatives": 16, "id_embedding": False, "prior": False},
          "intents": {"k": 6, "top_m": 2, "niter": 3},
          "composer": {"epochs": 1, "lr": 1e-12, "batch_tokens": 256, "negatives": 16,
                       "max_len": 8},
          "gate": {"accept": False}}


def _xemb(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xemb.cli", *args], capture_output=True,
                          text=True, timeout=600)


def _popular_world(folder) -> None:
    """Two domains of 60 items; every user's events, and every valid target, come mostly
    from each domain's 5 most popular items, so popularity has a lot to say."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    ids = np.arange(1, 121)
    words = ["pan", "tea", "rice", "knife", "cup", "oil", "salt", "pot", "jar", "mug"]
    pd.DataFrame({"item_id": ids, "domain": ["food"] * 60 + ["home"] * 60,
                  "title": [f"{words[i % 10]} {words[(i * 7) % 10]} no {i}" for i in ids]}
                 ).to_csv(folder / "items.csv", index=False)
    rows = []
    for u in range(160):
        split = "valid" if u >= 120 else "train"
        for pos in range(6):
            base = 0 if (u + pos) % 2 else 60
            item = base + (rng.integers(1, 6) if rng.random() < 0.8 else rng.integers(1, 61))
            rows.append((f"u{u}", int(item), pos, split))
    pd.DataFrame(rows, columns=["user_id", "item_id", "position", "split"]).to_csv(
        folder / "events.csv", index=False)


def test_a_build_below_popularity_is_not_made_current(tmp_path, tiny_bert) -> None:
    from xemb.store import VersionStore

    (tmp_path / "data").mkdir()
    _popular_world(tmp_path / "data")
    cfg = write_config(tmp_path, {**BROKEN, "encoder": {"model": str(tiny_bert)},
                                  "data": {"format": "tables", "path": None,
                                           "items": "data/items.csv",
                                           "events": "data/events.csv"}})
    run = _xemb("build", "-c", str(cfg))
    assert run.returncode == 3, run.stderr[-2000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["current"] is False and out["gate"]["passed"] is False
    assert any("below popularity" in r for r in out["gate"]["reasons"])
    assert "is published but NOT current" in run.stderr
    assert "baseline popularity" in run.stderr  # the figures it was compared with
    store = VersionStore(tmp_path / "root")
    assert store.current_or_none() is None
    version = out["version"]
    assert version in store.list_ids()  # published: listable, selectable
    quality = store.manifest(version).metrics["quality"]
    pop = quality["baselines"]["popularity"]
    assert any(m["HR@10"] < pop[d]["HR@10"] for d, m in quality["candidate"].items())
    listed = json.loads(_xemb("versions", "-c", str(cfg)).stdout)
    shown = next(v for v in listed if v["version"] == version)
    assert shown["valid"]["gate_passed"] is False and shown["valid"]["gate_reasons"]
    assert set(shown["valid"]["xemb"]) == {"food", "home"}
    # a rerun changes nothing; with --accept the same version becomes current, not a new one
    again = _xemb("build", "-c", str(cfg))
    assert again.returncode == 3 and store.current_or_none() is None
    accepted = _xemb("build", "-c", str(cfg), "--accept")
    assert accepted.returncode == 0, accepted.stderr[-2000:]
    assert store.current_or_none() == version


def test_verdict_rules() -> None:
    from xemb.embedders.gate import verdict

    pop = {"a": {"HR@10": 0.2}, "b": {"HR@10": 0.1}}
    good = {"a": {"HR@10": 0.3}, "b": {"HR@10": 0.3}}
    assert verdict(good, pop, None, 0.01) == []
    assert len(verdict({"a": {"HR@10": 0.19}, "b": {"HR@10": 0.3}}, pop, None, 0.01)) == 1
    serving = {"a": {"HR@10": 0.32}, "b": {"HR@10": 0.32}}
    assert verdict(good, pop, serving, 0.05) == []  # within the tolerance
    assert "serving version" in verdict(good, pop, serving, 0.01)[0]


def test_events_without_split_hold_out_their_own_valid_users(tmp_path, tiny_bert) -> None:
    """A user's own data (no split column): the build holds out valid users itself, selects
    on them, and reports their figures in the manifest."""
    import pandas as pd

    from xemb.embedders.pipeline import build, prepare
    from xemb.settings import load_config

    (tmp_path / "data").mkdir()
    _popular_world(tmp_path / "data")
    events = pd.read_csv(tmp_path / "data" / "events.csv").drop(columns=["split"])
    events.to_csv(tmp_path / "data" / "events.csv", index=False)
    overrides = {**BROKEN, "encoder": {"model": str(tiny_bert)},
                 "data": {"format": "tables", "path": None, "items": "data/items.csv",
                          "events": "data/events.csv", "valid_users": 20},
                 "adapter": {**BROKEN["adapter"], "lr": 2e-3, "epochs": 2},
                 "gate": {"accept": True}}
    cfg = load_config(write_config(tmp_path, overrides))
    ctx = prepare(cfg)
    valid = ctx.ds.sequences["valid"]
    assert len(valid) == 20
    trained = dict(ctx.ds.sequences["train"])
    assert all(len(trained[u]) == len(s) - 1 for u, s in valid)  # targets never trained on
    manifest = build(cfg)
    quality = manifest.metrics["quality"]
    assert sum(m["n"] for m in quality["candidate"].values()) == 20
    epochs = manifest.metrics["training"]["adapt"]
    assert len(epochs) >= 1 and all("valid_score" in e for e in epochs)
