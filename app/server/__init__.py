"""The gevent I/O layer: sockets, greenlets and timeouts around :mod:`app.ws`."""

from .server import WebSocketServer
from .websocket import ServerWebSocket

__all__ = ["ServerWebSocket", "WebSocketServer"]
