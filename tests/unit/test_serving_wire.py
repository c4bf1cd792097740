"""Vectors on the wire: packed little-endian float32 with shape, checked on the way in."""

from __future__ import annotations

import numpy as np
import pytest

from xemb.errors import InvalidArgument
from xemb.serving.wire import from_tensor, to_tensor
from xemb.settings.serving import ServingConfig
from xemb.v1 import xemb_pb2 as pb


def test_round_trip_is_bit_identical():
    a = np.random.default_rng(0).normal(size=(7, 5)).astype(np.float32)
    t = to_tensor(a)
    assert list(t.shape) == [7, 5] and t.data == a.astype("<f4").tobytes()
    assert np.array_equal(from_tensor(pb.Tensor.FromString(t.SerializeToString())), a)


def test_float64_input_is_packed_as_float32():
    assert len(to_tensor(np.ones(3)).data) == 12


@pytest.mark.parametrize(("tensor", "field"), [
    (pb.Tensor(data=b"\0" * 12, shape=[4]), "v.data"),
    (pb.Tensor(data=b"", shape=[]), "v.shape"),
    (pb.Tensor(data=b"", shape=[-1]), "v.shape"),
    (to_tensor(np.ones(3)), "v"),
    (pb.Tensor(data=b"", shape=[2**58, 64]), "v.data"),  # 2^64 elements: int64 wraps to 0
    (pb.Tensor(data=b"", shape=[2**63 - 1, 2**63 - 1, 4]), "v.data"),
    (pb.Tensor(data=b"", shape=[1] * 9 + [4]), "v.shape"),
])
def test_malformed_tensors_name_the_field(tensor, field):
    with pytest.raises(InvalidArgument) as exc:
        from_tensor(tensor, "v", width=4)
    assert exc.value.field == field and str(exc.value).startswith(field)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_rejected(bad):
    with pytest.raises(InvalidArgument, match="NaN or Inf"):
        from_tensor(to_tensor(np.array([1.0, bad])), "vector", finite=True)


def test_serving_config_checks_tls_pairs():
    with pytest.raises(ValueError, match="go together"):
        ServingConfig(tls_cert_file="a.pem")
    with pytest.raises(ValueError, match="mutual TLS"):
        ServingConfig(tls_client_ca_file="ca.pem")
    with pytest.raises(ValueError):
        ServingConfig(bogus=1)
