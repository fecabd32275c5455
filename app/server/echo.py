"""An echo server over the protocol core, for conformance suites and client tests.

    python -m app.server.echo --bind 127.0.0.1:9001 [--max-size BYTES] [--greenlet]

Every text or binary message comes back as it was sent; permessage-deflate
is offered; any path is accepted; there is no authentication. By default it
serves as the chat does (an :class:`~app.server.server.EventHandler`: no
greenlet for an idle client); ``--greenlet`` runs a handler in a greenlet
for each client's whole life instead. The conformance suite runs against both.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import logging  # noqa: E402

from app.ws import DeflateConfig, TextMessage  # noqa: E402

from .server import ServerConfig, WebSocketServer, parse_bind, wait_for_shutdown  # noqa: E402
from .websocket import Message, ServerWebSocket  # noqa: E402

DEFAULT_MAX_SIZE = 16 * 1024 * 1024


def echo(ws: ServerWebSocket) -> None:
    """Send every message back as it came (a handler: the client's greenlet for life)."""
    for message in ws:
        _send_back(ws, message)


class Echo:
    """Send every message back as it came (an EventHandler: no greenlet while a client is idle)."""

    def opened(self, ws: ServerWebSocket) -> None:
        pass

    def received(self, ws: ServerWebSocket, message: Message) -> None:
        _send_back(ws, message)

    def closed(self, ws: ServerWebSocket, code: int, reason: str) -> None:
        pass


def _send_back(ws: ServerWebSocket, message: Message) -> None:
    if isinstance(message, TextMessage):
        ws.send_text(message.data)
    else:
        ws.send_binary(message.data)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m app.server.echo", description=__doc__.split("\n")[0])
    parser.add_argument("--bind", default="127.0.0.1:9001", help="HOST:PORT to listen on (default %(default)s)")
    parser.add_argument(
        "--max-size", type=int, default=DEFAULT_MAX_SIZE, help="largest message in bytes (default %(default)s)"
    )
    parser.add_argument(
        "--greenlet", action="store_true", help="a greenlet per client for its whole life, not only while it works"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = ServerConfig(max_message_size=args.max_size, deflate=DeflateConfig())
    server = WebSocketServer(parse_bind(args.bind), echo if args.greenlet else Echo(), config)
    server.start()
    host, port = server.address[:2]
    print(f"echo server listening on ws://{host}:{port}/", flush=True)
    wait_for_shutdown()
    server.stop(timeout=5)


if __name__ == "__main__":
    main()
