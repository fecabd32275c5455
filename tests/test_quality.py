"""The code's own standards, checked by the test command: lint, types, layering."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_finds_no_lint_errors() -> None:
    result = run("ruff", "check", "app", "tests", "bench", "wsgi.py", "gunicorn.conf.py")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_leaves_code_unchanged() -> None:
    result = run("ruff", "format", "--check", "app", "tests", "bench", "wsgi.py", "gunicorn.conf.py")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_finds_no_type_errors_in_app() -> None:
    result = run("mypy", "--no-incremental", "app")
    assert result.returncode == 0, result.stdout + result.stderr


FORBIDDEN_IN_CORE = {"socket", "ssl", "select", "selectors", "gevent", "asyncio", "threading", "time"}


@pytest.mark.parametrize("path", sorted((ROOT / "app" / "ws").glob("*.py")), ids=lambda p: p.name)
def test_protocol_core_imports_no_io(path: Path) -> None:
    """app/ws is sans-I/O: bytes in, events out; no sockets, no gevent, no clock."""
    tree = ast.parse(path.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN_IN_CORE
