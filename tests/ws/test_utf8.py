"""Incremental UTF-8 that fails at the first byte that cannot be valid (RFC 6455 §8.1, RFC 3629)."""

from __future__ import annotations

import pytest

from app.ws.exceptions import InvalidPayloadData
from app.ws.utf8 import Utf8Decoder

SAMPLE = "κόσμε €𝄞 ok"


def test_valid_text_split_at_every_position_decodes_whole() -> None:
    data = SAMPLE.encode()
    for cut in range(len(data) + 1):
        decoder = Utf8Decoder()
        assert decoder.decode(data[:cut]) + decoder.decode(data[cut:], final=True) == SAMPLE


def test_valid_text_one_byte_at_a_time_decodes_whole() -> None:
    decoder = Utf8Decoder()
    text = "".join(decoder.decode(bytes([b])) for b in SAMPLE.encode())
    assert text + decoder.decode(b"", final=True) == SAMPLE


def test_incomplete_sequence_is_held_back_until_completed() -> None:
    decoder = Utf8Decoder()
    assert decoder.decode(b"a\xe2\x82") == "a"
    assert decoder.decode(b"\xac", final=True) == "€"


def test_incomplete_sequence_at_the_end_of_the_message_fails() -> None:
    decoder = Utf8Decoder()
    assert decoder.decode(b"a\xe2\x82") == "a"
    with pytest.raises(InvalidPayloadData) as info:
        decoder.decode(b"", final=True)
    assert info.value.code == 1007


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(b"\xff", id="ff-never-valid"),
        pytest.param(b"\xc0", id="overlong-lead-c0"),
        pytest.param(b"\xc1", id="overlong-lead-c1"),
        pytest.param(b"\xf5", id="lead-above-f4"),
        pytest.param(b"\x80", id="lone-continuation"),
        pytest.param(b"\xe0\x80", id="overlong-3-byte"),
        pytest.param(b"\xf0\x80", id="overlong-4-byte"),
        pytest.param(b"\xf4\x90", id="above-u10ffff"),
        pytest.param(b"\xce\x41", id="missing-continuation"),
    ],
)
def test_invalid_prefix_fails_at_its_last_byte(bad: bytes) -> None:
    """§8.1 fail fast: the decoder raises with the first byte that makes the data invalid."""
    decoder = Utf8Decoder()
    assert decoder.decode(b"ok" + bad[:-1]) == "ok"
    with pytest.raises(InvalidPayloadData) as info:
        decoder.decode(bad[-1:])
    assert info.value.code == 1007


@pytest.mark.parametrize("second", range(0xA0, 0xC0))
def test_surrogate_prefix_fails_at_its_second_byte(second: int) -> None:
    """RFC 3629 §3: ED A0–ED BF can only begin a UTF-16 surrogate, so it fails at once."""
    decoder = Utf8Decoder()
    decoder.decode(b"ok\xed")
    with pytest.raises(InvalidPayloadData):
        decoder.decode(bytes([second]))


def test_surrogate_prefix_in_one_piece_fails() -> None:
    with pytest.raises(InvalidPayloadData):
        Utf8Decoder().decode(b"ok\xed\xa0")


def test_highest_non_surrogate_below_them_is_valid() -> None:
    """ED 9F BF is U+D7FF, the last code point before the surrogates."""
    decoder = Utf8Decoder()
    assert decoder.decode(b"\xed\x9f") == ""
    assert decoder.decode(b"\xbf", final=True) == "\ud7ff"


def test_largest_code_point_is_valid() -> None:
    assert Utf8Decoder().decode(b"\xf4\x8f\xbf\xbf", final=True) == "\U0010ffff"
