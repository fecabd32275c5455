"""The ``sessions`` scenario: 10,000 browsers asking for a session at once, then connecting.

    python -m bench.sessions [--clients 10000] [--concurrency 1000] [--nginx/--no-nginx] [--json out.json] [--keep DIR]
    python -m bench.run --scenarios sessions [--quick]        (the same, from the suite's runner)

The project alone, twice in one run: (1) ``gunicorn -c gunicorn.conf.py
wsgi:app`` directly, as the README runs it; (2) behind Debian's nginx
(``/usr/sbin/nginx``) with ``docs/deploy/nginx.conf``, its addresses
rewritten as tests/browser/test_behind_nginx.py does, the chat told
``CHAT_WS_PUBLIC_URL=/ws`` and nginx's origin. ``bench/sessions.js`` drives
both: each client, on a fresh TCP connection, ``POST /api/session`` with a
nick of its own, then the WebSocket from ``ws_url`` until ``hello``, kept open
to the end; 503/429 with Retry-After honoured with jitter, network errors
counted (there must be none). bench/README.md explains the figures.

Only in the benchmark's copies of nginx's configuration: ``limit_conn`` per
address for ``/ws`` is raised to the number of clients (they all come from
127.0.0.1), and the main file gives nginx's one worker room for every client
and its upstream connection (``worker_connections``, ``worker_rlimit_nofile``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.servers import REPO_ROOT, StartError, can_pin, pinned, process_gone, raise_nofile, serving

SESSIONS_JS = REPO_ROOT / "bench" / "sessions.js"
SITE = REPO_ROOT / "docs" / "deploy" / "nginx.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
SERVER_CPU, CLIENT_CPU = 0, 1
#: nginx shares the client's core: the chat keeps a core of its own in both rows.
NGINX_CPU = CLIENT_CPU
START_TIMEOUT = 15.0
STOP_TIMEOUT = 15.0
ROWS = ("direct", "nginx")

Result = dict[str, Any]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _port(url: str) -> int:
    found = re.search(r":(\d+)(?:/|$)", url)
    assert found, url
    return int(found.group(1))


# -- nginx ----------------------------------------------------------------------------------------------------------


#: nginx's worker processes: each holds its share of the clients, so each needs its share of descriptors.
NGINX_WORKERS = 2


def nginx_files(clients: int, concurrency: int) -> tuple[int, int]:
    """Each nginx worker's ``worker_connections`` and ``worker_rlimit_nofile`` for a burst of ``clients``.

    Each proxied client holds two connections in nginx's worker (the
    browser's and the one to the chat), each a descriptor: every WebSocket,
    plus ``concurrency`` requests under way. The listening socket is opened
    with ``reuseport``, so the kernel spreads the clients over the
    :data:`NGINX_WORKERS` workers by a hash of their addresses: a worker's
    share is ``1/NGINX_WORKERS`` of them, give or take a few per cent (a
    quarter more is allowed for), plus a margin.
    """
    connections = 2 * (clients + concurrency) * 5 // (4 * NGINX_WORKERS) + 1024
    return connections, connections + 1024


def render_site(clients: int, web_port: int, ws_port: int, listen_port: int) -> str:
    """docs/deploy/nginx.conf with the benchmark's addresses, and its per-address /ws limit raised to ``clients``."""
    site = SITE.read_text()
    for old, new in (
        ("server 127.0.0.1:8000;", f"server 127.0.0.1:{web_port};"),
        ("server 127.0.0.1:8001;", f"server 127.0.0.1:{ws_port};"),
        ("listen 80;", f"listen 127.0.0.1:{listen_port} reuseport;"),
        # every client comes from 127.0.0.1: 50 per address would refuse all but 50 of them
        ("limit_conn chat_ws_per_address 50;", f"limit_conn chat_ws_per_address {clients};"),
    ):
        if site.count(old) != 1:
            raise StartError(f"{SITE} no longer has {old!r} once")
        site = site.replace(old, new)
    return site


