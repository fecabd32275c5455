"""Processes the tests start: free ports, finding a process tree through ``/proc``, ending it by PID.

Only processes descending from one a test started are ever signalled, and a
PID is checked to still run what we started before it is signalled.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

#: The repository's root: where the chat and the echo server are started from.
REPO_ROOT = Path(__file__).resolve().parents[2]

#: What a clean stop must not print (a traceback, or an exception Python could only ignore).
UNCLEAN = ("Traceback", "Exception ignored")


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on (for a server that must be told its port)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def end_process(process: subprocess.Popen[Any], timeout: float, sig: int = signal.SIGTERM) -> None:
    """Send ``sig`` to a process we started, if it still runs; SIGKILL it after ``timeout`` seconds."""
    if process.poll() is None:
        process.send_signal(sig)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


def stop_process(process: subprocess.Popen[str], timeout: float) -> int:
    """SIGTERM the process we started, SIGKILL it if it lingers; its exit status (its stdout closed)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)
    if process.stdout is not None:
        process.stdout.close()
    return process.returncode


def first_line(process: subprocess.Popen[str], timeout: float) -> str:
    """The first line the process prints, waiting at most ``timeout`` seconds ('' if none)."""
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    reader = threading.Thread(target=lambda: lines.put(process.stdout.readline()), daemon=True)
    reader.start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        return ""


def process_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (a zombie left for init counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rpartition(")")[2].split()[0] in {"Z", "X"}


def is_gunicorn(pid: int) -> bool:
    """``pid`` is still a gunicorn process (so signalling it cannot hit a recycled PID)."""
    try:
        return b"gunicorn" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return False


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for ``pid`` to end; whether it did."""
    deadline = time.monotonic() + timeout
    while not process_gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def kill_worker(pid: int, sig: int = signal.SIGKILL) -> None:
    """Signal a worker of ours if it is still a gunicorn process."""
    if not process_gone(pid) and is_gunicorn(pid):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def parent_of(pid: int) -> int | None:
    """The parent PID of ``pid``, or None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return int(stat.rpartition(")")[2].split()[1])


def command_line(pid: int) -> str:
    """``pid``'s command line, its arguments joined by spaces ('' once it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def descendants(pid: int) -> list[int]:
    """Every living process under ``pid`` (children first, then theirs)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            parent = parent_of(int(entry.name))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry.name))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(0), []):
            found.append(child)
            queue.append(child)
    return found


def runs_gunicorn(pid: int) -> bool:
    """Whether ``pid`` runs gunicorn's script (``gunicorn ...`` or ``python .../gunicorn ...``)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError):
        return False
    return any(Path(arg.decode(errors="replace")).name == "gunicorn" for arg in argv[:2])


def gunicorn_master(root: int) -> int | None:
    """The gunicorn master at or under ``root``: a gunicorn process whose parent is not one.

    ``bash -c 'a && b && gunicorn ...'`` may run gunicorn as a child, or exec it as its last command.
    """
    for pid in [root, *descendants(root)]:
        parent = parent_of(pid)
        if runs_gunicorn(pid) and parent is not None and not runs_gunicorn(parent):
            return pid
    return None


def end_tree(process: subprocess.Popen[Any], timeout: float) -> None:
    """End ``process`` and whatever still runs under it: SIGTERM by PID, SIGKILL after ``timeout`` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = [*descendants(process.pid), process.pid] if process.poll() is None else descendants(process.pid)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and (process.poll() is None or descendants(process.pid)):
            time.sleep(0.05)
        if process.poll() is not None and not descendants(process.pid):
            return
    process.wait(timeout=timeout)


def wait_for_output(log_path: Path, pattern: str, process: subprocess.Popen[Any], timeout: float) -> re.Match[str]:
    """The first match of ``pattern`` in ``log_path``; fails if ``process`` ends or ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    while True:
        text = log_path.read_text(errors="replace")
        match = re.search(pattern, text)
        if match:
            return match
        if process.poll() is not None or time.monotonic() > deadline:
            status = process.poll()
            raise AssertionError(f"no {pattern!r} in the output (exit status {status}):\n{text[-20000:]}")
        time.sleep(0.1)


def _http(url: str, body: object = None) -> tuple[int, str, bytes]:
    """Status, content type and body of a GET (or a JSON POST when ``body`` is given), ignoring proxies."""


def assert_clean(output: str) -> None:
    """No traceback, nor an ignored exception, anywhere in ``output``."""
    for word in UNCLEAN:
        assert word not in output, f"{word!r} in the output:\n{output[-20000:]}"
