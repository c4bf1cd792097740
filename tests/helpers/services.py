"""Real services for tests and benchmarks: a throwaway ``redis-server`` on a free loopback
port that a test can SIGKILL and start again on the same port."""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tests.helpers.wait import wait_for

__all__ = ["free_port", "redis_binary", "RedisProcess", "redis_server"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_binary() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    return "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


class RedisProcess:
    """One ``redis-server`` (no persistence) bound to 127.0.0.1:``port``."""

    def __init__(self, binary: str | None = None, port: int | None = None,
                 data_dir: Path | None = None) -> None:
        """``data_dir``: keep the data in an append-only file there (fsync always), so a
        restart after SIGKILL comes back with what was written."""
        self.binary = binary or redis_binary() or "redis-server"
        self.port = port or free_port()
        self.data_dir = data_dir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 10.0) -> None:
        keep = (["--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.data_dir)]
                if self.data_dir else ["--appendonly", "no"])
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", *keep],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        proc = self.proc

        def up() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {proc.returncode}")
            return _accepts(self.port)

        wait_for(up, timeout_s, interval=0.02, what=f"redis-server on port {self.port}")

    def kill(self) -> None:
        """SIGKILL: no shutdown, every connection drops at once (its data is gone too)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@contextlib.contextmanager
def redis_server(binary: str | None = None, timeout_s: float = 10.0) -> Iterator[str]:
    """Start a throwaway ``redis-server`` on a free loopback port; yield ``host:port``."""
    redis = RedisProcess(binary)
    redis.start(timeout_s)
    try:
        yield redis.url
    finally:
        redis.stop()
