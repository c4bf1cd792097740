"""`xemb report` rendering: every plot is a real PNG the page references, every section says
why when its input is missing, and people read titles, not only ids."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("faiss")

from xemb.embedders.evaluate import Ranks  # noqa: E402
from xemb.embedders.intents import IntentLibrary, intent_report  # noqa: E402
from xemb.embedders.report import (  # noqa: E402
    MODEL,
    IntentView,
    Missing,
    ReportInputs,
    SplitResult,
    check_yardsticks,
    read_ablations,
    read_bench,
)
from xemb.embedders.report_html import render  # noqa: E402
from xemb.store import Manifest  # noqa: E402

DOMAINS = ["grocery", "kitchen"]
PNG = b"\x89PNG\r\n\x1a\n"


def _ranks(rng: np.random.Generator, scale: float, n: int = 120) -> Ranks:
    return Ranks(sampled=rng.geometric(scale, n) - 1, full=rng.geometric(scale / 5, n) - 1,
                 target_domain=np.arange(n) % 2)


def _split(rng: np.random.Generator) -> SplitResult:
    ratio = rng.uniform(0.5, 1.0, 60)
    return SplitResult({MODEL: _ranks(rng, 0.08), "popularity": _ranks(rng, 0.01),
                        "text_last5": _ranks(rng, 0.02)},
                       {"n": 60, "mean_entropy": 1.2, "mean_uniform_entropy": 1.5,
                        "ratio": 0.8, "mean_row_ratio": 0.79, "mean_voted": 5.1}, ratio)


def _intents(rng: np.random.Generator, k: int = 30, n: int = 400) -> IntentView:
    dom = np.arange(n) % 2
    ids = np.stack([rng.permutation(k)[:3] for _ in range(n)])
    support = np.bincount(ids[:, 0], minlength=k)
    ds = [json.dumps({d: int(((ids[:, 0] == c) & (dom == i)).sum())
                      for i, d in enumerate(DOMAINS)}) for c in range(k)]
    lib = IntentLibrary(rng.normal(size=(k, 16)).astype(np.float32),
                        [f"Organic green tea {c} | Tea kettle {c}" for c in range(k)], support,
                        ds, ids, np.full((n, 3), 1 / 3, np.float32),
                        [json.dumps({"grocery": f"Organic green tea {c}",
                                     "kitchen": f"Tea kettle {c}"}) for c in range(k)],
                        [[f"tea{c}", "kettle", "green"] for c in range(k)])
    return IntentView(lib, intent_report(lib, dom, DOMAINS), "the manifest")


def _metrics(hr: float) -> dict:
    return {d: {"HR@10": hr, "NDCG@10": hr / 2, "Recall@50": hr / 3, "n": 100} for d in DOMAINS}


def _manifest(full: bool) -> Manifest:
    metrics: dict = {"timings_s": {"encode": 1.0}}
    if full:
        epochs = [{"epoch": e, "loss": 3.0 / e, "valid": _metrics(0.1 * e), "valid_score": 0.1 * e}
                  for e in (1, 2, 3)]
        metrics["training"] = {"adapt": epochs, "compose": epochs[:2],
                               "best_epoch": {"adapt": 3, "compose": 2}}
        metrics["quality"] = {
            "split": "valid", "candidate": _metrics(0.4),
            "baselines": {"popularity": _metrics(0.05), "text_last5": _metrics(0.1)},
            "serving": {"version": "v-old", "metrics": _metrics(0.38)},
            "gate": {"passed": False, "reasons": ["kitchen HR@10 0.30 below popularity 0.35"],
                     "tolerance": 0.01}}
    return Manifest(version="v-test", created_at="2026-01-01T00:00:00+00:00", domains=DOMAINS,
                    dims={"semantic": 384, "embedding": 16}, counts={"items": 400},
                    metrics=metrics)


def _write_inputs(tmp: Path) -> tuple[Path, Path, dict]:
    rows = [{"variant": v, "description": f"the model {d}", "valid": _metrics(hr),
             "test": _metrics(hr - 0.02)}
            for v, d, hr in (("full", "with everything", 0.4), ("no-intents", "without atomic "
                                                                 "intents", 0.37))]
    (tmp / "ablations.json").write_text(json.dumps({"rows": rows, "selected": "full"}))
    lat = np.random.default_rng(1).gamma(4, 0.1, 500).tolist()
    (tmp / "bench.json").write_text(json.dumps({"cases": [
        {"name": "ComposeUserIntent 50-item history", "latencies_ms": lat},
        {"name": "Retrieve k=100", "latencies_ms": [x * 2 for x in lat]}]}))
    yard = {"dataset": "toy", "source": "a README", "split": "test",
            "targets": {"grocery": 60, "kitchen": 60},
            "rows": [{"name": "SASRec", "metrics": _metrics(0.45)}]}
    return tmp / "ablations.json", tmp / "bench.json", yard


def _full_inputs(tmp: Path) -> ReportInputs:
    rng = np.random.default_rng(0)
    abl, bench, yard = _write_inputs(tmp)
    return ReportInputs(
        manifest=_manifest(True), splits={"valid": _split(rng), "test": _split(rng)},
        intents=_intents(rng), ablations=read_ablations(abl), yardsticks=check_yardsticks(
            yard, DOMAINS, {"grocery": 60, "kitchen": 60}), bench=read_bench(bench))


def test_every_plot_is_a_referenced_png(tmp_path: Path) -> None:
    out = tmp_path / "report"
    page = render(_full_inputs(tmp_path), out).read_text()
    referenced = set(re.findall(r'<img src="([^"]+)"', page))
    written = {p.name for p in out.glob("*.png")}
    assert referenced == written
    assert {"metrics_valid.png", "metrics_test.png", "hr_at_k_test.png", "ablations.png",
            "training.png", "intents_map.png", "intent_entropy.png", "latency.png"} <= written
    for name in written:
        data = (out / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000, name
    from PIL import Image

    with Image.open(out / "intents_map.png") as im:
        assert im.size[0] >= 800 and im.size[1] >= 600
    assert "not available" not in page


def test_people_read_titles_verdicts_and_yardsticks(tmp_path: Path) -> None:
    page = render(_full_inputs(tmp_path), tmp_path / "r").read_text()
    assert "Organic green tea 0" in page and "Tea kettle 0" in page and "tea0, kettle" in page
    assert "FAILED" in page and "kitchen HR@10 0.30 below popularity 0.35" in page
    assert "published but not made current" in page and "serving version v-old" in page
    assert "yardstick: SASRec" in page and page.count("yardstick: SASRec") == 1  # test only
    assert "without atomic intents" in page and "full (selected)" in page
    assert "ComposeUserIntent 50-item history" in page and "best epoch 3" in page


def test_the_gate_section_says_whether_the_switch_log_made_it_current(tmp_path: Path) -> None:
    from dataclasses import replace

    switched = replace(_full_inputs(tmp_path), switched_to=True)  # its gate FAILED
    page = render(switched, tmp_path / "s").read_text()
    assert "made current (accepted by the user despite the gate)" in page
    assert "published but not made current" not in page


def test_the_page_says_how_the_build_used_descriptions(tmp_path: Path) -> None:
    from dataclasses import replace

    base = _full_inputs(tmp_path)
    assert "describe.use" not in render(base, tmp_path / "plain").read_text()
    described = base.manifest.model_copy(update={"params": {"describe": {
        "use": "separate", "columns": ["description_general", "description_domain"],
        "dropout": 0.25}}})
    page = render(replace(base, manifest=described), tmp_path / "d").read_text()
    assert ("descriptions: describe.use separate (encoded apart, fused by the adapter; "
            "description_general, description_domain)") in page


def test_missing_inputs_give_notes(tmp_path: Path) -> None:
    inputs = ReportInputs(
        manifest=_manifest(False), splits={"valid": Missing("the dataset has no valid rows"),
                                           "test": _split(np.random.default_rng(2))},
        intents=Missing("intents.parquet not found"),
        ablations=read_ablations(tmp_path / "nope.json"), bench=read_bench(None),
        yardsticks=check_yardsticks({"dataset": "food-kitchen", "split": "test",
                                     "targets": {"grocery": 300, "kitchen": 637}, "rows": []},
                                    DOMAINS, {"grocery": 60, "kitchen": 60}))
    out = tmp_path / "r"
    page = render(inputs, out).read_text()
    for why in ("the dataset has no valid rows", "intents.parquet not found",
                f"no ablations file at {tmp_path / 'nope.json'}", "no benchmark (--bench) file",
                "no quality-gate record", "no per-epoch training record",
                "do not match this build"):
        assert why in page, why
    assert "yardstick:" not in page
    assert set(re.findall(r'<img src="([^"]+)"', page)) == {p.name for p in out.glob("*.png")}


def test_bad_files_are_notes_not_crashes(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "empty.json").write_text(json.dumps({"cases": [{"name": "x"}]}))
    assert "not readable JSON" in read_bench(tmp_path / "bad.json").why  # type: ignore[union-attr]
    assert "no case with latencies_ms" in read_bench(tmp_path / "empty.json").why  # type: ignore[union-attr]
    assert isinstance(read_ablations(tmp_path / "empty.json"), Missing)
