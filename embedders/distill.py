"""distill: a light student encoder trained to reproduce the teacher's vectors (RGCD-Rep style).

The teacher (the configured ``encoder``) encodes a seeded sample of the items; the student (the
teacher's first ``k`` layers, a smaller local checkpoint, or a static token-vector model:
embedders/static_student.py) learns on that sample with a cosine loss plus in-batch relational
KD (its softmax over in-batch similarities matches the teacher's), is exported to ONNX
(optionally int8, parity then checked as cosine), and encodes every other item (and, with
``sample_vectors: student``, the default, the sample items too: one space for all). The student
is what a version publishes as ``encoder/``, so cold start uses it too. ``cos(student,
teacher)`` is measured on sample items held out of training.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from xemb import layout
from xemb.embedders.encode import (
    Encoder,
    OnnxTextEncoder,
    PooledTextEncoding,
    TextEncoder,
    TextPooler,
    _load_tokenizer,
    _model_fingerprint,
    encode_items,
    semantic_file,
)
from xemb.embedders.static_student import StaticStudentEncoder
from xemb.errors import ConfigError, ParityError
from xemb.settings.offline import EncoderConfig, StudentConfig

__all__ = ["Student", "StudentEncoder", "distill_loss", "make_student", "student_key",
           "encode_with_student", "held_out_cos", "quantize_int8", "sample_order",
           "student_record", "RECORD"]

RECORD = "distill.json"  # in the encode stage's output: what the manifest reports
FP32_ONNX = "student/model.fp32.onnx"
CODE_VERSION = "1"  # bump when a change to the distillation changes its output


def student_key(cfg: EncoderConfig) -> list[object]:
    """What the encode stage's output also depends on when a student is on (nothing if off);
    the student checkpoint counts by content, not by where it lives."""
    s = cfg.student
    if not s.enabled:
        return []
    ckpt = _model_fingerprint(s.model, cfg) if s.model else None
    dump = s.model_dump(mode="json", exclude={"model"} | _unkeyed_at_default(s))
    return [dump, ckpt, CODE_VERSION]


# settings added later: left out of the key at their defaults, so older configs keep theirs
_ADDED_LATER = ("lr_schedule", "int8_ffn_out")


def _unkeyed_at_default(s: StudentConfig) -> set[str]:
    return {k for k in _ADDED_LATER if getattr(s, k) == StudentConfig.model_fields[k].default}


@contextlib.contextmanager
def _quiet_load() -> Iterator[None]:
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def _depth(encoder: TextEncoder) -> int:
    """Transformer layers of a text encoder's checkpoint (0 if it does not say)."""
    config = getattr(encoder.module.model, "config", None)
    return int(getattr(config, "num_hidden_layers", 0) or 0)


class StudentPooler(torch.nn.Module):
    """Student transformer + pooling (+ a projection to the teacher's width) + L2 norm."""

    def __init__(self, model: torch.nn.Module, pooling: str, width: int, target: int,
                 projection: bool) -> None:
        super().__init__()
        self.pooler = TextPooler(model, pooling)
        self.proj = torch.nn.Linear(width, target) if projection or width != target else None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.pooler(input_ids, attention_mask)
        return x if self.proj is None else F.normalize(self.proj(x), dim=-1)

    def optimizers(self, lr: float) -> list[torch.optim.Optimizer]:
        return [torch.optim.AdamW(self.parameters(), lr=lr)]


class StudentEncoder(PooledTextEncoding):
    """The student, with the interface of a ``TextEncoder`` (tokenize, module, encode)."""

    progress = "encode (student)"
    module: StudentPooler

    def __init__(self, cfg: EncoderConfig, teacher: TextEncoder) -> None:
        from transformers import AutoModel

        s = cfg.student
        self.cfg = cfg
        self.path = s.model or teacher.path
        if not self.path.is_dir():
            raise ConfigError(f"encoder.student.model: no such folder {self.path}")
        extra = {} if s.model else {"num_hidden_layers": s.layers}
        if not s.model:
            depth = _depth(teacher)
            if depth and s.layers >= depth:
                raise ConfigError(f"encoder.student.layers: {s.layers} is not fewer than the "
                                  f"teacher's {depth} layers")
        self.tokenizer = _load_tokenizer(self.path)
        torch.manual_seed(s.seed)
        try:
            with _quiet_load():  # the unused upper layers are reported otherwise
                model = AutoModel.from_pretrained(str(self.path), local_files_only=True,
                                                  **extra)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"encoder.student: cannot load {self.path}: {exc}") from exc
        self.module = StudentPooler(model, cfg.pooling, int(model.config.hidden_size),
                                    teacher.dim, s.projection).eval()
        self.dim = teacher.dim
        self.layers = int(model.config.num_hidden_layers)
        self.fingerprint = ""  # set once trained (it depends on the training data)


