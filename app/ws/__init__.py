"""The WebSocket protocol (RFC 6455, RFC 7692 permessage-deflate), sans-I/O."""

from .connection import DEFAULT_MAX_MESSAGE_SIZE, Connection, State
from .deflate import DeflateConfig, DeflateParams, PerMessageDeflate
from .events import BinaryMessage, CloseReceived, Event, Ping, Pong, TextMessage
from .exceptions import (
    ConnectionClosed,
    HandshakeRejected,
    InvalidPayloadData,
    InvalidState,
    MessageTooBig,
    ProtocolError,
    WebSocketError,
)
from .frames import CloseCode, Frame, FrameParser, Opcode, encode_frame
from .handshake import Handshake, accept, accept_key, reject, rejection
from .http11 import Request, RequestReader, Response

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "BinaryMessage",
    "CloseCode",
    "CloseReceived",
    "Connection",
    "ConnectionClosed",
    "DeflateConfig",
    "DeflateParams",
    "Event",
    "Frame",
    "FrameParser",
    "Handshake",
    "HandshakeRejected",
    "InvalidPayloadData",
    "InvalidState",
    "MessageTooBig",
    "Opcode",
    "PerMessageDeflate",
    "Ping",
    "Pong",
    "ProtocolError",
    "Request",
    "RequestReader",
    "Response",
    "State",
    "TextMessage",
    "WebSocketError",
    "accept",
    "accept_key",
    "encode_frame",
    "reject",
    "rejection",
]
