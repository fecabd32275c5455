"""Incremental UTF-8 decoding that fails at the first invalid byte.

RFC 6455 §8.1: a text message must be valid UTF-8, and an endpoint should
fail the connection as soon as the data cannot be valid ("fail fast"), not at
the end of the message. CPython's incremental decoder rejects every invalid
sequence at its first bad byte except one: it accepts ``ED A0``–``ED BF`` as
the start of a sequence although every completion is a UTF-16 surrogate
(RFC 3629 §3). :class:`Utf8Decoder` checks that prefix itself.
"""

from __future__ import annotations

import codecs

from .exceptions import InvalidPayloadData

__all__ = ["Utf8Decoder"]

_IncrementalDecoder = codecs.getincrementaldecoder("utf-8")


class Utf8Decoder:
    """Decodes a text message piece by piece, raising 1007 at the first bad byte."""

    __slots__ = ("_decoder",)

    def __init__(self) -> None:
        self._decoder = _IncrementalDecoder("strict")

    def decode(self, data: bytes, final: bool = False) -> str:
        """The text of ``data``, holding back an incomplete trailing sequence.

        Raises :class:`InvalidPayloadData` as soon as ``data`` cannot be the
        prefix of valid UTF-8, or, with ``final``, is not complete.
        """
        try:
            text = self._decoder.decode(data, final)
        except UnicodeDecodeError:
            raise InvalidPayloadData("invalid UTF-8 in text message") from None
        if not final:
            pending = self._decoder.getstate()[0]
            if len(pending) >= 2 and pending[0] == 0xED and pending[1] >= 0xA0:
                raise InvalidPayloadData("invalid UTF-8 in text message")
        return text
