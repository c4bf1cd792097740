"""The report page: one section per topic, each drawn from :class:`ReportInputs` alone, each
saying "not available: <why>" when its input is missing. Images are PNG files beside
``index.html``, referenced relatively, so the folder can be copied or served as is."""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from xemb.embedders import report_plots as plots
from xemb.embedders.evaluate import Ranks, metrics_from_ranks
from xemb.embedders.report import MODEL, IntentView, Missing, ReportInputs, SplitResult
from xemb.store import Manifest

__all__ = ["render", "SECTIONS"]

KS = 50
TOP_INTENTS = 20
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;
max-width:1180px;color:#1d2330;line-height:1.4;padding:0 16px}
h1{font-size:26px;margin-bottom:4px}h2{border-bottom:2px solid #dde3ee;padding-bottom:4px;
margin-top:34px}h3{font-size:16px;margin:18px 0 6px}
table{border-collapse:collapse;margin:8px 0 14px;font-size:13px}
th,td{border:1px solid #d5dbe5;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f1f4f9}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.ours td{font-weight:600;background:#f6fbf4}tr.yard td{color:#555;font-style:italic}
img{max-width:100%;border:1px solid #e3e7ee;margin:6px 0}
.note{background:#fff7e0;border-left:4px solid #e6b400;padding:6px 10px;color:#5a4a00}
.pass{color:#1b7f2a;font-weight:700}.fail{color:#b3261e;font-weight:700}
.muted{color:#667085;font-size:13px}
"""
Section = Callable[[ReportInputs, Path], str]


# ---- small HTML helpers -------------------------------------------------------------------
def _e(x: object) -> str:
    return html.escape(str(x))


def _cell(x: object) -> str:
    if isinstance(x, (float, np.floating)):
        return f'<td class="num">{"" if np.isnan(x) else f"{x:.3f}"}</td>'
    if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
        return f'<td class="num">{x:,}</td>'
    return f"<td>{_e('' if x is None else x)}</td>"


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]],
           classes: Sequence[str] = ()) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers) if any(headers) else ""
    body = "".join(f'<tr class="{classes[i] if i < len(classes) else ""}">'
                   + "".join(_cell(c) for c in row) + "</tr>" for i, row in enumerate(rows))
    return f"<table>{f'<tr>{head}</tr>' if head else ''}{body}</table>"


def _img(name: str, alt: str) -> str:
    return f'<img src="{_e(name)}" alt="{_e(alt)}">'


def _note(why: str) -> str:
    return f'<p class="note">not available: {_e(why)}</p>'


def _section(title: str, *parts: str) -> str:
    return f"<section><h2>{_e(title)}</h2>{''.join(parts)}</section>"


def _value(vals: dict, domain: str, metric: str) -> object:
    v = vals.get(domain, {}).get(metric)
    return np.nan if v is None else int(v) if metric == "n" else float(v)


def _metric_rows(rows: dict[str, dict], domains: list[str], metrics: Sequence[str]
                 ) -> tuple[list[str], list[list[object]]]:
    headers = ["model"] + [f"{d} {m}" for d in domains for m in metrics]
    body: list[list[object]] = [[name] + [_value(vals, d, m) for d in domains for m in metrics]
                                for name, vals in rows.items()]
    return headers, body


# ---- sections -----------------------------------------------------------------------------
def _summary(inp: ReportInputs, out: Path) -> str:
    m = inp.manifest
    rows = [["version", m.version], ["created (UTC)", m.created_at],
            ["domains", ", ".join(m.domains)],
            ["counts", ", ".join(f"{k} {v:,}" for k, v in m.counts.items())],
            ["dims", ", ".join(f"{k} {v}" for k, v in m.dims.items())],
            ["dataset / config hash", f"{m.hashes.get('dataset', '?')} / "
                                      f"{m.hashes.get('config', '?')}"]]
    timings = m.metrics.get("timings_s")
    if timings:
        rows.append(["stage times (s)", ", ".join(f"{k} {v}" for k, v in timings.items())])
    return _section("Version", _table(["", ""], rows))


def _gate(inp: ReportInputs, out: Path) -> str:
    q = inp.manifest.metrics.get("quality")
    if not isinstance(q, dict) or "gate" not in q:
        return _section("Quality gate", _note("the manifest has no quality-gate record "
                                              "(built before the gate existed)"))
    g = q["gate"]
    verdict = ('<span class="pass">PASSED</span>' if g.get("passed")
               else '<span class="fail">FAILED</span>')
    fate = ("made current" if inp.switched_to else "published but not made current")
    if inp.switched_to and not g.get("passed"):
        fate += " (accepted by the user despite the gate)"
    reasons = "".join(f"<li>{_e(r)}</li>" for r in g.get("reasons", []))
    rows = {"candidate (this version)": q.get("candidate", {}),
            **{f"baseline: {k}": v for k, v in q.get("baselines", {}).items()}}
    serving = q.get("serving")
    if serving:
        rows[f"serving version {serving.get('version', '?')}"] = serving.get("metrics", {})
    headers, body = _metric_rows(rows, inp.manifest.domains, ("HR@10", "NDCG@10"))
    return _section(
        "Quality gate", f"<p>{verdict}: {_e(fate)}; split {_e(q.get('split', 'valid'))}, "
        f"tolerance {_e(g.get('tolerance', '?'))}.</p>",
        f"<ul>{reasons}</ul>" if reasons else "", _table(headers, body, ["ours"]))


def _split_metrics(res: SplitResult, domains: list[str], recall_k: int) -> dict[str, dict]:
    return {name: metrics_from_ranks(r, domains, 10, recall_k) for name, r in res.ranks.items()}


def _metrics(inp: ReportInputs, out: Path) -> str:
    domains, parts = inp.manifest.domains, []
    cols = ("HR@10", "NDCG@10", f"Recall@{inp.recall_k}", "n")
    y = inp.yardsticks
    for split, res in inp.splits.items():
        parts.append(f"<h3>{_e(split)}</h3>")
        if isinstance(res, Missing):
            parts.append(_note(res.why))
            continue
        rows = _split_metrics(res, domains, inp.recall_k)
        classes = ["ours" if name == MODEL else "" for name in rows]
        if isinstance(y, dict) and y.get("split", "test") == split:
            for row in y.get("rows", []):
                rows[f"yardstick: {row['name']}"] = row.get("metrics", {})
                classes.append("yard")
        headers, body = _metric_rows(rows, domains, cols)
        parts += [_table(headers, body, classes),
                  _img(plots.metric_bars(rows, domains, out / f"metrics_{split}.png",
                                         split), f"{split} metrics")]
    if isinstance(y, Missing):
        parts.append(f'<p class="muted">Yardsticks not shown: {_e(y.why)}.</p>')
    elif isinstance(y, dict):
        parts.append(f'<p class="muted">Yardsticks: {_e(y.get("source", ""))}.</p>')
    intro = ("<p>HR@10 and NDCG@10 rank each target among sampled negatives of its domain; "
             f"Recall@{inp.recall_k} ranks it in the whole domain. Ties count against the "
             "target. Same code and scores as <code>xemb eval</code>.</p>")
    return _section("Metrics beside baselines and yardsticks", intro, *parts)


def _hr_curve(r: Ranks, d: int) -> np.ndarray:
    s = r.sampled[r.target_domain == d]
    return np.array([(s < k).mean() if len(s) else np.nan for k in range(1, KS + 1)])


def _hr_at_k(inp: ReportInputs, out: Path) -> str:
    domains, parts = inp.manifest.domains, []
    for split, res in inp.splits.items():
        if isinstance(res, Missing):
            parts.append(f"<h3>{_e(split)}</h3>" + _note(res.why))
            continue
        curves = {m: {d: _hr_curve(r, i) for i, d in enumerate(domains)
                      if (r.target_domain == i).any()} for m, r in res.ranks.items()}
        parts.append(_img(plots.hr_curves(curves, domains, out / f"hr_at_k_{split}.png",
                                          split), f"HR@K {split}"))
    return _section(f"HR@K, K = 1..{KS} (sampled negatives)", *parts)


def _ablations(inp: ReportInputs, out: Path) -> str:
    a = inp.ablations
    if isinstance(a, Missing):
        return _section("Ablations", _note(a.why))
    domains = inp.manifest.domains
    headers = ["variant", "description"] + [f"{s} {d} {m}" for s in ("valid", "test")
                                            for d in domains for m in ("HR@10", "NDCG@10")]
    body: list[list[object]] = []
    for r in a["rows"]:
        name = r["variant"] + (" (selected)" if r["variant"] == a.get("selected") else "")
        body.append([name, r.get("description", "")] + [
            float((r.get(s) or {}).get(d, {}).get(m, np.nan)) for s in ("valid", "test")
            for d in domains for m in ("HR@10", "NDCG@10")])
    classes = ["ours" if r["variant"] == a.get("selected") else "" for r in a["rows"]]
    values = {d: [float((r.get("valid") or {}).get(d, {}).get("HR@10", np.nan))
                  for r in a["rows"]] for d in domains}
    chart = plots.ablation_bars([r["variant"] for r in a["rows"]], values,
                                out / "ablations.png")
    return _section("Ablations", _table(headers, body, classes), _img(chart, "ablations"))


def _training(inp: ReportInputs, out: Path) -> str:
    t = inp.manifest.metrics.get("training")
    phases = {k: v for k, v in (t or {}).items() if isinstance(v, list) and v}
    if not phases:
        return _section("Training curves", _note("the manifest has no per-epoch training "
                                                 "record (built before it was kept)"))
    best = {k: int(v) for k, v in (t or {}).get("best_epoch", {}).items()}
    domains, parts = inp.manifest.domains, []
    for phase, epochs in phases.items():
        rows = [[int(e.get("epoch", i + 1)), float(e.get("loss", np.nan))]
                + [float(e.get("valid", {}).get(d, {}).get("HR@10", np.nan)) for d in domains]
                + [float(e.get("valid_score", np.nan))] for i, e in enumerate(epochs)]
        classes = ["ours" if r[0] == best.get(phase) else "" for r in rows]
        parts += [f"<h3>{_e(phase)} (best epoch {best.get(phase, '?')})</h3>",
                  _table(["epoch", "loss"] + [f"valid {d} HR@10" for d in domains]
                         + ["valid score"], rows, classes)]
    img = plots.training_curves(phases, best, domains, out / "training.png")
    return _section("Training curves", _img(img, "training curves"), *parts)


def _short_label(terms: list[str], label: str) -> str:
    return ", ".join(terms[:2]) if terms else label.split(" | ")[0][:28]


def _map_colour(ds_json: str, domains: list[str]) -> float:
    counts = json.loads(ds_json or "{}")
    c = np.array([float(counts.get(d, 0)) for d in domains])
    if len(domains) == 2:
        return float(c[0] / c.sum()) if c.sum() else 0.5
    return float(c.argmax())


def _intent_plot(v: IntentView, domains: list[str], out: Path) -> str:
    x = v.lib.vectors - v.lib.vectors.mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    xy = x @ vt[:2].T if vt.shape[0] >= 2 else np.c_[x @ vt[:1].T, np.zeros(len(x))]
    support = np.asarray(v.lib.support, float)
    top = set(np.argsort(-support, kind="stable")[:TOP_INTENTS].tolist())
    terms = v.lib.top_terms or [[] for _ in support]
    labels = [_short_label(terms[i], v.lib.labels[i]) if i in top else ""
              for i in range(len(support))]
    share = np.array([_map_colour(s, domains) for s in v.lib.domain_support])
    return plots.intent_map(xy, share, support, labels, domains, out / "intents_map.png")


def _intent_table(v: IntentView, domains: list[str]) -> str:
    per = sorted(v.report.get("per_intent", []), key=lambda p: -p["support"])[:TOP_INTENTS]
    terms = v.lib.top_terms or [[] for _ in v.lib.labels]
    headers = ["id", "items (top-1)", "purity", "dominant", "coverage (top-m)", "top terms",
               *[f"label in {d}" for d in domains]]
    rows = [[p["id"], p["support"], p["purity"], p.get("dominant_domain"), p["coverage"],
             ", ".join(terms[p["id"]]), *[p.get("domain_labels", {}).get(d, "")
                                          for d in domains]] for p in per]
    return _table(headers, rows)


def _entropy(inp: ReportInputs, out: Path) -> str:
    got = {s: r for s, r in inp.splits.items() if isinstance(r, SplitResult) and r.entropy}
    if not got:
        return _note("no eval split was scored")
    rows = [[s, r.entropy["n"], r.entropy["mean_voted"], r.entropy["mean_entropy"],
             r.entropy["mean_uniform_entropy"], r.entropy["ratio"], r.entropy["mean_row_ratio"]]
            for s, r in got.items()]
    table = _table(["split", "users", "voted intents (mean)", "entropy (nats)",
                    "uniform entropy", "ratio", "mean per-user ratio"], rows)
    img = plots.entropy_hist({s: r.entropy_ratio for s, r in got.items()},
                             out / "intent_entropy.png")
    return table + _img(img, "intent weight entropy")


def _intents(inp: ReportInputs, out: Path) -> str:
    v, domains = inp.intents, inp.manifest.domains
    if isinstance(v, Missing):
        return _section("Atomic intents", _note(v.why))
    r = v.report
    summary = (f"<p>{r.get('k')} intents over {r.get('items', 0):,} items (top-{r.get('top_m')}"
               f" per item). Mean purity (share of an intent's items from its dominant domain) "
               f"{r.get('purity_mean')}, item-weighted {r.get('purity_weighted')}; "
               f"{r.get('coverage_top1', 0):.0%} of intents are some item's top intent. "
               f'<span class="muted">Figures from {_e(v.source)}.</span></p>')
    return _section("Atomic intents", summary, _img(_intent_plot(v, domains, out), "intent map"),
                    f"<h3>The {TOP_INTENTS} largest intents</h3>", _intent_table(v, domains),
                    "<h3>How spread out composed intent weights are (eval users)</h3>",
                    _entropy(inp, out))


def _latency(inp: ReportInputs, out: Path) -> str:
    b = inp.bench
    if isinstance(b, Missing):
        return _section("Serving latency", _note(b.why))
    cases = [(c["name"], np.asarray(c["latencies_ms"], float)) for c in b["cases"]]
    rows = [[n, len(ms), float(np.percentile(ms, 50)), float(np.percentile(ms, 99)),
             float(ms.mean())] for n, ms in cases]
    note = f'<p class="muted">{_e(b.get("note", ""))}</p>' if b.get("note") else ""
    return _section("Serving latency", note,
                    _table(["case", "calls", "p50 ms", "p99 ms", "mean ms"], rows),
                    _img(plots.latency_hists(cases, out / "latency.png"), "latency"))


SECTIONS: tuple[Section, ...] = (_summary, _gate, _metrics, _hr_at_k, _ablations, _training,
                                 _intents, _latency)


def _describe_note(manifest: Manifest) -> str:
    """How the build used generated descriptions (describe.use), when it had them."""
    d = manifest.params.get("describe")
    if not isinstance(d, dict):
        return ""
    how = {"concat": "joined to the title before encoding",
           "separate": "encoded apart, fused by the adapter"}.get(str(d.get("use")), "")
    cols = ", ".join(str(c) for c in d.get("columns", []))
    return (f'<p class="muted">descriptions: describe.use {_e(str(d.get("use")))} '
            f"({_e(how)}; {_e(cols)})</p>")


def render(inputs: ReportInputs, out: Path) -> Path:
    """Write ``out/index.html`` and its PNGs; returns the page's path."""
    out.mkdir(parents=True, exist_ok=True)
    body = "\n".join(section(inputs, out) for section in SECTIONS)
    title = f"xemb report: {inputs.manifest.version}"
    page = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}'
            f"</title><style>{CSS}</style></head><body><h1>{_e(title)}</h1>"
            f'<p class="muted">domains: {_e(", ".join(inputs.manifest.domains))}</p>'
            f"{_describe_note(inputs.manifest)}{body}</body></html>")
    path = out / "index.html"
    path.write_text(page, encoding="utf-8")
    return path
