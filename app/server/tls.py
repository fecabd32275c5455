"""TLS for the WebSocket port (``wss://``), as a byte stream over the client's non-blocking socket.

The WebSocket layer reads and writes the raw non-blocking socket itself
(one ``send`` per client per loop turn, never blocking the hub), which a
wrapped ``ssl.SSLSocket`` would not allow: its non-blocking errors are not
``BlockingIOError`` and a retried write must repeat the same buffer. So TLS
runs over memory BIOs (:class:`ssl.SSLObject`): plaintext in, ciphertext
out, and this class moves ciphertext between the BIOs and the socket with
the same non-blocking contract as the socket: :meth:`recv` raises
``BlockingIOError`` when nothing is there, :meth:`send` never blocks.
Encrypting cannot be partial, so what the kernel does not take of the
ciphertext waits in :attr:`backlog` for :meth:`sendall` (the connection's
writer greenlet) to flush.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any

from gevent.socket import wait_read, wait_write

from app.compat import raw_socket

__all__ = ["TLSStream", "server_context"]

RECV_SIZE = 64 * 1024


def server_context(certfile: str, keyfile: str) -> ssl.SSLContext:
    """A server context with the certificate chain and key: TLS 1.2 or later, the library's ciphers."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile, keyfile)
    return context


class TLSStream:
    """One server-side TLS session over an accepted (gevent) socket; see the module docstring."""

    __slots__ = ("_in", "_out", "_ssl", "_tcp", "backlog", "handshaken", "sock")

    def __init__(self, sock: socket.socket, context: ssl.SSLContext) -> None:
        self.sock = sock
        self._tcp: Any = raw_socket(sock)  # the raw non-blocking socket under gevent's
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(self._in, self._out, server_side=True)
        #: Ciphertext the kernel has not taken yet.
        self.backlog = bytearray()
        self.handshaken = False

    def fileno(self) -> int:
        return int(self._tcp.fileno())

    # -- cooperative (the client's own greenlet may wait) ---------------------

    def handshake(self) -> None:
        """Complete the TLS handshake, waiting for the client; ``ConnectionError`` if it goes away."""
        while True:
            try:
                self._ssl.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.sendall(b"")
                if not self._fill_waiting():
                    raise ConnectionResetError("the client left during the TLS handshake") from None
            except ssl.SSLError as error:
                self.sendall(b"")  # the alert, if any
                raise ConnectionResetError(f"TLS handshake failed: {error.reason or error}") from None
        self.handshaken = True
        self.sendall(b"")

    def recv_wait(self, size: int = RECV_SIZE) -> bytes:
        """Plaintext, waiting until some comes; ``b""`` at the end of the stream."""
        while True:
            try:
                return self.recv(size)
            except BlockingIOError:
                wait_read(self.fileno())

    def sendall(self, data: bytes) -> None:
        """Encrypt ``data`` and wait until the kernel took every byte of ciphertext waiting."""
        if data:
            self._ssl.write(data)
        self.backlog += self._out.read()
        while self.backlog:
            try:
                sent = self._tcp.send(self.backlog)
            except BlockingIOError:
                wait_write(self.fileno())
                continue
            del self.backlog[:sent]

    # -- non-blocking, as the raw socket -------------------------------------

    def recv(self, size: int = RECV_SIZE) -> bytes:
        """Plaintext now; ``BlockingIOError`` if none can be had without waiting, ``b""`` at the end."""
        while True:
            try:
                data = self._ssl.read(size)
            except ssl.SSLWantReadError:
                ciphertext = self._tcp.recv(RECV_SIZE)  # BlockingIOError: nothing yet
                if not ciphertext:
                    return b""
                self._in.write(ciphertext)
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLError):
                return b""  # close_notify, or a broken stream: either way, the end
            if self._out.pending:  # TLS 1.3 may answer (a key update)
                self._send_now(self._out.read())
            return data

    def send(self, data: bytes) -> int:
        """Encrypt all of ``data`` and hand the kernel what it takes now; the rest waits in :attr:`backlog`.

        Raises ``BlockingIOError`` (taking nothing) while an earlier backlog is
        still waiting, so that the stream stays in order.
        """
        if self.backlog:
            self._send_now(b"")
            if self.backlog:
                raise BlockingIOError("earlier ciphertext still waiting")
        self._ssl.write(data)
        self._send_now(self._out.read())
        return len(data)

    def _send_now(self, ciphertext: bytes) -> None:
        self.backlog += ciphertext
        if not self.backlog:
            return
        try:
            sent = self._tcp.send(self.backlog)
        except BlockingIOError:
            return
        del self.backlog[:sent]

    def _fill_waiting(self) -> bool:
        """Read ciphertext into the TLS object, waiting for some; False at the end of the stream."""
        while True:
            try:
                data = self._tcp.recv(RECV_SIZE)
            except BlockingIOError:
                wait_read(self.fileno())
                continue
            if not data:
                return False
            self._in.write(data)
            return True

    def close_notify(self) -> None:
        """Say goodbye in TLS (best effort, never waiting): the client sees a clean end."""
        try:
            self._ssl.unwrap()
        except ssl.SSLError:
            pass  # SSLWantReadError: the peer's close_notify is not awaited
        self._send_now(self._out.read())
