"""app/compat.py: the gevent and gunicorn internals the chat relies on are still there, as it expects.

Every test here fails on a version the module was not checked against, or
when an internal it names changed shape. On such a failure, read each
function of app/compat.py against the new version's source, then update
``CHECKED_VERSIONS``.
"""

from __future__ import annotations

import _socket
import inspect
import re
import signal
import socket as stdlib_socket
from importlib.metadata import version
from pathlib import Path
from typing import Any

import gevent
import gevent.socket
import pytest
from gevent.baseserver import BaseServer
from gevent.server import StreamServer
from greenlet import getcurrent

from app import compat

ROOT = Path(__file__).resolve().parents[2]
UPGRADE = (
    "app/compat.py was checked against {checked}; check each internal listed in app/compat.py "
    "against {library} {installed}, then update CHECKED_VERSIONS"
)


@pytest.mark.parametrize("library", sorted(compat.CHECKED_VERSIONS))
def test_the_installed_version_is_the_one_compat_was_checked_against(library: str) -> None:
    installed, checked = version(library), compat.CHECKED_VERSIONS[library]
    assert installed == checked, UPGRADE.format(checked=checked, library=library, installed=installed)


@pytest.mark.parametrize("library", sorted(compat.CHECKED_VERSIONS))
def test_requirements_pin_the_version_compat_was_checked_against(library: str) -> None:
    pins = dict(re.findall(r"^([\w.-]+)(?:\[[\w,]+\])?==(\S+)", (ROOT / "requirements.txt").read_text(), re.M))
    pinned, checked = pins[library], compat.CHECKED_VERSIONS[library]
    assert pinned == checked, UPGRADE.format(checked=checked, library=library, installed=pinned)


# -- gevent ----------------------------------------------------------------------


@pytest.fixture
def pair() -> Any:
    left, right = gevent.socket.socketpair()
    yield left, right
    left.close()
    right.close()


def test_a_gevent_socket_holds_a_non_blocking_stdlib_socket_on_the_same_descriptor(pair: Any) -> None:
    sock, peer = pair
    raw = compat.raw_socket(sock)
    assert isinstance(raw, _socket.socket) and not isinstance(raw, gevent.socket.socket)
    assert raw.fileno() == sock.fileno()
    assert raw.gettimeout() == 0.0
    with pytest.raises(BlockingIOError):
        raw.recv(1)
    peer.sendall(b"x")
    gevent.sleep(0.01)
    assert raw.recv(1) == b"x"


def test_a_socket_that_is_not_gevents_is_its_own_raw_socket() -> None:
    left, right = stdlib_socket.socketpair()
    with left, right:
        assert compat.raw_socket(left) is left


def test_a_gevent_socket_has_a_read_watcher_on_its_descriptor(pair: Any) -> None:
    sock, _ = pair
    watcher = compat.read_watcher(sock)
    assert watcher is compat.read_watcher(sock), "one watcher for the socket's life, bound once per connection"
    assert watcher.fd == sock.fileno()
    assert watcher.events & 1, watcher  # READ
    for name in ("start", "stop", "callback", "active"):
        assert hasattr(watcher, name), name


def _park(watcher: Any, woken: list[object]) -> None:
    """Wait as ServerWebSocket._wait_readable does; record how the wait ended."""
    watcher.start(getcurrent().switch)
    try:
        gevent.get_hub().switch()
        woken.append("readable")
    except OSError as error:
        woken.append(error)
    finally:
        watcher.stop()


def test_a_greenlet_parked_on_the_read_watcher_wakes_when_data_comes(pair: Any) -> None:
    sock, peer = pair
    woken: list[object] = []
    waiter = gevent.spawn(_park, compat.read_watcher(sock), woken)
    gevent.sleep(0.01)
    assert woken == []
    peer.sendall(b"x")
    waiter.join(timeout=1)
    assert woken == ["readable"]


