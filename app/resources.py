"""The process's open-file limit, and how many WebSocket connections it leaves room for.

Every connection is a file descriptor, and so is every HTTP request being
served. Many systems start services with a soft limit of 1024 open files: a
reconnect storm of a thousand browsers (a deploy, a network blip) then runs
the process out of descriptors. The WebSocket server pauses accepting on
``EMFILE``, but the connections it took hold their descriptors, and the
web app's ``POST /api/session`` requests wait in the listen backlog until
the clients give up: the "fetch failed" a user sees as an error page.

So, at start: the soft limit is raised to the hard limit (what an
unprivileged process may do, ``setrlimit(2)``), and the WebSocket server
takes at most what the limit leaves after a reserve for the web app, the
database and Redis (:func:`websocket_budget`). Past that, a handshake is
refused with 503 and ``POST /api/session`` answers ``503 busy`` with a
``Retry-After``, which clients honour with jittered backoff: a deliberate
answer, never a reset or a hang.
"""

from __future__ import annotations

import logging
import resource

__all__ = ["HTTP_CONNECTIONS", "RESERVED_FILES", "open_file_limit", "raise_open_file_limit", "websocket_budget"]

log = logging.getLogger(__name__)

#: Simultaneous HTTP connections gunicorn's gevent worker serves (``worker_connections``).
HTTP_CONNECTIONS = 2000
#: Descriptors kept for everything else: the listening sockets, SQLite's files, Redis, logs, threads' pipes.
RESERVED_FILES = 128
#: Never ask for more than this, whatever the hard limit (``RLIM_INFINITY`` included).
MOST_FILES = 1 << 20


def open_file_limit() -> int:
    """The soft limit on open files, now."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return MOST_FILES if soft == resource.RLIM_INFINITY else soft


def raise_open_file_limit() -> int:
    """Raise the soft open-file limit to the hard one (children inherit it); the soft limit after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = MOST_FILES if hard == resource.RLIM_INFINITY else min(hard, MOST_FILES)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return open_file_limit()
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ValueError, OSError) as error:  # a container that forbids it: keep what there is
        log.warning("could not raise the open-file limit from %d to %d: %s", soft, wanted, error)
    return open_file_limit()


def websocket_budget(max_connections: int, files: int | None = None) -> int:
    """The WebSocket connections this process can hold: ``max_connections``, or fewer if the open-file limit is low.

    What the limit leaves after the web app's connections (gunicorn's
    ``worker_connections``, or a quarter of a small limit) and the reserve;
    at least 1, so a tiny limit still serves someone.
    """
    files = open_file_limit() if files is None else files
    web = min(HTTP_CONNECTIONS, files // 4)
    return max(1, min(max_connections, files - web - RESERVED_FILES))
