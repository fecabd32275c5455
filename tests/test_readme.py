"""The README's run commands, exactly as written, on a copy of the repository with nothing installed.

The first ``sh`` block of README.md builds its own ``.venv`` from
requirements.txt and starts gunicorn; it runs here with ``bash -c`` in a copy
of the tracked files (no ``.venv``, no ``instance/``), so a dependency
missing from requirements.txt fails this test as it would fail a newcomer.
pip's cache is allowed (a fresh install from it takes some seconds; from the
network, a minute or so). Then the README's development server,
``python wsgi.py``, runs from that same fresh venv.

Each run is used as a person would (the page, a session, a WebSocket that
joins the lobby and says hi) and then stopped with a signal: it must exit 0
within gunicorn's graceful timeout and print no traceback.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import (
    assert_clean,
    command_line,
    end_tree,
    free_port,
    gunicorn_master,
    runs_gunicorn,
    wait_for_output,
)
from tests.support.timeouts import scaled
from tests.support.user import run_wsgi_and_use_it, use_the_chat

ROOT = Path(__file__).resolve().parent.parent

#: How long the README's command may take to install and start (pip, from its cache or the network).
INSTALL_TIME = 240
#: gunicorn.conf.py's graceful_timeout, and a margin.
STOP_TIME = 15


def readme_run_command() -> str:
    """The README's first ``sh`` block: the command that runs the chat."""
    blocks = re.findall(r"```sh\n(.+?)\n```", (ROOT / "README.md").read_text(), re.DOTALL)
    assert blocks, "README.md has no ```sh block"
    return str(blocks[0])


def copy_tracked_files(destination: Path) -> None:
    """The repository's tracked files, as they are in the work tree, copied to ``destination``."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=scaled(30)
    ).stdout
    for name in listed.decode().split("\0"):
        source = ROOT / name
        if name and source.is_file():  # a tracked file deleted in the work tree is not copied
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)


def fresh_environment(**settings: str) -> dict[str, str]:
    """This environment without the dev venv, any PYTHON* variable or any CHAT_* setting, plus ``settings``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CHAT_", "PYTHON", "VIRTUAL_ENV", "PROMETHEUS_"))
    }
    dev_bin = str(Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin")
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != dev_bin)
    env.update(settings)
    return env


@pytest.fixture(scope="module")
def fresh_copy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A copy of the repository's tracked files, nothing installed; the README's venv is built in it."""
    directory = tmp_path_factory.mktemp("fresh-machine")
    copy_tracked_files(directory)
    assert not (directory / ".venv").exists()
    yield directory


def run_in(directory: Path, command: str, log_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``bash -c command`` in ``directory``, in a session of its own, its output (both streams) to ``log_path``."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            ["bash", "-c", command],
            cwd=directory,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@pytest.mark.slow
@pytest.mark.timeout(INSTALL_TIME + 120)
def test_the_readme_run_command_works_on_a_fresh_machine_and_stops_cleanly(fresh_copy: Path, tmp_path: Path) -> None:
    command = readme_run_command()
    assert command.startswith("python3 -m venv .venv && ") and "gunicorn" in command, command
    http_port, ws_port = free_port(), free_port()
    env = fresh_environment(CHAT_HTTP_BIND=f"127.0.0.1:{http_port}", CHAT_WS_BIND=f"127.0.0.1:{ws_port}")
    log_path = tmp_path / "readme-run.log"
    shell = run_in(fresh_copy, command, log_path, env)
    try:
        wait_for_output(log_path, rf"Listening at: http://127\.0\.0\.1:{http_port}\b", shell, scaled(INSTALL_TIME))
        wait_for_output(log_path, rf"listening on ws://127\.0\.0\.1:{ws_port}/ws", shell, scaled(30))
        master = gunicorn_master(shell.pid)
        assert master is not None, log_path.read_text()
        # the gunicorn of the venv the command built, not the one running these tests
        interpreter = command_line(master).split()[0]
        assert interpreter == str(fresh_copy / ".venv" / "bin" / "python3"), command_line(master)

        use_the_chat(f"http://127.0.0.1:{http_port}")

        assert runs_gunicorn(master)  # still ours: the PID was not recycled
        os.kill(master, signal.SIGTERM)
        status = shell.wait(timeout=scaled(STOP_TIME))  # bash ends with gunicorn's exit status
    finally:
        end_tree(shell, scaled(STOP_TIME))
    output = log_path.read_text(errors="replace")
    assert status == 0, output
    assert "Shutting down: Master" in output, output
    assert_clean(output)


@pytest.mark.slow
@pytest.mark.timeout(INSTALL_TIME + 120)
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_the_readme_development_server_runs_from_the_fresh_venv_and_stops_cleanly(
    fresh_copy: Path, tmp_path: Path, stop_signal: signal.Signals
) -> None:
    """README, Development: ``python wsgi.py``, with the venv the README's command builds."""
    assert "`python wsgi.py`" in (ROOT / "README.md").read_text()
    python = fresh_copy / ".venv" / "bin" / "python"
    if not python.exists():  # this test alone: build the venv as the README's command does, up to gunicorn
        install = readme_run_command().rpartition(" && ")[0]
        subprocess.run(
            ["bash", "-c", install], cwd=fresh_copy, env=fresh_environment(), check=True, timeout=scaled(INSTALL_TIME)
        )
    http_port, ws_port = free_port(), free_port()
    env = fresh_environment(
        CHAT_HTTP_BIND=f"127.0.0.1:{http_port}",
        CHAT_WS_BIND=f"127.0.0.1:{ws_port}",
        CHAT_DB=str(tmp_path / "chat.db"),
    )
    status, output = run_wsgi_and_use_it(
        python, fresh_copy, env, tmp_path / "wsgi.log", http_port, stop_signal, STOP_TIME
    )
    assert status == 0, output
    assert_clean(output)


def test_ci_runs_exactly_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"```sh\n(.+?)\n```", readme)
    test_command = next(c for c in commands if "pytest" in c)
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci_lines
