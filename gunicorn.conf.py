"""gunicorn settings for the chat: the gevent worker, the chat's WebSocket server inside it.

    gunicorn -c gunicorn.conf.py wsgi:app [--bind HOST:PORT]

The WebSocket server (``CHAT_WS_BIND``) runs in the worker, beside the Flask
app, so both see the same rooms. Without Redis the rooms live in that one
process's memory, so several workers are refused. With ``CHAT_REDIS_URL``,
``-w N`` runs N workers that each open the WebSocket port with
``SO_REUSEPORT`` (the kernel spreads clients over them) and share every room
through Redis.
"""

import os
import shutil
import tempfile

import gevent

# The master imports the chat's settings and log formats, never Flask (the
# worker imports it when it loads wsgi:app). The worker's gevent patching
# gives logging a lock that calls into gevent.thread; at the worker's exit
# Python clears modules in the reverse order of their import, so a module
# the master imported before the patch is cleared after gevent.thread, and a
# logging handler it holds (Flask's default handler) is then freed through
# that lock: "Exception ignored in: <function _removeHandlerRef ...>".
from app import logs
from app.compat import worker_app, worker_listen_addresses, worker_stopping
from app.config import Settings
from app.resources import HTTP_CONNECTIONS, raise_open_file_limit

# As many open files as the system lets this user have: the workers inherit
# it, and a reconnect storm needs a descriptor per browser (app/resources.py).
raise_open_file_limit()

#: The chat's settings, read once from the environment when gunicorn reads this file.
chat_settings = Settings.from_env()

bind = [chat_settings.http_bind]
worker_class = "gevent"
workers = 1
# Simultaneous HTTP connections per worker (gevent: one greenlet each). After
# a restart every browser asks for a session at once; beyond this many, new
# connections wait in the listen backlog, so both are well above a burst.
worker_connections = HTTP_CONNECTIONS
backlog = 4096
# Idle keep-alive connections are kept longer than clients keep theirs (Node's
# fetch: 4 s), so a client never sends a request on a connection the server is
# closing at that moment (a reset, "fetch failed"); browsers keep theirs
# longer still, and retry a request that failed on a reused connection.
keepalive = 10
# A stopping worker drains its WebSocket clients over CHAT_DRAIN_SECONDS, then has a margin to finish.
graceful_timeout = chat_settings.graceful_timeout
# A draining worker no longer tells the master it is alive (gunicorn closes its heartbeat file before
# worker_exit): during a rolling restart, the master must not take it for stuck before it is done.
timeout = max(30, graceful_timeout + 5)
accesslog = "-"
# CHAT_LOG_FORMAT=json: gunicorn's own lines (errors, access) as JSON too.
logconfig_dict = logs.gunicorn_logconfig(chat_settings.log_format)
# No gunicornc control socket: its default path is shared by every gunicorn
# of a user, so two chats on one machine would fight over it.
control_socket_disable = True


def on_starting(server):
    """Refuse a configuration that would split the rooms between processes, or expose a random key."""
    refusal = chat_settings.refusal(server.cfg.bind)
    if refusal:
        raise SystemExit(f"chat: {refusal}")
    if server.cfg.workers > 1 and not chat_settings.redis_url:
        raise SystemExit(
            f"chat: {server.cfg.workers} workers would each hold their own rooms; "
            "run one worker (-w 1), or share rooms through Redis by setting CHAT_REDIS_URL"
        )
    _metrics_directory()


def _metrics_directory():
    """Where every worker writes its metrics, so /metrics sums them (prometheus_client multiprocess mode).

    ``PROMETHEUS_MULTIPROC_DIR`` if set (emptied: old workers' files would
    count), else a fresh temporary directory removed when gunicorn exits.
    """
    directory = chat_settings.metrics_dir
    if directory:
        os.makedirs(directory, exist_ok=True)
        for name in os.listdir(directory):
            if name.endswith(".db"):
                os.remove(os.path.join(directory, name))
    else:
        directory = tempfile.mkdtemp(prefix="chat-metrics-")
        _export_to_workers("PROMETHEUS_MULTIPROC_DIR", directory)
        _created.append(directory)


def _export_to_workers(variable, value):
    """Set an environment variable for the workers: the one place this file writes the environment.

    The workers inherit the master's environment when they are forked; there
    prometheus_client (at import) and Settings.from_env read it.
    """
    os.environ[variable] = value


_created = []


def child_exit(server, worker):
    """A worker is gone: its live gauges stop counting."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    for directory in _created:
        shutil.rmtree(directory, ignore_errors=True)


#: In a worker: the greenlet that stops the chat's WebSocket server once the worker is told to stop.
_chat_stopper = None


def post_worker_init(worker):
    """Start the chat's WebSocket server in this worker; stop it when the worker stops."""
    global _chat_stopper
    from app.runtime import start_chat

    app = worker_app(worker)
    scheme = "https" if worker.cfg.is_ssl else "http"
    if worker.cfg.is_ssl:  # gunicorn's own TLS: cookies only over HTTPS, and HSTS
        app.config["SESSION_COOKIE_SECURE"] = True
    web_urls = []
    for address in worker_listen_addresses(worker):
        if isinstance(address, tuple):
            host = f"[{address[0]}]" if ":" in address[0] else address[0]
            web_urls.append(f"{scheme}://{host}:{address[1]}")
    chat = start_chat(app, web_urls)

    def stop_when_worker_stops():
        # gunicorn has no hook on SIGTERM: the clients are drained while the HTTP requests finish
        while not worker_stopping(worker):
            gevent.sleep(0.1)
        budget = worker.cfg.graceful_timeout - 2  # a --graceful-timeout shorter than the drain shortens it
        drain = min(chat_settings.drain_seconds, max(0.0, budget - 3))
        chat.stop(timeout=max(1.0, budget - drain), drain=drain)

    _chat_stopper = gevent.spawn(stop_when_worker_stops)


def worker_exit(server, worker):
    """The worker served its last HTTP request: let the chat finish stopping before the process exits.

    Its WebSocket clients must have been drained (docs/protocol.md §5, 1012)
    and the history must have had its last commit. gunicorn calls this hook
    in the worker once its ``run`` returned, and in the master for a worker
    that vanished (no chat to wait for there).
    """
    if _chat_stopper is not None:
        _chat_stopper.join(timeout=worker.cfg.graceful_timeout)
