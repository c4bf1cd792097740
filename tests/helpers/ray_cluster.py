"""A local Ray cluster in its own process, started by the Ray engine's own code path
(``ray_session`` without an address), for tests and benchmarks to join by address.

``python -m tests.helpers.ray_cluster CPUS MB`` prints ``address HOST:PORT AUTH_MODE`` once the
cluster is up and keeps it until its standard input closes (the parent closing the pipe, or
dying), then shuts it down. :func:`ray_cluster` wraps that as a context manager. Ray >= 2.59
starts local clusters with token authentication, and a driver joining by address must then
say so itself (``RAY_AUTH_MODE=token``; the token is in ``~/.ray/auth_token``), so the
context sets that variable in this process while it lasts.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

__all__ = ["ray_cluster"]

REPO = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def ray_cluster(cpus: int = 2, object_store_mb: int = 300) -> Iterator[str]:
    """A local Ray of ``cpus`` CPUs; yields its address."""
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "tests.helpers.ray_cluster", str(cpus),
                             str(object_store_mb)], cwd=REPO, env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        line = proc.stdout.readline()  # blocks until the cluster is up (or the helper died)
        if not line.startswith("address "):
            raise RuntimeError(f"the Ray cluster did not start (exit {proc.poll()}): {line!r}")
        _, address, mode = line.split()
        before = os.environ.get("RAY_AUTH_MODE")
        os.environ["RAY_AUTH_MODE"] = mode
        try:
            yield address
        finally:
            if before is None:
                os.environ.pop("RAY_AUTH_MODE", None)
            else:
                os.environ["RAY_AUTH_MODE"] = before
    finally:
        proc.stdin.close()
        proc.wait(timeout=120)


def _main(cpus: int, object_store_mb: int) -> None:
    from xemb.embedders.engine_ray import cluster_address, ray_session
    from xemb.settings.offline import BuildConfig, RayConfig

    build = BuildConfig(ray=RayConfig(local_cpus=cpus, object_store_mb=object_store_mb))
    with ray_session(build):
        address = cluster_address()
        print(f"address {address} {os.environ.get('RAY_AUTH_MODE', 'disabled')}", flush=True)
        sys.stdin.read()  # until the parent closes the pipe


if __name__ == "__main__":
    _main(int(sys.argv[1]), int(sys.argv[2]))