Student = StudentEncoder | StaticStudentEncoder
Remote = Callable[[Encoder, "Path | None", "Student | None"], Encoder]
"""(encoder, its ONNX graph or None, an object the replicas copy or None) -> the same
encoder with its batches run elsewhere (the Ray engine's ``RayEncoder``)."""


def make_student(cfg: EncoderConfig, teacher: TextEncoder, texts: list[str],
                 log: Callable[[str], None] = print) -> Student:
    """The configured kind of student, untrained (a static one is started from the teacher's
    token vectors of ``texts``)."""
    if cfg.student.kind == "static":
        return StaticStudentEncoder(cfg, teacher, texts, log)
    return StudentEncoder(cfg, teacher)


def distill_loss(s: torch.Tensor, t: torch.Tensor, relational_weight: float,
                 temperature: float) -> torch.Tensor:
    """``1 - cos(s, t)`` per item, plus KL(teacher || student) between their softmaxes over
    each item's in-batch similarities (the diagonal left out). Rows are unit length."""
    loss = (1 - (s * t).sum(-1)).mean()
    n = len(s)
    if relational_weight == 0 or n < 3:
        return loss
    off = ~torch.eye(n, dtype=torch.bool, device=s.device)
    ls = ((s @ s.T)[off].view(n, n - 1) / temperature).log_softmax(-1)
    lt = ((t @ t.T)[off].view(n, n - 1) / temperature).log_softmax(-1)
    return loss + relational_weight * F.kl_div(ls, lt, log_target=True, reduction="batchmean")


@torch.inference_mode()
def init_projection(student: Student, texts: list[str], targets: np.ndarray,
                    ridge: float = 0.1) -> None:
    """Least-squares map from the student's pooled vectors to the teacher's (a good start:
    the head then only fine-tunes)."""
    proj = getattr(student.module, "proj", None)
    if proj is None or not texts:
        return
    x = torch.cat([student.module.pooler(**{k: v.to(student.device) for k, v in
                                            student.tokenize(texts[i:i + 256]).items()})
                   for i in range(0, len(texts), 256)]).double()
    y = torch.from_numpy(targets).double().to(x.device)
    eye = torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    w = torch.linalg.solve(x.T @ x + ridge * eye, x.T @ y)
    proj.weight.copy_(w.T.to(proj.weight.dtype))
    proj.bias.zero_()


