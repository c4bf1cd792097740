"""`xemb report` end to end on the session's tiny build: scores valid and test through the
served path, reads the published intents, and writes a page whose images all exist."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from xemb import layout
from xemb.cli import main

pytestmark = pytest.mark.integration


def test_report_of_a_real_build(tiny_build, tmp_path: Path, capsys) -> None:
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"cases": [{"name": "ComposeUserIntent 50-item history",
                                            "latencies_ms": [0.4, 0.5, 0.45, 0.9] * 50}]}))
    out = tmp_path / "report"
    assert main(["report", "-c", str(tiny_build.config_path), "-o", str(out),
                 "--bench", str(bench)]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == tiny_build.manifest.version
    page = (out / "index.html").read_text()
    images = set(re.findall(r'<img src="([^"]+)"', page))
    assert images == {p.name for p in out.glob("*.png")}
    assert {"metrics_valid.png", "metrics_test.png", "hr_at_k_valid.png", "intents_map.png",
            "intent_entropy.png", "latency.png"} <= images
    assert "no ablations file at" in page  # none was run for this root
    assert "do not match" not in page and "yardstick:" not in page  # no yardsticks file
    intents = pq.read_table(tiny_build.store.path(tiny_build.manifest.version) / layout.INTENTS)
    largest = intents.column("support").to_pylist().index(max(intents.column("support")
                                                              .to_pylist()))
    labels = json.loads(intents.column("domain_labels")[largest].as_py())
    assert labels and all(html.escape(label) in page for label in labels.values())
    assert html.escape(", ".join(intents.column("top_terms")[largest].as_py())) in page