def main_config(directory: Path, clients: int, concurrency: int) -> str:
    """nginx's main file for the run (as the tests write theirs), with room for the burst."""
    connections, files = nginx_files(clients, concurrency)
    temp = directory / "temp"
    return f"""
daemon off;
master_process on;
worker_processes {NGINX_WORKERS};
worker_rlimit_nofile {files};
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
events {{ worker_connections {connections}; }}
http {{
    access_log {directory}/access.log;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    include {directory}/site.conf;
}}
"""


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (nginx's workers)."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = Path(f"/proc/{name}/stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(name))
    return found


@contextmanager
def nginx(
    directory: Path, clients: int, concurrency: int, ports: tuple[int, int, int], cpu: int | None
) -> Iterator[list[int]]:
    """Debian's nginx as its own master, on ``ports`` (web, ws, listen); yields its workers' PIDs."""
    if not Path(NGINX).exists():
        raise StartError("nginx is not installed (apt-get install nginx)")
    web_port, ws_port, port = ports
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "temp").mkdir(exist_ok=True)
    (directory / "site.conf").write_text(render_site(clients, web_port, ws_port, port))
    config = directory / "nginx.conf"
    config.write_text(main_config(directory, clients, concurrency))
    check = subprocess.run([NGINX, "-t", "-c", str(config)], capture_output=True, text=True, timeout=30)
    if check.returncode != 0:
        raise StartError(f"nginx -t refused the configuration:\n{check.stderr}")
    with (directory / "stderr.log").open("wb") as stderr:
        master = subprocess.Popen(
            pinned([NGINX, "-c", str(config)], cpu),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
            preexec_fn=raise_nofile,
        )
    workers: list[int] = []
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                workers = _children(master.pid)
                if len(workers) >= NGINX_WORKERS:
                    break
            except OSError:
                pass
            if master.poll() is not None or time.monotonic() > deadline:
                raise StartError(f"nginx did not start:\n{(directory / 'error.log').read_text(errors='replace')}")
            time.sleep(0.05)
        yield workers
    finally:
        _stop_nginx(master, workers)


def _stop_nginx(master: subprocess.Popen[bytes], workers: list[int]) -> None:
    """SIGQUIT to the master (graceful: the workers close their connections), SIGKILL by PID after the grace period."""
    if master.poll() is None:
        master.send_signal(signal.SIGQUIT)
        try:
            master.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            master.kill()
            master.wait(timeout=STOP_TIMEOUT)
    for pid in workers:
        deadline = time.monotonic() + STOP_TIMEOUT
        while not process_gone(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        try:
            if b"nginx" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)
        except (FileNotFoundError, ProcessLookupError):
            pass


# -- one row ----------------------------------------------------------------------------------------------------------


def run_client(config: dict[str, Any], cpu: int | None, log_path: Path, timeout: float) -> Result:
    """bench/sessions.js with ``config``; its JSON result (``error`` set if it failed)."""
    command = pinned(["node", str(SESSIONS_JS), json.dumps(config)], cpu)
    with log_path.open("wb") as log:
        try:
            done = subprocess.run(
                command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=log, timeout=timeout, preexec_fn=raise_nofile
            )
        except subprocess.TimeoutExpired:
            return {"error": f"the client ran over {timeout:.0f} s and was killed"}
    lines = done.stdout.decode(errors="replace").strip().splitlines()
    try:
        result: Result = json.loads(lines[-1])
    except (IndexError, ValueError):
        result = {"error": f"no result from the client (exit status {done.returncode})"}
    return result


