"""Fuzzing Feast entity rows: answers or xemb errors naming the field, never a crash or an
infinite affinity; exact vectors afterwards."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from tests.reliability.feast_env import feast_env
from tests.reliability.feast_fuzz import fuzz_feast

pytestmark = [pytest.mark.reliability, pytest.mark.integration,
              pytest.mark.filterwarnings("ignore::RuntimeWarning")]


def test_fuzzed_entity_rows_answer_or_name_the_field(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        env = feast_env(tmp_path)
    figures = fuzz_feast(env, examples=300)
    assert figures.unexpected == 0, figures.examples
    assert figures.codes["OK"] > 10 and figures.codes["INVALID_ARGUMENT"] > 50
    item = sorted(env.items)[0]
    out = env.read([env.good_row(item)])
    assert out["full"][0] == pytest.approx(env.items[item])
    assert out["xemb_version"] == [env.version]
