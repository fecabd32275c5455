"""Listening sockets the gevent server accepts on."""

from __future__ import annotations

import socket

from gevent import socket as gsocket

from .server import parse_bind

__all__ = ["shared_listener"]

BACKLOG = 1024


def shared_listener(bind: str) -> gsocket.socket:
    """A listening socket on ``HOST:PORT`` that other processes may bind too (``SO_REUSEPORT``).

    Each of gunicorn's workers opens its own; the kernel spreads new
    connections over them (Linux ≥ 3.9), so there is no accept lock and no
    hand-off between processes.
    """
    host, port = parse_bind(bind)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = gsocket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock
