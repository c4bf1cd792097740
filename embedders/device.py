"""Where the offline stages run a model: ``build.device`` resolved once, for torch and for
ONNX Runtime.

``auto`` is ``cuda`` when torch sees a GPU, else ``cpu``; ``cuda`` on a machine without one
is a :class:`~xemb.errors.ConfigError` naming ``build.device``. ONNX Runtime gets its CUDA
provider only where the installed build has it (``onnxruntime-gpu``); otherwise it runs on CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from xemb.errors import ConfigError

if TYPE_CHECKING:
    import onnxruntime as ort

__all__ = ["Device", "resolve_device", "ort_providers", "ort_session"]

Device = Literal["cpu", "cuda"]


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def resolve_device(setting: str, cuda_available: bool | None = None) -> Device:
    """``auto``/``cpu``/``cuda`` -> ``cpu`` or ``cuda`` (``cuda_available``: what torch says,
    unless given)."""
    if setting == "cpu":
        return "cpu"
    has_cuda = _cuda_available() if cuda_available is None else cuda_available
    if setting == "auto":
        return "cuda" if has_cuda else "cpu"
    if setting == "cuda":
        if not has_cuda:
            raise ConfigError("'cuda' asked for, but torch sees no CUDA GPU on this machine "
                              "(use 'auto' or 'cpu', or install a CUDA build of torch)",
                              field="build.device")
        return "cuda"
    raise ConfigError(f"must be auto, cpu or cuda (got {setting!r})",
                      field="build.device")


def ort_providers(device: str, available: list[str] | None = None) -> list[str]:
    """ONNX Runtime execution providers for ``device`` (``available``: what the installed
    ONNX Runtime offers, unless given): CUDA first when asked for and present, CPU always."""
    if available is None:
        import onnxruntime as ort

        available = list(ort.get_available_providers())
    if device == "cuda" and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def ort_session(path: Path | str, threads: int | None = None, device: str = "cpu"
                ) -> ort.InferenceSession:
    """The one way the offline job opens an ONNX graph: ``threads`` intra-op threads (ONNX
    Runtime's default when None), one inter-op thread, on CPU or with the CUDA provider
    first where ``device`` is ``cuda`` and the installed ONNX Runtime has it."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=ort_providers(device))