def test_a_greenlet_parked_on_the_read_watcher_gets_an_oserror_when_another_greenlet_closes_the_socket(
    pair: Any,
) -> None:
    sock, _ = pair
    woken: list[object] = []
    waiter = gevent.spawn(_park, compat.read_watcher(sock), woken)
    gevent.sleep(0.01)
    sock.close()  # gevent's cancel_wait throws into watcher.callback.__self__
    waiter.join(timeout=1)
    assert len(woken) == 1 and isinstance(woken[0], OSError), woken


def test_base_server_asks_full_do_read_and_do_handle_for_each_connection() -> None:
    source = inspect.getsource(BaseServer._do_read)
    for call in ("self.full()", "self.do_read()", "self.do_handle(*args)"):
        assert call in source, f"gevent's BaseServer._do_read no longer calls {call}"
    for name in ("do_read", "do_handle", "full", "start_accepting", "stop_accepting", "started"):
        assert hasattr(StreamServer, name), name


class _Recording(compat.AcceptorBase):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[str] = []
        self.dispatched: list[tuple[Any, Any]] = []

    def accepting_paused(self) -> bool:
        self.calls.append("accepting_paused")
        return super().accepting_paused()

    def accept_connection(self) -> Any:
        self.calls.append("accept_connection")
        return super().accept_connection()

    def dispatch(self, sock: Any, address: Any) -> None:
        self.calls.append("dispatch")
        self.dispatched.append((sock, address))


def test_the_acceptor_base_hands_each_connection_to_its_subclass() -> None:
    server = _Recording(("127.0.0.1", 0), lambda sock, address: None)
    server.start()
    try:
        client = gevent.socket.create_connection(server.address)
        with client:
            deadline = gevent.Timeout(2)
            with deadline:
                while not server.dispatched:
                    gevent.sleep(0.01)
            ((sock, address),) = server.dispatched
            assert isinstance(sock, gevent.socket.socket)
            assert address == client.getsockname()
            assert server.calls[:3] == ["accepting_paused", "accept_connection", "dispatch"]
            sock.close()
    finally:
        server.close()


# -- gunicorn --------------------------------------------------------------------


def test_every_signal_a_gunicorn_worker_stops_on_clears_alive() -> None:
    from gunicorn.workers.base import Worker

    worker: Any = Worker.__new__(Worker)
    worker.alive = True
    assert not compat.worker_stopping(worker)
    Worker.handle_exit(worker, signal.SIGTERM, None)
    assert compat.worker_stopping(worker)
    for handler in (Worker.handle_quit, Worker.handle_abort):
        assert "self.alive = False" in inspect.getsource(handler), handler.__name__


def test_a_gunicorn_worker_loads_its_app_into_wsgi_before_post_worker_init() -> None:
    from gunicorn.workers.base import Worker

    init = inspect.getsource(Worker.init_process)
    assert init.index("self.load_wsgi()") < init.index("self.cfg.post_worker_init(self)") < init.index("self.run()")
    assert "self.wsgi = self.app.wsgi()" in inspect.getsource(Worker.load_wsgi)
    worker: Any = Worker.__new__(Worker)
    worker.wsgi = app = object()
    assert compat.worker_app(worker) is app


def test_the_gevent_worker_serves_gevent_sockets_by_post_worker_init(pair: Any) -> None:
    from gunicorn.workers.ggevent import GeventWorker

    init = inspect.getsource(GeventWorker.init_process)
    assert init.index("self.patch()") < init.index("super().init_process()")
    patch = inspect.getsource(GeventWorker.patch)
    assert "socket.socket(" in patch and "self.sockets = sockets" in patch
    worker: Any = GeventWorker.__new__(GeventWorker)
    worker.sockets = list(pair)
    assert compat.worker_listen_addresses(worker) == [s.getsockname() for s in pair]


def test_gunicorn_calls_worker_exit_in_the_worker_after_its_run_returned() -> None:
    """Not an internal (a documented hook), but gunicorn.conf.py's stop relies on when it comes."""
    from gunicorn.arbiter import Arbiter

    spawn = inspect.getsource(Arbiter.spawn_worker)
    assert (
        spawn.index("worker.init_process()")
        < spawn.index("finally:")
        < spawn.index("self.cfg.worker_exit(self, worker)")
    )