def _files_short(clients: int, concurrency: int, behind_nginx: bool) -> str | None:
    """Why this process's open-file limit (which the children inherit) is too low for the run, if it is."""
    files, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = nginx_files(clients, concurrency)[1] if behind_nginx else clients + concurrency + 2200
    if files >= needed:
        return None
    return (
        f"the open-file limit is {files:,} (hard limit {hard:,}): {clients:,} clients need about {needed:,} "
        f"descriptors in {'nginx' if behind_nginx else 'the chat'}; raise the hard limit (ulimit -Hn, or root) "
        "or pass fewer --clients"
    )


def run(clients: int, concurrency: int, behind_nginx: bool, workdir: Path, pin: bool) -> Result:
    """One row: the burst against the chat directly, or through nginx."""
    if short := _files_short(clients, concurrency, behind_nginx):
        return {"error": short}
    workdir.mkdir(parents=True, exist_ok=True)
    deadline = 120 + clients / 20
    config: dict[str, Any] = {
        "clients": clients,
        "concurrency": concurrency,
        "clkTck": os.sysconf("SC_CLK_TCK"),
        "deadline": deadline,
    }
    settings: dict[str, object] = {}
    if behind_nginx:
        port = _free_port()  # nginx's: the chat must know the origin browsers see
        origin = f"http://127.0.0.1:{port}"
        settings = {"ws_public_url": "/ws", "allowed_origins": origin}
    try:
        with serving("project", workdir, SERVER_CPU if pin else None, **settings) as server:
            config["serverPid"] = server.pid
            if behind_nginx:
                ports = (_port(server.http_url), _port(server.ws_url), port)
                with nginx(workdir / "nginx", clients, concurrency, ports, NGINX_CPU if pin else None) as workers:
                    config.update(http=origin, proxyPids=workers)
                    result = run_client(config, CLIENT_CPU if pin else None, workdir / "client.log", deadline + 30)
            else:
                config["http"] = server.http_url
                result = run_client(config, CLIENT_CPU if pin else None, workdir / "client.log", deadline + 30)
            if "error" in result or result.get("failed"):
                result["serverLog"] = server.logs()[-2000:]
            return result
    except StartError as error:
        return {"error": str(error)}


# -- the table ------------------------------------------------------------------------------------------------------

#: (label, key path, format, better) of each figure, in the table's order.
FIGURES: tuple[tuple[str, tuple[str, ...], str, str], ...] = (
    ("sessions 200 / N", ("sessionRatio",), "{:.4f}", "higher"),
    ("WebSockets open / N", ("openRatio",), "{:.4f}", "higher"),
    ("network errors", ("networkErrorsTotal",), "{:,.0f}", "lower"),
    ("503/429 honoured", ("honouredTotal",), "{:,.0f}", ""),
    ("session p50 ms, per attempt", ("attemptMs", "p50"), "{:.1f}", "lower"),
    ("session p99 ms, per attempt", ("attemptMs", "p99"), "{:.1f}", "lower"),
    ("session p50 ms, to success", ("successMs", "p50"), "{:.1f}", "lower"),
    ("session p99 ms, to success", ("successMs", "p99"), "{:.1f}", "lower"),
    ("open→hello p99 ms", ("helloMs", "p99"), "{:.1f}", "lower"),
    ("seconds for all N", ("seconds",), "{:.2f}", "lower"),
    ("connections/s", ("connectionsPerSecond",), "{:,.0f}", "higher"),
    ("server CPU µs/client", ("serverCpuUsPerClient",), "{:,.0f}", "lower"),
    ("nginx CPU µs/client", ("proxyCpuUsPerClient",), "{:,.0f}", ""),
    ("client CPU %", ("loadgenCpuPercent",), "{:.0f}", ""),
)


def _get(result: Result, keys: tuple[str, ...]) -> float | None:
    value: Any = result
    for key in keys:
        if not isinstance(value, dict) or value.get(key) is None:
            return None
        value = value[key]
    return float(value)


