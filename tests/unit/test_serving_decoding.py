"""Request bytes that do not parse become InvalidArgument naming the field, never a raise."""

from __future__ import annotations

import pytest

from xemb.serving.decoding import Undecodable, bad_utf8_field, lenient
from xemb.v1 import xemb_pb2 as pb

BAD = b"\xed\xa0\x80"  # an encoded UTF-16 surrogate: rejected by protobuf and by Python


def _corrupt(message, marker: str) -> bytes:
    data = message.SerializeToString()
    assert data.count(marker.encode()) == 1
    return data.replace(marker.encode(), BAD + b"z" * (len(marker) - len(BAD)))


CASES = [
    (pb.ComposeUserIntentRequest(user_id="MARK", target_domain="kitchen"), "user_id"),
    (pb.ComposeUserIntentRequest(history=pb.History(item_ids=[1, 2, 3],
                                                    domains=["a", "b", "MARK"])),
     "history.domains[2]"),
    (pb.RetrieveRequest(user=pb.ComposeUserIntentRequest(
        history=pb.History(domains=["MARK"])), k=3), "user.history.domains[0]"),
    (pb.EncodeItemsRequest(texts=["a", "MARK"], domain="kitchen"), "texts[1]"),
    (pb.GetVersionRequest(version="MARK"), "version"),
]


@pytest.mark.parametrize(("message", "field"), CASES, ids=[c[1] for c in CASES])
def test_invalid_utf8_names_the_field(message, field):
    data = _corrupt(message, "MARK")
    assert bad_utf8_field(message.DESCRIPTOR, data) == field
    parsed = lenient(type(message).FromString)(data)
    assert isinstance(parsed, Undecodable)
    assert parsed.error.field == field and str(parsed.error) == f"{field}: not valid UTF-8"


def test_good_bytes_parse_as_usual():
    message = pb.RetrieveRequest(item_id=3, domain="kitchen", k=5, exclude_ids=[1, 2])
    assert lenient(pb.RetrieveRequest.FromString)(message.SerializeToString()) == message
    assert bad_utf8_field(message.DESCRIPTOR, message.SerializeToString()) is None


@pytest.mark.parametrize("data", [b"\x0a\xff\xff\xff", b"\xff", b"\x0a\x05ab", b"\x08"])
def test_truncated_or_garbage_bytes_are_invalid_argument(data):
    parsed = lenient(pb.GetItemEmbeddingsRequest.FromString)(data)
    assert isinstance(parsed, Undecodable)
    assert parsed.error.field == "request"
    assert "xemb.v1.GetItemEmbeddingsRequest" in str(parsed.error)


def test_no_deserializer_stays_none():
    assert lenient(None) is None
