"""export: trained parts and the frozen encoder to ONNX, with parity against torch checked.

A model whose ONNX Runtime output differs from torch by more than ``parity_tol`` fails the
build (:class:`ParityError`), so a served vector is always the one the trained model meant.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from xemb import layout
from xemb.embedders.device import ort_session
from xemb.errors import ParityError

__all__ = ["export_onnx", "run_ort", "export_encoder"]


def run_ort(sess: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return sess.run(None, feeds)


def export_onnx(module: torch.nn.Module, example: dict[str, torch.Tensor], path: Path,
                outputs: Sequence[str], dynamic: dict[str, dict[int, str]], tol: float,
                check_inputs: list[dict[str, torch.Tensor]] | None = None,
                dynamo: bool = False) -> float:
    """Export ``module`` (called with keyword inputs) and return the max abs difference
    between torch and ONNX Runtime over ``example`` and ``check_inputs`` (which should have
    other batch/sequence sizes, so a shape baked into the graph is caught here).

    The TorchScript exporter is fast and fine for our small models; transformers' encoders
    need the dynamo exporter (the tracer bakes their attention-mask shapes into the graph)."""
    module = module.eval()
    names = list(example)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), _quiet():
        warnings.simplefilter("ignore")
        if dynamo:
            _export_dynamo(module, example, path, outputs, dynamic)
        else:
            torch.onnx.export(
                module, (), str(path), kwargs=dict(example), input_names=names,
                output_names=list(outputs), dynamic_axes=dynamic, opset_version=17,
                dynamo=False)
    sess = ort_session(path)
    # the exporter drops inputs the graph does not use (item_row without per-item vectors)
    kept = {i.name for i in sess.get_inputs()}
    worst = 0.0
    for feeds in [example, *(check_inputs or [])]:
        with torch.inference_mode():
            ref = module(**feeds)
        ref = ref if isinstance(ref, (tuple, list)) else (ref,)
        got = run_ort(sess, {k: v.numpy() for k, v in feeds.items() if k in kept})
        for r, g in zip(ref, got):
            worst = max(worst, float(np.abs(r.numpy() - g).max()))
    if not worst <= tol:  # also catches NaN
        raise ParityError(f"{path.name}: ONNX Runtime differs from torch by {worst:.3g} "
                          f"(tolerance {tol:.0e})")
    return worst


def _export_dynamo(module: torch.nn.Module, example: dict[str, torch.Tensor], path: Path,
                   outputs: Sequence[str], dynamic: dict[str, dict[int, str]]) -> None:
    dims: dict[str, torch.export.Dim] = {}
    shapes = {n: {axis: dims.setdefault(name, torch.export.Dim(name))
                  for axis, name in dynamic.get(n, {}).items()} for n in example}
    torch.onnx.export(module, (), str(path), kwargs=dict(example),
                      input_names=list(example), output_names=list(outputs),
                      dynamic_shapes=shapes, dynamo=True, external_data=False)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter prints progress lines to stdout; keep the build's output readable."""
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def export_encoder(encoder, out_dir: Path, sample_texts: list[str], tol: float,
                   max_length: int) -> float:  # type: ignore[no-untyped-def]
    """Frozen encoder -> ``encoder/model.onnx`` + ``tokenizer.json`` + ``encoder.json``."""
    target = out_dir / layout.ENCODER_ONNX
    example = encoder.tokenize(sample_texts[:4])
    checks = [encoder.tokenize(sample_texts[4:16])] if len(sample_texts) > 4 else None
    diff = export_onnx(encoder.module, example, target, layout.ENCODER_OUTPUTS,
                       {"input_ids": {0: "batch", 1: "tokens"},
                        "attention_mask": {0: "batch", 1: "tokens"}}, tol, checks,
                       dynamo=True)
    encoder.tokenizer.backend_tokenizer.save(str(out_dir / layout.ENCODER_TOKENIZER))
    pad_id = encoder.tokenizer.pad_token_id
    meta = {"max_length": max_length, "pad_id": 0 if pad_id is None else int(pad_id),
            "dim": encoder.dim, "fingerprint": encoder.fingerprint, "parity_max_abs": diff}
    (out_dir / layout.ENCODER_META).write_text(json.dumps(meta, indent=2))
    return diff
