"""Everything the chat takes from gevent's and gunicorn's internals, in one place.

The chat relies on a few names neither library documents as API: each is
one function or class below, whose docstring says what it relies on and why
no public API does the job. They were checked against the versions in
:data:`CHECKED_VERSIONS` (those pinned in requirements.txt);
``tests/server/test_compat.py`` fails on any other version, and checks that
each internal is still there with the expected shape. Upgrading gevent or
gunicorn: read each function below against the new version's source, then
update :data:`CHECKED_VERSIONS`.

Hot paths bind what they need once per connection (:func:`raw_socket`,
:func:`read_watcher`) and then use it directly, so this module costs no
call per message.

Not imported by anything that gunicorn's master must not import: it needs
gevent only (which gunicorn's gevent worker class brings into the master
anyway), never Flask nor prometheus_client.
"""

from __future__ import annotations

import socket
from typing import Any

from gevent.server import StreamServer

__all__ = [
    "CHECKED_VERSIONS",
    "AcceptorBase",
    "raw_socket",
    "read_watcher",
    "worker_app",
    "worker_listen_addresses",
    "worker_stopping",
]

#: The versions every internal below was read against (requirements.txt pins them).
CHECKED_VERSIONS = {"gevent": "26.9.0", "gunicorn": "27.0.1"}


# -- gevent --------------------------------------------------------------------


def raw_socket(sock: socket.socket) -> Any:
    """The non-blocking ``_socket.socket`` under a gevent socket (``sock`` itself if it is not one).

    Relies on ``gevent.socket.socket._sock``: gevent's socket wraps (does not
    subclass) a C-level ``_socket.socket`` it keeps there, in non-blocking mode. The chat
    reads and writes it to make system calls that never switch greenlets: a
    broadcast's writes from a hub callback (one ``send`` per client per loop
    turn), the reader's ``recv`` that says "nothing yet" with
    ``BlockingIOError`` instead of waiting. gevent's public methods always
    wait, and ``setblocking(False)`` on its socket does not make them raise;
    ``socket.socket(fileno=sock.fileno())`` would be a second object owning
    the descriptor (closing either closes both). gevent's own ``server.py``
    reads the same attribute. Checked in gevent 26.9.0
    (``_socket3.py``: ``self._sock = self._gevent_sock_class(...)``, set
    non-blocking in ``__init__``).
    """
    return getattr(sock, "_sock", sock)


def read_watcher(sock: socket.socket) -> Any:
    """The read watcher (a libev/libuv ``io`` watcher) gevent keeps for its socket ``sock``.

    Relies on ``gevent.socket.socket._read_event``, created in ``__init__``
    for the socket's descriptor, and on the contract of gevent's
    ``Hub.cancel_wait``: when another greenlet closes the socket, gevent
    throws ``cancel_wait_ex`` (an ``OSError``) into ``watcher.callback.__self__``,
    so a greenlet that waits with ``watcher.start(getcurrent().switch)`` is
    woken as gevent's own ``sock.recv`` would be. The public way to wait,
    ``gevent.socket.wait_read(fileno)`` or ``sock.recv``, makes a watcher per
    wait or waits through ``hub.wait`` and a ``Waiter``: a deeper C stack
    that greenlet copies to the heap for every idle client (about 1 KiB
    each, see ``ServerWebSocket._wait_readable``). gevent has no public
    accessor for the watcher. Bound once per connection; after the socket
    is closed gevent closes this watcher (and sets the attribute to None), so
    it must not be waited on then. Checked in gevent 26.9.0 (``_socket3.py``
    ``__init__``; ``_hub_primitives.py`` ``_cancel_wait``).
    """
    gevent_socket: Any = sock
    return gevent_socket._read_event


