"""Redis for the tests: the machine's own on 127.0.0.1:6379 under a prefix of a test's own, or a private one.

Chats sharing one Redis must differ in their key prefix
(``CHAT_REDIS_PREFIX``): :func:`shared_prefix` makes one and deletes its keys
afterwards. :class:`RedisServer` is a ``redis-server`` a test starts on a free
port, to stop and restart it.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from tests.support.processes import free_port
from tests.support.timeouts import scaled

#: The machine's Redis, shared by every test under its own key prefix.
SHARED_REDIS = "redis://127.0.0.1:6379/0"


@contextmanager
def shared_prefix() -> Iterator[str]:
    """A key prefix of its own on the shared Redis; its keys are deleted on exit."""
    name = f"chat-test-{secrets.token_hex(4)}"
    client = redis.Redis.from_url(SHARED_REDIS)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        client.close()
        pytest.fail(f"the tests need Redis on 127.0.0.1:6379 ({exc})")
    try:
        yield name
    finally:
        keys = list(client.scan_iter(match=f"{name}:*"))
        if keys:
            client.delete(*keys)
        client.close()


class RedisServer:
    """A redis-server of the test's own: appending every write to disk before answering, or keeping nothing."""

    def __init__(self, directory: Path, *, persistent: bool = True) -> None:
        self.directory = directory
        self.port = free_port()
        self.persistent = persistent
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed (apt-get install redis-server)")
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                *(["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else ["--appendonly", "no"]),
                "--save",
                "",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + scaled(10)
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    self.stop()
                    pytest.fail("redis-server did not start")
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=scaled(10))
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


#: The admin password and push token of the cluster nodes the tests start (``start_node``).
ADMIN_PASSWORD = "cluster-admin-password"
API_TOKEN = "cluster-api-token"
