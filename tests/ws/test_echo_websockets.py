"""The echo server as the ``websockets`` client sees it, over real sockets.

Every test drives the server process from ``conftest.py`` with
``websockets.sync.client``, with and without permessage-deflate (RFC 7692).
"""

from __future__ import annotations

import base64
import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, ConnectionClosedOK
from websockets.protocol import State
from websockets.sync.client import ClientConnection, connect

from tests.support.echo import SMALL_MAX_SIZE
from tests.support.timeouts import scaled

pytestmark = pytest.mark.timeout(scaled(60))

KiB = 1024
MiB = 1024 * KiB
CLIENT_MAX_SIZE = 32 * MiB
COMPRESSIONS = [pytest.param(None, id="plain"), pytest.param("deflate", id="deflate")]
# the length encodings of RFC 6455 §5.2: 7 bits, 16 bits (126), 64 bits (127)
SIZES = [0, 1, 125, 126, 65535, 65536, MiB]


def open_client(url: str, compression: str | None, **kwargs: object) -> ClientConnection:
    """A client with bounded waits, no proxy and room for big echoes."""
    options: dict = {
        "compression": compression,
        "proxy": None,
        "open_timeout": scaled(10),
        "close_timeout": scaled(10),
        "max_size": CLIENT_MAX_SIZE,
        "ping_interval": None,
    }
    options.update(kwargs)
    return connect(url, **options)


@pytest.fixture(params=COMPRESSIONS)
def client(request: pytest.FixtureRequest, echo_server: str) -> Iterator[ClientConnection]:
    with open_client(echo_server, request.param) as ws:
        yield ws


def random_bytes(size: int) -> bytes:
    """Incompressible, reproducible bytes."""
    return random.Random(size).randbytes(size)