class AcceptorBase(StreamServer):
    """gevent's ``StreamServer`` with its accept and dispatch steps open to a subclass.

    Relies on ``BaseServer._do_read`` (the listening socket's read callback)
    calling, for each connection it accepts (up to ``max_accept`` per loop
    turn): ``self.full()`` before accepting (a ``Pool`` given as ``spawn``
    replaces it; none is given here), ``self.do_read()`` to accept (a
    ``(socket, address)`` tuple, or a false value for nothing), and
    ``self.do_handle(socket, address)`` to hand the connection over; an
    exception from ``do_read`` is logged with a traceback and backs off. None
    of the three is documented API: gevent's documented customisations are
    ``handle`` and ``spawn``, and ``spawn`` gets the connection only after
    the accept, wrapped to close the socket when the handler returns. The
    chat needs the accept itself (to pause quietly when out of file
    descriptors, instead of a traceback per attempt) and the dispatch (to
    refuse over a limit from the hub without a greenlet, and to run clients
    in bare greenlets). Subclasses override :meth:`accept_connection`,
    :meth:`dispatch` and :meth:`accepting_paused`, never gevent's names.
    ``start_accepting``, ``stop_accepting``, ``started``, ``loop`` and
    ``close`` are gevent's documented ``BaseServer`` API. Checked in gevent
    26.9.0 (``baseserver.py`` ``_do_read``, ``do_handle``, ``full``;
    ``server.py`` ``StreamServer.do_read``).
    """

    def accept_connection(self) -> tuple[socket.socket, Any] | None:
        """Accept one connection: ``(gevent socket, address)``, or None when none is waiting."""
        accepted: tuple[socket.socket, Any] | None = StreamServer.do_read(self)
        return accepted

    def dispatch(self, sock: socket.socket, address: Any) -> None:
        """Serve an accepted connection (gevent's default: a greenlet running ``handle``)."""
        StreamServer.do_handle(self, sock, address)

    def accepting_paused(self) -> bool:
        """Whether to leave connections in the backlog for now (gevent's default: a full pool)."""
        return bool(StreamServer.full(self))

    # gevent's names, called by BaseServer._do_read
    def do_read(self) -> tuple[socket.socket, Any] | None:
        return self.accept_connection()

    def do_handle(self, *args: Any) -> None:
        self.dispatch(*args)

    def full(self) -> bool:
        return self.accepting_paused()


# -- gunicorn ------------------------------------------------------------------
#
# The hooks themselves (post_worker_init, worker_exit, child_exit, ...) are
# gunicorn's documented server hooks, and ``worker.cfg`` and ``worker.pid``
# are documented with them. What follows is what the hooks read of the
# worker beyond that.


def worker_stopping(worker: Any) -> bool:
    """Whether gunicorn told this worker to stop (SIGTERM, SIGINT, SIGQUIT, SIGABRT).

    Relies on ``Worker.alive``: set to False by each of those signal
    handlers of ``gunicorn.workers.base.Worker``; the worker's ``run`` loop
    polls it. (A gevent worker whose master is gone leaves by
    ``sys.exit`` from ``notify`` without clearing it.) gunicorn calls no
    hook on SIGTERM (``worker_int`` is for SIGINT and SIGQUIT only, and
    ``worker_exit`` comes only once the HTTP requests are done), and the
    chat's WebSocket clients must get their 1001 while those finish, so this
    is polled. Checked in gunicorn 27.0.1 (``workers/base.py``
    ``handle_exit``, ``handle_quit``; ``workers/ggevent.py`` ``run``).
    """
    return not worker.alive


def worker_app(worker: Any) -> Any:
    """The WSGI application the worker loaded (here, the Flask app), from ``post_worker_init`` on.

    Relies on ``Worker.wsgi``, set by ``Worker.load_wsgi`` before
    ``post_worker_init`` is called. The documented way to reach the app,
    ``worker.app.wsgi()``, loads it again (a second Flask app, with its own
    chat). Checked in gunicorn 27.0.1 (``workers/base.py`` ``init_process``,
    ``load_wsgi``).
    """
    return worker.wsgi


def worker_listen_addresses(worker: Any) -> list[Any]:
    """The addresses the worker's HTTP listeners are bound to (real ports, when bound to port 0).

    Relies on ``Worker.sockets``: the listening sockets the worker serves,
    which the gevent worker replaces (``GeventWorker.patch``, before
    ``post_worker_init``) by gevent sockets on the same descriptors, with
    ``getsockname()``. The configured ``cfg.bind`` is public but says
    ``:0`` for an ephemeral port. Checked in gunicorn 27.0.1
    (``workers/ggevent.py`` ``patch``, ``init_process``).
    """
    return [listener.getsockname() for listener in worker.sockets]
