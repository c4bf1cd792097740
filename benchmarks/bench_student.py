"""Teacher vs distilled student: encode items/s under torch and ONNX Runtime, fp32 and int8,
on titles outside the teacher sample (or held out of it; none of them trained the student), one
table (issue 8).

    python benchmarks/bench_student.py -c examples/food-kitchen/xemb-student.yaml

The student is the trained one from the config's build root when its encode stage is there
(its held-out cos(student, teacher) and stage timings are then printed too); otherwise the
untrained student of the configured kind (the teacher's first k layers, or static token
vectors), which runs at the same speed. ONNX graphs are exported into a temp folder.

With ``--teacher-config`` (the same data built without a student, e.g. ``xemb.yaml``) and
both builds published, a second table puts the two current versions' valid and test HR@10 /
NDCG@10 side by side, each scored on the served path (``xemb eval``'s). Test is for the
report: choose between the builds on valid.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from xemb import layout  # noqa: E402
from xemb.embedders.distill import (  # noqa: E402
    FP32_ONNX,
    _split,
    make_student,
    quantize_int8,
    student_record,
)
from xemb.embedders.encode import OnnxTextEncoder, TextEncoder  # noqa: E402
from xemb.embedders.export import export_encoder  # noqa: E402
from xemb.settings import load_config  # noqa: E402


def _rate(encoder, texts: list[str]) -> tuple[float, np.ndarray]:  # type: ignore[no-untyped-def]
    encoder.encode(texts[:64])  # warm-up
    t0 = time.perf_counter()
    out = encoder.encode(texts)
    return len(texts) / (time.perf_counter() - t0), out


def _torch_int8(encoder):  # type: ignore[no-untyped-def]
    """A copy of a torch encoder with its Linear layers dynamically quantized to int8 (torch's
    own quantization, CPU; ``torch.ao`` marks it deprecated in favour of torchao)."""
    import copy
    import warnings

    from torch.ao.quantization import quantize_dynamic

    q = copy.copy(encoder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q.module = quantize_dynamic(copy.deepcopy(encoder.module), {torch.nn.Linear},
                                    dtype=torch.qint8)
    return q


def _trained_graphs(cfg) -> tuple[Path, Path, dict] | None:  # type: ignore[no-untyped-def]
    """The build's student graphs (fp32, int8) and its distillation record, if built."""
    from xemb.embedders.pipeline import prepare

    ctx = prepare(cfg)
    if not ctx.cache.has("encode", ctx.keys["encode"]):
        return None
    out = ctx.out("encode")
    rec = student_record(out)
    if rec is None or not (out / FP32_ONNX).is_file():
        return None
    return out / FP32_ONNX, out / layout.ENCODER_ONNX, rec


def _describe(s, student) -> str:  # type: ignore[no-untyped-def]
    return ("static token vectors" if s.kind == "static" else
            f"first {student.layers} layers")