def random_text(size: int) -> str:
    """``size`` bytes of ASCII text, compressible only a little (base64 of random bytes)."""
    return base64.b64encode(random_bytes(size * 3 // 4 + 3)).decode()[:size]


def recv(ws: ClientConnection) -> str | bytes:
    return ws.recv(timeout=scaled(15))


class TestEcho:
    """Every message comes back as it was sent, whatever its size and type (RFC 6455 §5.6)."""

    @pytest.mark.parametrize("size", SIZES)
    def test_text_message_is_echoed_unchanged(self, client: ClientConnection, size: int) -> None:
        message = random_text(size)
        client.send(message)
        assert recv(client) == message

    @pytest.mark.parametrize("size", SIZES)
    def test_binary_message_is_echoed_unchanged(self, client: ClientConnection, size: int) -> None:
        message = random_bytes(size)
        client.send(message)
        echoed = recv(client)
        assert isinstance(echoed, bytes)
        assert echoed == message

    def test_16_mib_binary_message_is_echoed_uncompressed(self, echo_server: str) -> None:
        message = random_bytes(16 * MiB)
        with open_client(echo_server, None) as ws:
            ws.send(message)
            assert recv(ws) == message

    def test_16_mib_text_message_is_echoed_compressed(self, echo_server: str) -> None:
        message = random_text(16 * MiB)
        with open_client(echo_server, "deflate") as ws:
            ws.send(message)
            assert recv(ws) == message

    def test_non_ascii_text_is_echoed_unchanged(self, client: ClientConnection) -> None:
        message = "héllo wörld — Ελληνικά, 中文, emoji 🎉🚀, combining e\u0301"
        client.send(message)
        assert recv(client) == message

    def test_text_and_binary_keep_their_type(self, client: ClientConnection) -> None:
        client.send("42")
        client.send(b"42")
        assert recv(client) == "42"
        assert recv(client) == b"42"

    def test_many_messages_come_back_in_order(self, client: ClientConnection) -> None:
        messages = [f"message {i}: " + "x" * (i % 300) for i in range(500)]
        for message in messages:
            client.send(message)
        assert [recv(client) for _ in messages] == messages


class TestFragmentation:
    """A fragmented message is reassembled into one message (RFC 6455 §5.4)."""

    def test_fragmented_text_is_echoed_as_one_message(self, client: ClientConnection) -> None:
        fragments = ["Hel", "lo, ", "", "wörld", "!" * 70_000]
        client.send(fragments)
        assert recv(client) == "".join(fragments)

    def test_fragmented_binary_is_echoed_as_one_message(self, client: ClientConnection) -> None:
        fragments = [b"\x00\x01", random_bytes(1000), b"", random_bytes(70_000), b"\xff"]
        client.send(fragments)
        assert recv(client) == b"".join(fragments)

    def test_utf8_character_split_across_fragments_is_reassembled(self, client: ClientConnection) -> None:
        emoji = "🎉".encode()  # four bytes, split two and two (§8.1: UTF-8 is checked per message)
        client.send([b"party " + emoji[:2], emoji[2:] + b" time"], text=True)
        assert recv(client) == "party 🎉 time"

    def test_message_after_a_fragmented_one_is_echoed_separately(self, client: ClientConnection) -> None:
        client.send(["one ", "message"])
        client.send("another")
        assert recv(client) == "one message"
        assert recv(client) == "another"


class TestControlFrames:
    """Pings are answered with pongs (RFC 6455 §5.5.2-3)."""

    def test_ping_is_answered_with_a_pong(self, client: ClientConnection) -> None:
        assert client.ping(b"are you there?").wait(scaled(5))

    def test_ping_without_payload_is_answered(self, client: ClientConnection) -> None:
        assert client.ping(b"").wait(scaled(5))

    def test_ping_between_messages_does_not_disturb_them(self, client: ClientConnection) -> None:
        client.send("before")
        pong = client.ping(b"1234")
        client.send("after")
        assert recv(client) == "before"
        assert recv(client) == "after"
        assert pong.wait(scaled(5))


class TestExtensionNegotiation:
    """permessage-deflate is agreed only when the client offers it (RFC 7692 §5)."""

    def test_deflate_offer_is_accepted(self, echo_server: str) -> None:
        with open_client(echo_server, "deflate") as ws:
            extensions = ws.response.headers.get("Sec-WebSocket-Extensions")
            assert extensions is not None
            assert extensions.split(";")[0].strip() == "permessage-deflate"

    def test_no_extension_without_an_offer(self, echo_server: str) -> None:
        with open_client(echo_server, None) as ws:
            assert "Sec-WebSocket-Extensions" not in ws.response.headers
            assert ws.response.status_code == 101


class TestMessageSizeLimit:
    """A message over ``--max-size`` fails the connection with 1009 (RFC 6455 §7.4.1)."""

    def test_message_at_the_limit_is_echoed(self, small_echo_server: str) -> None:
        message = random_bytes(SMALL_MAX_SIZE)
        with open_client(small_echo_server, None) as ws:
            ws.send(message)
            assert recv(ws) == message

    def test_compressed_message_at_the_limit_is_echoed(self, small_echo_server: str) -> None:
        # Compressible, so its frame is under the limit too: like websockets, the
        # server bounds the wire size as well as the inflated size, and deflate
        # makes incompressible data slightly larger.
        message = random_text(SMALL_MAX_SIZE)
        with open_client(small_echo_server, "deflate") as ws:
            ws.send(message)
            assert recv(ws) == message

    @pytest.mark.parametrize("compression", COMPRESSIONS)
    def test_message_over_the_limit_closes_with_1009(self, small_echo_server: str, compression: str | None) -> None:
        with open_client(small_echo_server, compression) as ws:
            with pytest.raises(ConnectionClosedError) as info:
                ws.send(random_bytes(SMALL_MAX_SIZE + 1))
                recv(ws)
            assert info.value.rcvd is not None
            assert info.value.rcvd.code == 1009

    def test_compressed_message_inflating_over_the_limit_closes_with_1009(self, small_echo_server: str) -> None:
        message = "a" * (SMALL_MAX_SIZE + 1)  # a few KiB on the wire, over the limit once inflated
        with open_client(small_echo_server, "deflate") as ws:
            with pytest.raises(ConnectionClosedError) as info:
                ws.send(message)
                recv(ws)
            assert info.value.rcvd is not None
            assert info.value.rcvd.code == 1009

    def test_other_connections_survive_a_rejected_message(self, small_echo_server: str) -> None:
        with open_client(small_echo_server, None) as bystander, open_client(small_echo_server, None) as offender:
            with pytest.raises(ConnectionClosedError):
                offender.send(random_bytes(SMALL_MAX_SIZE + 1))
                recv(offender)
            bystander.send("still here")
            assert recv(bystander) == "still here"


class TestClosingHandshake:
    """A close started by the client is echoed and completes (RFC 6455 §5.5.1, §7.1.2)."""

    @pytest.mark.parametrize("compression", COMPRESSIONS)
    def test_client_close_with_code_4000_is_echoed(self, echo_server: str, compression: str | None) -> None:
        with open_client(echo_server, compression) as ws:
            ws.send("last words")
            assert recv(ws) == "last words"
            ws.close(4000, "client is done")  # returns once the server's close frame and EOF came back
            assert ws.state is State.CLOSED
            # websockets reports any code but 1000/1001 as ConnectionClosedError,
            # even when the closing handshake completed, as here.
            with pytest.raises(ConnectionClosed) as info:
                recv(ws)
        assert info.value.sent is not None
        assert info.value.sent.code == 4000
        assert info.value.rcvd is not None
        assert info.value.rcvd.code == 4000
        assert info.value.rcvd_then_sent is False

    def test_client_normal_close_is_reported_ok(self, echo_server: str) -> None:
        with open_client(echo_server, None) as ws:
            ws.close(1000, "bye")
            with pytest.raises(ConnectionClosedOK) as info:
                recv(ws)
        assert info.value.rcvd is not None
        assert info.value.rcvd.code == 1000


class TestConcurrency:
    """Clients do not disturb one another (one greenlet each)."""

    def test_fifty_concurrent_clients_each_get_their_own_echoes(self, echo_server: str) -> None:
        def conversation(n: int) -> list[str | bytes]:
            with open_client(echo_server, "deflate" if n % 2 else None) as ws:
                sent: list[str | bytes] = [f"client {n} message {i}" for i in range(10)]
                sent.append(random_bytes(1000 + n))
                for message in sent:
                    ws.send(message)
                received = [recv(ws) for _ in sent]
                assert received == sent
                return received

        with ThreadPoolExecutor(max_workers=50) as pool:
            futures = [pool.submit(conversation, n) for n in range(50)]
            results = [future.result(timeout=scaled(30)) for future in futures]
        assert [result[0] for result in results] == [f"client {n} message 0" for n in range(50)]
