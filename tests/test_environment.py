"""app/config.Settings is the one reader of the environment; the settings gunicorn and wsgi.py need are its fields."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from app.config import Settings

ROOT = Path(__file__).resolve().parents[1]
#: What runs in the product: the package, gunicorn's configuration and the WSGI entry point.
PRODUCT = [*sorted((ROOT / "app").rglob("*.py")), ROOT / "gunicorn.conf.py", ROOT / "wsgi.py"]
READER = ROOT / "app" / "config.py"


def environment_reads(path: Path) -> list[str]:
    """Where ``path`` reads ``os.environ`` or ``os.getenv`` (``LINE: code``); setting a variable is no read."""
    source = path.read_text()
    tree = ast.parse(source, str(path))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            names = {alias.name for alias in node.names} & {"environ", "getenv", "environb", "getenvb"}
            if names:
                found.append(node)
            continue
        if not (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os"):
            continue
        if node.attr in ("getenv", "getenvb"):
            found.append(node)
        elif node.attr in ("environ", "environb"):
            parent = parents.get(node)
            writes = isinstance(parent, ast.Subscript) and isinstance(parent.ctx, (ast.Store, ast.Del))
            if not writes:
                found.append(node)
    return [f"{node.lineno}: {ast.get_source_segment(source, node)}" for node in sorted(found, key=lambda n: n.lineno)]


@pytest.mark.parametrize("path", PRODUCT, ids=lambda path: str(path.relative_to(ROOT)))
def test_only_app_config_reads_the_environment(path: Path) -> None:
    if path == READER:
        assert environment_reads(path), "app/config.py reads the environment: the scan must see it"
        return
    assert environment_reads(path) == [], f"{path.relative_to(ROOT)} reads the environment: make it a Settings field"


def test_the_scan_sees_reads_and_lets_writes_through(tmp_path: Path) -> None:
    module = tmp_path / "module.py"
    module.write_text(
        "import os\nfrom os import getenv\n"
        "a = os.environ.get('A')\nb = os.environ['B']\nc = os.getenv('C')\nd = 'D' in os.environ\n"
        "os.environ['E'] = 'e'\ndel os.environ['E']\n"
    )
    assert [line.split(":")[0] for line in environment_reads(module)] == ["2", "3", "4", "5", "6"]


def test_the_web_apps_bind_comes_from_chat_http_bind() -> None:
    assert Settings.from_env({}).http_bind == "127.0.0.1:8000"
    assert Settings.from_env({"CHAT_HTTP_BIND": "0.0.0.0:9000"}).http_bind == "0.0.0.0:9000"


def test_the_metrics_directory_comes_from_the_variable_prometheus_client_reads() -> None:
    assert Settings.from_env({}).metrics_dir == ""
    assert Settings.from_env({"PROMETHEUS_MULTIPROC_DIR": "/tmp/m"}).metrics_dir == "/tmp/m"
    assert Settings.from_env({"CHAT_METRICS_DIR": "/tmp/m"}).metrics_dir == "", "its only name is prometheus_client's"


def test_a_setting_that_is_not_read_from_the_environment_stays_unread() -> None:
    assert not Settings.from_env({"CHAT_RANDOM_SECRET_KEY": "1", "CHAT_SECRET_KEY": "k"}).random_secret_key


def test_chat_deflate_is_one_of_its_modes() -> None:
    assert Settings.from_env({}).deflate == "shared"
    assert Settings.from_env({"CHAT_DEFLATE": "per-client"}).deflate == "per-client"
    with pytest.raises(ValueError, match="CHAT_DEFLATE must be one of shared, per-client, off"):
        Settings.from_env({"CHAT_DEFLATE": "yes"})