def table_rows(results: dict[str, Result], clients: int) -> list[dict[str, Any]]:
    """One row per figure: each row's value and nginx/direct (the shape bench.run.format_table prints)."""
    rows = []
    for label, keys, fmt, better in FIGURES:
        values = {name: None if "error" in result else _get(result, keys) for name, result in results.items()}
        direct, proxied = values.get("direct"), values.get("nginx")
        rows.append(
            {
                "case": f"sessions {clients:,}",
                "metric": label,
                "better": better,
                "format": fmt,
                **{name: values.get(name) for name in ROWS},
                "nginx/direct": proxied / direct if proxied is not None and direct else None,
            }
        )
    return rows


def notes(results: dict[str, Result]) -> list[str]:
    """Failures by kind, early closes, and runs that failed."""
    out = []
    for name, result in results.items():
        if "error" in result:
            out.append(f"{name}: FAILED: {result['error'].splitlines()[0] if result['error'] else ''}")
            continue
        for kind, count in sorted(result.get("failures", {}).items()):
            network = kind in result.get("networkErrors", {})
            out.append(f"{name}: {count} × {kind}{' (network error)' if network else ''}")
        for kind, count in sorted(result.get("honoured", {}).items()):
            out.append(f"{name}: {count} × {kind} honoured (Retry-After)")
        if result.get("closedEarly"):
            out.append(f"{name}: {result['closedEarly']} WebSockets closed before the end")
        if result.get("loadgenCpuPercent", 0) > 90:
            out.append(f"{name}: the client was saturated ({result['loadgenCpuPercent']:.0f} % of its core)")
    return out


def failed(results: dict[str, Result]) -> bool:
    return any("error" in r or r.get("failed") or r.get("closedEarly") for r in results.values())


def main(argv: list[str] | None = None, *, quick: bool = False) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sessions", description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=1000 if quick else 10_000, help="N (default %(default)s)")
    parser.add_argument("--concurrency", type=int, default=200 if quick else 1000, help="C (default %(default)s)")
    parser.add_argument(
        "--nginx", action=argparse.BooleanOptionalAction, default=True, help="also through nginx (default: yes)"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the figures as JSON to PATH")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="keep gunicorn's, nginx's and the client's logs")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.concurrency < 1:
        parser.error("--clients and --concurrency must be at least 1")
    from bench.run import ensure_loadgen, format_table  # bench.run imports this module

    raise_nofile()
    ensure_loadgen()
    pin = can_pin()
    if not pin:
        print("bench: no taskset or fewer than 2 cores: the chat and the client are NOT pinned", file=sys.stderr)
    rows_run = ROWS if args.nginx else ROWS[:1]
    started = time.monotonic()
    results: dict[str, Result] = {}
    with tempfile.TemporaryDirectory(prefix="chat-sessions-") as scratch:
        root = args.keep or Path(scratch)
        for name in rows_run:
            print(f"bench: sessions {args.clients:,} — {name} …", file=sys.stderr, flush=True)
            results[name] = run(args.clients, args.concurrency, name == "nginx", root / f"sessions-{name}", pin)
    elapsed = time.monotonic() - started

    rows = table_rows(results, args.clients)
    remarks = notes(results)
    pinning = f"chat on core {SERVER_CPU}, client and nginx on core {CLIENT_CPU}" if pin else "not pinned"
    print(f"\nsessions — {args.clients:,} clients, {args.concurrency:,} at a time, {elapsed:.0f} s, {pinning}\n")
    ratios = ["nginx/direct"] if args.nginx else []
    print(format_table(rows, list(rows_run), ratios))
    if remarks:
        print("\nnotes:")
        for remark in remarks:
            print(f"  - {remark}")
    if args.json:
        report = {
            "clients": args.clients,
            "concurrency": args.concurrency,
            "seconds": elapsed,
            "pinned": pin,
            "results": results,
            "table": rows,
            "notes": remarks,
        }
        args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        print(f"\nbench: figures written to {args.json}", file=sys.stderr)
    return 1 if failed(results) else 0


if __name__ == "__main__":
    sys.exit(main())
