"""Property-based fuzzing of Feast entity rows through ``get_online_features``.

Rows are drawn around a good ranking row: any key may be dropped, renamed or given a value of
any type (ints beyond int64, NaN and 1e200 vectors, empty lists, huge strings, None), and the
whole ``entity_rows`` may be empty, ragged or columnar. The property: the call answers, or
raises an :class:`xemb.errors.XembError` (InvalidArgument naming a field, FailedPrecondition
for a version mismatch), never another exception; every affinity it answers is finite.
"""

from __future__ import annotations

import math
import time
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.reliability.feast_env import FeastEnv
from tests.reliability.figures import Figures
from xemb.errors import XembError
from xemb.feature_repo import names

__all__ = ["rows_strategy", "fuzz_feast"]

KEYS = ("item_id", "user_id", "target_domain", names.REQUEST_VECTOR, names.REQUEST_VERSION)


def _any_value(env: FeastEnv) -> st.SearchStrategy[Any]:
    floats = st.one_of(st.floats(-2, 2), st.floats(allow_nan=True, allow_infinity=True),
                       st.sampled_from([1e200, -3.5e38, 3.4e38]))
    return st.one_of(
        st.sampled_from(sorted(env.items)[:20]), st.integers(-(2**70), 2**70),
        st.sampled_from([u for u, _ in env.users] + [d for _, d in env.users] + [env.version]),
        st.text(max_size=20), st.just("x" * 10_000), st.none(), st.booleans(), floats,
        st.lists(floats, min_size=env.dim, max_size=env.dim), st.lists(floats, max_size=3),
        st.just([]), st.just({}))


def _row(env: FeastEnv) -> st.SearchStrategy[dict[str, Any]]:
    changes = st.dictionaries(st.sampled_from(KEYS + ("extra",)), _any_value(env), max_size=3)
    dropped = st.sets(st.sampled_from(KEYS), max_size=1)
    good = st.builds(env.good_row, st.sampled_from(sorted(env.items)[:20] + [10**9]),
                     st.integers(0, 5))
    return st.builds(lambda row, change, drop: {k: v for k, v in {**row, **change}.items()
                                                if k not in drop}, good, changes, dropped)


def rows_strategy(env: FeastEnv) -> st.SearchStrategy[Any]:
    as_rows = st.lists(_row(env), max_size=4)
    as_columns = as_rows.map(lambda rows: {k: [r.get(k) for r in rows]
                                           for k in (rows[0] if rows else {})})
    return st.one_of(as_rows, as_rows, as_columns, st.sampled_from([None, "rows", 5, [[]]]))


def _finite(out: dict[str, list[Any]]) -> bool:
    return all(v is None or math.isfinite(v) for name in ("affinity_dot", "affinity_cosine")
               for v in out.get(name, []))


def _outcome(env: FeastEnv, rows: Any) -> tuple[str, str]:
    try:
        out = env.read(rows)
    except XembError as exc:
        return exc.grpc_code, str(exc)[:200]
    except Exception as exc:  # noqa: BLE001 - the property: nothing but XembError escapes
        return f"CRASH {type(exc).__name__}", str(exc)[:200]
    return ("OK", "") if _finite(out) else ("OK_NON_FINITE", str(out)[:200])


def fuzz_feast(env: FeastEnv, examples: int, *, derandomize: bool = True,
               figures: Figures | None = None) -> Figures:
    figures = figures or Figures("Feast fuzz: entity rows")

    @settings(max_examples=examples, deadline=None, database=None, derandomize=derandomize,
              suppress_health_check=list(HealthCheck), print_blob=False)
    @given(rows=rows_strategy(env))
    def check(rows: Any) -> None:
        start = time.perf_counter()
        code, detail = _outcome(env, rows)
        ok = not code.startswith(("CRASH", "OK_NON_FINITE", "INTERNAL"))
        figures.record(code, time.perf_counter() - start, expected=ok,
                       example=f"{rows!r:.120} -> {detail}")
        assert ok, f"{code}: {detail}"

    check()
    return figures