def _quality_rows(configs: dict[str, str], root: str | None) -> None:
    """Valid and test HR@10 / NDCG@10 per domain of each config's current version."""
    from xemb.embedders.data import load_dataset
    from xemb.embedders.evaluate import served_metrics
    from xemb.store import VersionStore

    table = []
    for name, path in configs.items():
        cfg = load_config(path, {"build.root": root} if root and name == "student" else None)
        store = VersionStore(cfg.build.root)
        version = store.current()
        if version is None:
            raise SystemExit(f"{path}: no published version under {cfg.build.root}")
        ds, e = load_dataset(cfg.data), cfg.eval
        max_len = int(store.manifest(version).params["composer_max_len"])
        got = {split: served_metrics(store.path(version), ds, split, max_len, e.negatives,
                                     e.seed, e.recall_k) for split in ("valid", "test")}
        table.append((f"{name} ({Path(path).name}, {version})", ds.domains, got))
    domains = table[0][1]
    head = " | ".join(f"{split} {d} HR@10 / NDCG@10" for split in ("valid", "test")
                      for d in domains)
    print(f"\n| build | {head} |\n|---|" + "---|" * (2 * len(domains)))
    for name, _, got in table:
        cells = " | ".join(f"{got[split][d]['HR@10']:.3f} / {got[split][d]['NDCG@10']:.3f}"
                           for split in ("valid", "test") for d in domains)
        print(f"| {name} | {cells} |")
    (_, _, t), (_, _, st) = table
    diffs = " | ".join(f"{st[split][d]['HR@10'] - t[split][d]['HR@10']:+.3f} / "
                       f"{st[split][d]['NDCG@10'] - t[split][d]['NDCG@10']:+.3f}"
                       for split in ("valid", "test") for d in domains)
    print(f"| student - teacher | {diffs} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-c", "--config", required=True)
    ap.add_argument("--root", help="build root (default: the config's)")
    ap.add_argument("-n", type=int, default=1000,
                    help="titles encoded (a seeded sample of the items outside the teacher sample, "
                         "or of its held-out items when it covers the catalogue)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--teacher-config",
                    help="the teacher build's config (same data, no student): adds the valid "
                         "and test HR@10 / NDCG@10 of both builds, side by side")
    args = ap.parse_args()
    cfg = load_config(args.config, {"build.root": args.root} if args.root else None)
    torch.set_num_threads(args.threads)
    from xemb.embedders.data import load_dataset

    texts = load_dataset(cfg.data).texts
    hold, _, rest = _split(len(texts), cfg.encoder.student)
    # items outside the teacher sample; when the sample is the whole catalogue, its held-out
    # items (the student trained on neither)
    pool, unseen = (rest, "outside the teacher sample") if len(rest) else (hold, "held out")
    texts = [texts[i] for i in np.random.default_rng(0).permutation(pool)[:args.n]]
    teacher, tmp = TextEncoder(cfg.encoder), Path(tempfile.mkdtemp(prefix="bench-student-"))
    student = make_student(cfg.encoder, teacher, texts, log=lambda m: None)
    built = _trained_graphs(cfg)
    if built is None:
        export_encoder(student, tmp / "s", texts, 1e-4, cfg.encoder.max_length)
        quantize_int8(tmp / "s" / layout.ENCODER_ONNX, tmp / "s" / "int8.onnx",
                      cfg.encoder.student.int8_ffn_out)
        s32, s8, rec = tmp / "s" / layout.ENCODER_ONNX, tmp / "s" / "int8.onnx", None
    else:
        s32, s8, rec = built
    export_encoder(teacher, tmp / "t", texts, 1e-4, cfg.encoder.max_length)
    quantize_int8(tmp / "t" / layout.ENCODER_ONNX, tmp / "t" / "int8.onnx")
    runs = {("teacher", "torch", "fp32"): teacher,
            ("teacher", "onnx", "fp32"): OnnxTextEncoder(teacher, tmp / "t" / layout.ENCODER_ONNX,
                                                        args.threads),
            ("teacher", "onnx", "int8"): OnnxTextEncoder(teacher, tmp / "t" / "int8.onnx",
                                                        args.threads),
            ("student", "onnx", "fp32"): OnnxTextEncoder(student, s32,  # type: ignore[arg-type]
                                                        args.threads),
            ("student", "onnx", "int8"): OnnxTextEncoder(student, s8,  # type: ignore[arg-type]
                                                        args.threads)}
    # torch student: the first k layers as loaded (the trained weights live in the graphs);
    # the same speed, but its cosine is the untrained one when a trained student exists
    runs[("student", "torch", "fp32")] = student
    runs[("teacher", "torch", "int8")] = _torch_int8(teacher)
    runs[("student", "torch", "int8")] = _torch_int8(student)
    order = [(w, b, d) for w in ("teacher", "student") for b in ("torch", "onnx")
             for d in ("fp32", "int8")]
    runs = {k: runs[k] for k in order}
    results = {k: _rate(enc, texts) for k, enc in runs.items()}
    ref_rate, ref = results[("teacher", "torch", "fp32")]
    print(f"\n{platform.processor() or platform.machine()}, {args.threads} threads, "
          f"{len(texts)} titles {unseen}, batch {cfg.encoder.batch_size}, "
          f"student = {_describe(cfg.encoder.student, student)} "
          f"({'trained' if built else 'untrained'})")
    print(f"{'model':8} {'backend':8} {'dtype':6} {'items/s':>9} {'x teacher':>10} "
          f"{'cos vs teacher torch':>21}")
    for (who, backend, dtype), (rate, vec) in results.items():
        cos = f"{float((vec * ref).sum(1).mean()):.4f}"
        if built is not None and (who, backend) == ("student", "torch"):  # not the trained
            cos = "(untrained) " + cos
        print(f"{who:8} {backend:8} {dtype:6} {rate:9.0f} {rate / ref_rate:10.2f} {cos:>21}")
    if rec is not None:
        print(f"held-out cos(student, teacher) from the build: {rec['cos_held_out']:.4f} "
              f"(served int8 graph {rec.get('cos_held_out_served', float('nan')):.4f}, "
              f"untrained {rec['cos_untrained']:.4f}, {rec['held_out']} items)")
        t = rec.get("timings_s", {})
        print(f"build's encode stage: teacher {t.get('teacher')} s on {rec['teacher_items']} "
              f"items, training {rec['train_s']} s, student {t.get('student')} s on "
              f"{rec['student_items']} items")
    if args.teacher_config:
        _quality_rows({"teacher": args.teacher_config, "student": args.config}, args.root)


if __name__ == "__main__":
    main()