def train_student(student: Student, texts: list[str], targets: np.ndarray,
                  log: Callable[[str], None]) -> list[float]:
    """Fit the student to the teacher's vectors; returns the mean loss of each epoch."""
    s = student.cfg.student
    module = student.module.eval()  # dropout off: the targets are deterministic
    opts = module.optimizers(s.learning_rate)
    total_steps = s.epochs * -(-len(texts) // s.batch_size)
    scheds = [_schedule(opt, s.lr_schedule, total_steps) for opt in opts]
    gen = torch.Generator().manual_seed(s.seed)
    device = student.device
    target = torch.from_numpy(targets).to(device)
    losses = []
    for epoch in range(s.epochs):
        perm, total, steps = torch.randperm(len(texts), generator=gen), 0.0, 0
        starts = range(0, len(texts), s.batch_size)
        for b in tqdm(starts, desc=f"distill: epoch {epoch + 1}/{s.epochs}", unit="batch",
                      disable=len(starts) < 50, leave=False):
            idx = perm[b:b + s.batch_size]
            feeds = student.tokenize([texts[i] for i in idx])
            pred = module(**{k: v.to(device) for k, v in feeds.items()})
            loss = distill_loss(pred, target[idx.to(device)], s.relational,
                                s.temperature)
            for opt in opts:
                opt.zero_grad()
            loss.backward()
            for opt, sched in zip(opts, scheds, strict=True):
                opt.step()
                sched.step()
            total, steps = total + loss.item(), steps + 1
        losses.append(round(total / max(steps, 1), 5))
        log(f"distill: epoch {epoch + 1}/{s.epochs} loss {losses[-1]:.4f}")
    return losses


def _schedule(opt: torch.optim.Optimizer, kind: str,
              total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The learning-rate factor per step: 1 throughout, or 1 falling linearly to 0."""
    if kind == "linear":
        return torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: max(0.0, 1.0 - step / max(total_steps, 1)))
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)


def held_out_cos(student: Student, texts: list[str], teacher: np.ndarray) -> float:
    """Mean cosine between the student's and the teacher's vectors of the same items."""
    if not texts:
        return float("nan")
    return float((student.encode(texts) * teacher).sum(1).mean())


def quantize_int8(fp32: Path, dst: Path, ffn_out: bool = True) -> None:
    """Dynamic int8 quantization of the weights (activations quantized per call), one scale
    per output channel: per-tensor scales cost MiniLM cosine 0.96 (min 0.93) against fp32,
    per-channel 0.99 (min 0.986) on food-kitchen titles. ``ffn_out=False`` keeps the
    feed-forward output projections (every MatMul whose weight narrows the width) in fp32:
    their inputs come out of the GELU with the widest range, and they were the layers whose
    int8 cost the 3-layer food-kitchen student most cosine (README)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    dst.parent.mkdir(parents=True, exist_ok=True)
    keep = [] if ffn_out else narrowing_matmuls(fp32)
    quantize_dynamic(str(fp32), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                     nodes_to_exclude=keep)


def narrowing_matmuls(graph: Path) -> list[str]:
    """Names of the MatMul nodes whose constant weight maps a wider input to a narrower
    output (rows > columns): a transformer's feed-forward output projections."""
    import onnx

    model = onnx.load(str(graph), load_external_data=False)
    shapes = {t.name: list(t.dims) for t in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and len(
        dims := shapes.get(n.input[1], [])) == 2 and dims[0] > dims[1]]


def _int8_parity(student: Student, onnx: Path, texts: list[str], floor: float) -> float:
    """Lowest cosine between the fp32 student (torch) and its int8 graph on ``texts``."""
    ref = student.encode(texts)
    got = OnnxTextEncoder(student, onnx).encode(texts)  # type: ignore[arg-type]
    worst = float((ref * got).sum(1).min())
    if not worst >= floor:
        raise ParityError(f"{onnx.name}: int8 student vectors reach only cosine {worst:.4f} "
                          f"with fp32 (encoder.student.int8_min_cos {floor})")
    return worst


def _export(student: Student, out: Path, texts: list[str], tol: float) -> dict:
    """fp32 ONNX with parity against torch; with ``quantize``, the published graph is int8."""
    from xemb.embedders.export import export_encoder

    s = student.cfg.student
    rec: dict = {"parity_max_abs": export_encoder(student, out, texts, tol,
                                                  student.cfg.max_length)}
    if s.quantize:
        fp32 = out / FP32_ONNX
        fp32.parent.mkdir(parents=True, exist_ok=True)
        os.replace(out / layout.ENCODER_ONNX, fp32)
        quantize_int8(fp32, out / layout.ENCODER_ONNX, s.int8_ffn_out)
        rec["int8_min_cos"] = round(_int8_parity(student, out / layout.ENCODER_ONNX, texts,
                                                 s.int8_min_cos), 6)
    rec["precision"] = "int8" if s.quantize else "fp32"
    meta = json.loads((out / layout.ENCODER_META).read_text())
    meta["student"] = {"kind": s.kind, "layers": student.layers, "precision": rec["precision"]}
    (out / layout.ENCODER_META).write_text(json.dumps(meta, indent=2))
    return rec


def sample_order(n: int, s: StudentConfig) -> np.ndarray:
    """The seeded permutation of ``n`` items whose first ``teacher_sample`` are the teacher
    sample (so a smaller sample is a prefix of a larger one)."""
    return np.random.default_rng(s.seed).permutation(n)


def _split(n: int, s: StudentConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(held-out, training, student-encoded) item rows: a seeded sample for the teacher."""
    perm = sample_order(n, s)
    sample = perm[: min(s.teacher_sample, n)]
    n_hold = max(1, round(s.holdout * len(sample)))
    return np.sort(sample[:n_hold]), np.sort(sample[n_hold:]), np.sort(perm[len(sample):])


def encode_with_student(cfg: EncoderConfig, texts: list[str], out: Path, cache_dir: Path,
                        parity_tol: float, threads: int | None,
                        log: Callable[[str], None], device: str = "cpu",
                        vectors_path: Path | None = None, remote: Remote | None = None
                        ) -> tuple[np.ndarray, Encoder]:
    """Teacher vectors for the sample (kept there with ``sample_vectors: teacher``), student
    vectors for the rest, or for every item by default (written batch by batch
    into a memory-mapped ``vectors_path`` when given); teacher and student run on ``device``
    (the export on CPU). The student's ONNX export (``encoder/``) and ``distill.json``
    (held-out cosine, timings) land in ``out``. Returns the vectors and the trained student
    as it encoded the rest (its published graph with ``backend: onnx``), for other texts
    of the build (``describe.use: separate``'s descriptions).

    ``remote`` (the Ray engine's ``RayEncoder``) runs the two per-item passes, the teacher's
    over the sample and the student's over the catalogue, on its replicas, in the batches
    the local encoders form (so the same vectors); training stays here."""
    if cfg.type != "text":
        raise ConfigError("encoder.student needs encoder.type: text")
    teacher = TextEncoder(cfg).to(device)
    hold, train, rest = _split(len(texts), cfg.student)
    sample = np.sort(np.concatenate([hold, train]))
    t0 = time.perf_counter()
    vec = (semantic_file(vectors_path, len(texts), teacher.dim) if vectors_path is not None
           else np.zeros((len(texts), teacher.dim), np.float32))
    vec[sample], n_new = encode_items(remote(teacher, None, None) if remote else teacher,
                                      [texts[i] for i in sample], None, cache_dir)
    t_teacher = time.perf_counter() - t0
    t0 = time.perf_counter()
    student = make_student(cfg, teacher, texts, log).to(device)
    t_init = time.perf_counter() - t0  # a static student's token vectors come from the teacher
    hold_texts = [texts[i] for i in hold]
    rec: dict = {"kind": cfg.student.kind, "teacher_items": len(sample), "teacher_encoded": n_new,
                 "held_out": len(hold), "trained_on": len(train), "student_items": len(rest),
                 "layers": {"teacher": _depth(teacher),
                            "student": student.layers},
                 "cos_untrained": round(held_out_cos(student, hold_texts, vec[hold]), 6)}
    t0 = time.perf_counter()
    init_projection(student, [texts[i] for i in train], vec[train])
    if getattr(student.module, "proj", None) is not None:
        rec["cos_projection_init"] = round(held_out_cos(student, hold_texts, vec[hold]), 6)
    rec["loss"] = train_student(student, [texts[i] for i in train], vec[train], log)
    rec["train_s"] = round(time.perf_counter() - t0, 2)
    rec["cos_held_out"] = round(held_out_cos(student, hold_texts, vec[hold]), 6)
    student.fingerprint = _fingerprint(teacher.fingerprint, cfg, texts, sample)
    log(f"distill: cos(student, teacher) on {len(hold)} held-out items "
        f"{rec['cos_untrained']:.4f} untrained -> {rec['cos_held_out']:.4f}")
    bulk: Student | OnnxTextEncoder = student
    if cfg.export_onnx:
        rec["export"] = _export(student.to("cpu"), out, texts[:64], parity_tol)
        student.to(device)
        if cfg.backend == "onnx":
            bulk = OnnxTextEncoder(student, out / layout.ENCODER_ONNX,  # type: ignore[arg-type]
                                   threads, device)
    if bulk is not student:  # the graph that encodes the rest and cold-start items
        rec["cos_held_out_served"] = round(float(
            (bulk.encode(hold_texts) * vec[hold]).sum(1).mean()), 6)
    if remote is not None:  # replicas get the trained student, on CPU to travel
        onnx = out / layout.ENCODER_ONNX if isinstance(bulk, OnnxTextEncoder) else None
        bulk = remote(bulk, onnx, student.to("cpu"))
    t0 = time.perf_counter()
    rows = rest if cfg.student.sample_vectors == "teacher" else np.arange(len(texts))
    for idx, v in bulk.batches([texts[i] for i in rows]):  # streamed into vec
        vec[rows[idx]] = v
    rec["sample_vectors"], rec["student_items"] = cfg.student.sample_vectors, len(rows)
    rec["timings_s"] = {"teacher": round(t_teacher, 2), "student_init": round(t_init, 2),
                        "student": round(time.perf_counter() - t0, 2)}
    rec["fingerprint"] = student.fingerprint
    (out / RECORD).write_text(json.dumps(rec, indent=2))
    if isinstance(vec, np.memmap):
        vec.flush()
    return vec, bulk


def _fingerprint(teacher_fp: str, cfg: EncoderConfig, texts: list[str],
                 sample: np.ndarray) -> str:
    h = hashlib.sha256(teacher_fp.encode())
    h.update(json.dumps(student_key(cfg), sort_keys=True, default=str).encode())
    for i in sample:
        h.update(texts[i].encode("utf-8") + b"\0")
    return "student-" + h.hexdigest()[:16]


def student_record(encode_out: Path) -> dict | None:
    """The encode stage's distillation record (None when no student was trained)."""
    path = encode_out / RECORD
    return json.loads(path.read_text()) if path.is_file() else None
