"""Reliability soak: the scenarios of tests/reliability, run longer, as one table.

    python benchmarks/soak.py [--examples 5000] [--step-seconds 10] [--quick]

Runs, against a synthetic version served on a free loopback port and a Feast root (SQLite):
fuzzing of every gRPC request field, fuzzing of Feast entity rows, an overload ramp (1 to 64
concurrent callers against ``max_concurrent_rpcs`` 4) and, where ``redis-server`` is
installed, Redis SIGKILLed for 6 s and restarted under Feast reads. ``--quick`` uses the CI
sizes. Prints one Markdown table; "unexpected" must be 0. Not a test.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import _repo  # noqa: F401  (tests.helpers and tests.reliability importable)
import grpc

from tests.helpers.services import RedisProcess, redis_binary
from tests.reliability.feast_env import feast_env
from tests.reliability.feast_fuzz import fuzz_feast
from tests.reliability.figures import Figures, table
from tests.reliability.grpc_fuzz import fuzz_grpc
from tests.reliability.overload import ramp
from tests.reliability.redis_outage import redis_outage
from tests.reliability.serving_env import served


def _fuzz_grpc(tmp: Path, examples: int) -> Figures:
    with served(tmp / "grpc") as (_, client, hints):
        return _counted(lambda f: fuzz_grpc(client.channel, hints, examples,
                                            derandomize=False, figures=f),
                        Figures("gRPC fuzz: every request field"))


def _fuzz_feast(tmp: Path, examples: int) -> Figures:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        env = feast_env(tmp / "feast")
        return _counted(lambda f: fuzz_feast(env, examples, derandomize=False, figures=f),
                        Figures("Feast fuzz: entity rows"))


def _counted(run, figures: Figures) -> Figures:  # type: ignore[no-untyped-def]
    """A failing property stops hypothesis; the figures so far still make the table."""
    try:
        run(figures)
    except AssertionError as exc:
        figures.notes.append(f"stopped: {str(exc).splitlines()[0][:80]}")
    return figures


def _redis_outage(tmp: Path, outage: float) -> list[Figures]:
    if redis_binary() is None:
        return []
    (tmp / "redis").mkdir()
    redis = RedisProcess(data_dir=tmp / "redis")
    redis.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            env = feast_env(tmp / "redis-root", backend="redis", redis_url=redis.url)
            return [redis_outage(env, redis, outage=outage)]
    finally:
        redis.stop()


def _overload(tmp: Path, seconds: float) -> list[Figures]:
    with served(tmp / "load", max_concurrent_rpcs=4, max_workers=4) as (_, client, hints):
        channel: grpc.Channel = client.channel
        return ramp(channel, list(hints.ids[:100]), steps=(1, 4, 16, 64), seconds=seconds)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=5000, help="fuzzed calls per fuzzer")
    ap.add_argument("--step-seconds", type=float, default=10.0, help="per overload step")
    ap.add_argument("--quick", action="store_true", help="CI sizes (600/300 examples, 1 s)")
    args = ap.parse_args(argv)
    grpc_n, feast_n = (600, 300) if args.quick else (args.examples, args.examples)
    seconds = 1.0 if args.quick else args.step_seconds
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [_fuzz_grpc(Path(tmp), grpc_n), _fuzz_feast(Path(tmp), feast_n),
                *_overload(Path(tmp), seconds), *_redis_outage(Path(tmp), 6.0)]
    print(f"xemb reliability soak - {platform.machine()}, {platform.python_version()}, "
          f"{time.monotonic() - start:.0f} s\n")
    print(table(rows))
    return 1 if any(r.unexpected for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
