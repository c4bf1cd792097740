"""How large a teacher sample does the student need? Held-out cos(student, teacher) and time
against ``encoder.student.teacher_sample``, one table (issue 8).

    python benchmarks/student_sample.py -c examples/food-kitchen/xemb-student.yaml \\
        --samples 2000,5000,10000,20000

The samples are nested, as in a build (a build's sample of size n is the first n items of one
seeded permutation): the teacher encodes the largest once, each smaller one is its prefix. One
held-out set (the build's held-out share of the smallest sample) scores every row, so the rows
differ only in how much the student trained on. Each row trains the configured student
(``--kind`` overrides it) from scratch with the build's own code. "teacher s" is the time the
teacher would spend on that sample (its measured items/s times the sample); "encode stage s"
adds the student's start and training and its encoding of the other items at its measured
torch rate (the build's ONNX graph is no slower): about what a build of this catalogue spends
in its encode stage, export aside.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import _repo  # noqa: E402,F401  (repository root on sys.path)
import numpy as np  # noqa: E402
import torch  # noqa: E402


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _row(cfg, teacher, texts: list[str], vec: np.ndarray, hold: np.ndarray,  # type: ignore[no-untyped-def]
         train: np.ndarray, rest_n: int) -> dict:
    from xemb.embedders.distill import held_out_cos, make_student, train_student

    t0 = time.perf_counter()
    student = make_student(cfg, teacher, texts, log=lambda m: None)
    t_init = time.perf_counter() - t0
    hold_texts = [texts[i] for i in hold]
    t0 = time.perf_counter()
    train_student(student, [texts[i] for i in train], vec[train], log=lambda m: None)
    t_train = time.perf_counter() - t0
    cos = held_out_cos(student, hold_texts, vec[hold])
    probe = [texts[i] for i in hold[:1000]]
    t0 = time.perf_counter()
    student.encode(probe)
    rate = len(probe) / (time.perf_counter() - t0)
    return {"cos": cos, "init_s": t_init, "train_s": t_train, "student_s": rest_n / rate}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-c", "--config", type=Path, required=True)
    ap.add_argument("--samples", default="2000,5000,10000",
                    help="comma-separated teacher sample sizes")
    ap.add_argument("--kind", choices=("static", "layers"), default=None,
                    help="student kind (default: the config's)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    from xemb.embedders.data import load_dataset
    from xemb.embedders.distill import _split, sample_order
    from xemb.embedders.encode import TextEncoder, encode_items
    from xemb.settings import load_config

    over = {"encoder.student.enabled": True}
    if args.kind:
        over["encoder.student.kind"] = args.kind
    full = load_config(args.config, over)
    cfg = full.encoder
    torch.set_num_threads(args.threads)
    texts = load_dataset(full.data).texts
    sizes = sorted(int(s) for s in args.samples.split(","))
    if sizes[-1] > len(texts):
        raise SystemExit(f"--samples: {sizes[-1]} is more than the {len(texts)} items")
    s = cfg.student
    hold, _, _ = _split(len(texts), s.model_copy(update={"teacher_sample": sizes[0]}))
    order = sample_order(len(texts), s)  # the build's: each sample is a prefix of it
    teacher = TextEncoder(cfg)
    big = order[:sizes[-1]]
    _log(f"[student_sample] the teacher encodes {len(big)} items")
    t0 = time.perf_counter()
    vec = np.zeros((len(texts), teacher.dim), np.float32)
    vec[big], _ = encode_items(teacher, [texts[i] for i in big], None,
                               Path(tempfile.mkdtemp(prefix="student-sample-")))
    teacher_rate = len(big) / (time.perf_counter() - t0)
    print(f"\n{platform.processor() or platform.machine()}, {args.threads} threads, "
          f"{len(texts)} items, student kind {s.kind}, {s.epochs} epochs, "
          f"{len(hold)} held-out items (the same for every row), teacher "
          f"{teacher_rate:.0f} items/s")
    print(f"{'teacher_sample':>14} {'trained on':>10} {'held-out cos':>12} {'teacher s':>9} "
          f"{'start s':>7} {'train s':>7} {'student s':>9} {'encode stage s':>14}")
    for n in sizes:
        train = order[:n][~np.isin(order[:n], hold)]  # in the permutation's order
        _log(f"[student_sample] teacher_sample {n}: training on {len(train)} items")
        r = _row(cfg, teacher, texts, vec, hold, train, len(texts) - n)
        t_teacher = n / teacher_rate
        total = t_teacher + r["init_s"] + r["train_s"] + r["student_s"]
        print(f"{n:14d} {len(train):10d} {r['cos']:12.4f} {t_teacher:9.1f} {r['init_s']:7.1f} "
              f"{r['train_s']:7.1f} {r['student_s']:9.1f} {total:14.1f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
