"""Redis killed and restarted under Feast reads.

Reader threads call ``get_online_features`` in a loop while the Redis behind the online store
is SIGKILLed and, after ``outage`` seconds, started again on the same port (its append-only
file brings the data back). The property: during the outage every read fails fast with
:class:`xemb.errors.Unavailable` (never hangs, never another error, never a wrong vector);
after the restart reads recover by themselves and return the published vectors again.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from tests.helpers.services import RedisProcess
from tests.reliability.feast_env import FeastEnv
from tests.reliability.figures import Figures
from xemb.errors import Unavailable

__all__ = ["redis_outage"]


def _read(env: FeastEnv, ids: list[int]) -> tuple[str, str]:
    try:
        out = env.read([env.good_row(i) for i in ids])
    except Unavailable as exc:
        return "UNAVAILABLE", str(exc)[:120]
    except Exception as exc:  # noqa: BLE001 - anything else breaks the property
        return f"CRASH {type(exc).__name__}", str(exc)[:120]
    exact = all(np.allclose(out["full"][j], env.items[i]) for j, i in enumerate(ids))
    return ("OK", "") if exact else ("WRONG_VALUES", str(ids))


def _reader(env: FeastEnv, stop: threading.Event, figures: Figures, lock: threading.Lock,
            last_ok: list[float]) -> None:
    ids = sorted(env.items)[:5]
    while not stop.is_set():
        start = time.perf_counter()
        code, detail = _read(env, ids)
        with lock:
            figures.record(code, time.perf_counter() - start,
                           expected=code in ("OK", "UNAVAILABLE"), example=detail)
            if code == "OK":
                last_ok[0] = time.monotonic()


def redis_outage(env: FeastEnv, redis: RedisProcess, *, warm: float = 1.0, outage: float = 2.0,
                 readers: int = 2, recover_within: float = 20.0) -> Figures:
    figures, lock = Figures("Redis SIGKILL + restart under Feast reads"), threading.Lock()
    stop, last_ok = threading.Event(), [0.0]
    threads = [threading.Thread(target=_reader, args=(env, stop, figures, lock, last_ok))
               for _ in range(readers)]
    for t in threads:
        t.start()
    try:
        time.sleep(warm)  # scenario timing: reads before the kill, not synchronisation
        redis.kill()
        time.sleep(outage)
        restarted = time.monotonic()
        redis.start()
        deadline = restarted + recover_within
        while last_ok[0] < restarted and time.monotonic() < deadline:
            time.sleep(0.01)
        recovered = last_ok[0] - restarted if last_ok[0] >= restarted else float("inf")
        time.sleep(warm)
    finally:
        stop.set()
        for t in threads:
            t.join()
    figures.notes.append(f"first good read {recovered:.2f} s after the restart")
    figures.recovery_s = recovered  # type: ignore[attr-defined]
    return figures
