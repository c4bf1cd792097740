"""build.device: how auto/cpu/cuda resolve, the error for cuda without a GPU, and which ONNX
Runtime providers a device gets."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from xemb.embedders.device import ort_providers, resolve_device
from xemb.errors import ConfigError
from xemb.settings.offline import BuildConfig


@pytest.mark.parametrize(("setting", "has_cuda", "expected"), [
    ("auto", True, "cuda"), ("auto", False, "cpu"),
    ("cpu", True, "cpu"), ("cpu", False, "cpu"), ("cuda", True, "cuda")])
def test_resolution(setting: str, has_cuda: bool, expected: str) -> None:
    assert resolve_device(setting, cuda_available=has_cuda) == expected


def test_cuda_without_a_gpu_names_the_field() -> None:
    with pytest.raises(ConfigError, match=r"^build\.device: 'cuda' asked for") as err:
        resolve_device("cuda", cuda_available=False)
    assert err.value.field == "build.device"


def test_auto_follows_what_torch_sees() -> None:
    import torch

    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")


def test_config_default_and_bad_value() -> None:
    assert BuildConfig().device == "auto"
    assert BuildConfig(device="cpu").device == "cpu"
    with pytest.raises(ValidationError, match="device"):
        BuildConfig(device="gpu")  # type: ignore[arg-type]


def test_onnx_runtime_providers() -> None:
    both = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert ort_providers("cuda", both) == both
    assert ort_providers("cuda", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert ort_providers("cpu", both) == ["CPUExecutionProvider"]
    assert ort_providers("cpu") == ["CPUExecutionProvider"]  # the installed ONNX Runtime
