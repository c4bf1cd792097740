"""Redis killed and restarted during Feast reads: fast Unavailable errors, then recovery."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from tests.helpers.services import RedisProcess, redis_binary
from tests.reliability.feast_env import feast_env
from tests.reliability.redis_outage import redis_outage

pytestmark = [pytest.mark.reliability, pytest.mark.redis, pytest.mark.integration]


@pytest.fixture()
def redis(tmp_path: Path):
    if redis_binary() is None:
        pytest.skip("redis-server not installed (CI installs it in .ci/run)")
    (tmp_path / "redis").mkdir()
    proc = RedisProcess(data_dir=tmp_path / "redis")
    proc.start()
    yield proc
    proc.stop()


def test_reads_fail_fast_while_redis_is_down_and_recover(tmp_path: Path, redis) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        env = feast_env(tmp_path / "root", backend="redis", redis_url=redis.url)
    figures = redis_outage(env, redis, warm=1.0, outage=6.0)
    assert figures.unexpected == 0, figures.examples
    assert figures.codes["UNAVAILABLE"] > 0 and figures.codes["OK"] > 0, " | ".join(figures.row())
    # A read during the outage fails with Unavailable once redis-py's own connection retries
    # (about 4 s with redis 8's defaults) are spent; it never hangs beyond that.
    assert max(figures.latencies) < 6.0, " | ".join(figures.row())
    assert figures.recovery_s < 5.0  # type: ignore[attr-defined]
