"""Issue 8 (profile): LLM4CDSR's hierarchical user profiles with a tiny GPT-2 built from a
config: per-domain summaries then one profile per training user, cached on disk (a second
run generates nothing, a killed run resumes), encoded by the build's encoder and published
as the version's ``user_profiles.parquet`` and the Feast ``user_profiles`` view; off, it
changes no stage key."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.helpers.killed_generation import kill_after_cached
from tests.integration.test_describe import make_tiny_gpt2

if TYPE_CHECKING:
    from xemb.embedders.profile import History

pytestmark = pytest.mark.integration

PROFILE = {"enabled": True, "max_new_tokens": 3, "batch_size": 64, "recent_items": 3}


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="module")
def small_slice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 training users (~360 items): generation on CPU costs ~10 ms a text."""
    from tests.conftest import make_slice

    return make_slice(tmp_path_factory.mktemp("profile-slice") / "data", n_train=8,
                      n_eval=4, n_cold=4)


def _encoder(bert: Path) -> dict[str, object]:
    """No ONNX export of the encoder: profiles do not need it, and it halves the build."""
    return {"model": str(bert), "export_onnx": False, "backend": "torch"}


def _config(folder: Path, data: Path, bert: Path, gpt2: Path, **profile: object):  # type: ignore[no-untyped-def]
    from tests.conftest import write_config
    from xemb.settings import load_config

    if not (folder / "data").exists():
        (folder / "data").symlink_to(data)
    return load_config(write_config(folder, {
        "encoder": _encoder(bert), "feast": {"enabled": True},
        "profile": {**PROFILE, "model": str(gpt2), **profile}}))


@pytest.fixture
def generations(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Prompts the generator was asked for, per call (the describe/profile generator)."""
    from xemb.embedders.generate import Generator

    calls: list[int] = []
    real = Generator.generate

    def counted(self: Generator, prompts: list[str]) -> list[str]:
        calls.append(len(prompts))
        return real(self, prompts)

    monkeypatch.setattr(Generator, "generate", counted)
    return calls


def test_a_build_with_profiles_publishes_and_serves_them(
        small_slice: Path, tiny_bert: Path, gpt2: Path, tmp_path: Path,
        generations: list[int]) -> None:
    import json
    import shutil

    import numpy as np
    import pyarrow.parquet as pq

    from xemb import layout
    from xemb.embedders.pipeline import build, prepare
    from xemb.embedders.profile import _domain_prompts, _profile_prompts, histories
    from xemb.feature_repo import get_feature_store

    cfg = _config(tmp_path, small_slice, tiny_bert, gpt2)
    manifest = build(cfg)
    assert manifest is not None
    ctx = prepare(cfg)
    train = ctx.ds.sequences["train"]
    base = cfg.build.root / "versions" / manifest.version
    table = pq.read_table(base / layout.USER_PROFILES)
    assert layout.USER_PROFILES in manifest.files  # checksummed with the version
    assert table.column("user_id").to_pylist() == [u for u, _ in train]
    assert manifest.counts["user_profiles"] == len(train)
    vectors = np.asarray(table.column("vector").to_pylist(), np.float32)
    assert vectors.shape == (len(train), manifest.dims["semantic"]) == (len(train), 32)
    assert manifest.dims["profile"] == 32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    profiles = table.column("profile").to_pylist()
    assert all(isinstance(p, str) for p in profiles) and len(set(profiles)) > 1
    for (_, rows), summaries in zip(train, table.column("domain_summaries").to_pylist()):
        domains = {ctx.ds.domains[d] for d in ctx.ds.item_domain[rows]}
        assert set(json.loads(summaries)) == domains  # one summary per domain of the history
    # one generation per distinct prompt: per (user, domain of their history), then per user
    users = histories(ctx.ds, cfg.profile.recent_items)
    summaries = [json.loads(s) for s in table.column("domain_summaries").to_pylist()]
    prompts = _domain_prompts(cfg.profile, users) + _profile_prompts(cfg.profile, summaries)
    assert sum(generations) == len(set(prompts))
    # Feast serves text and vector of this version
    fs = get_feature_store(cfg.build.root)
    got = fs.get_online_features(
        features=["user_profiles:profile", "user_profiles:vector", "user_profiles:xemb_version"],
        entity_rows=[{"user_id": u} for u, _ in train[:5]]).to_dict()
    assert got["profile"] == profiles[:5]
    assert np.array_equal(np.asarray(got["vector"], np.float32), vectors[:5])
    assert set(got["xemb_version"]) == {manifest.version}
    # a second build generates nothing; the stage run again takes every text from the cache
    generations.clear()
    again = build(cfg)
    assert again is not None and again.version == manifest.version
    shutil.rmtree(ctx.out("profile"))
    build(cfg, stages=["profile"])
    assert generations == []
    assert pq.read_table(ctx.out("profile") / layout.USER_PROFILES).equals(table)


def test_profile_off_leaves_every_stage_key_unchanged(
        small_slice: Path, tiny_bert: Path, gpt2: Path, tmp_path: Path) -> None:
    from tests.conftest import write_config
    from xemb.embedders.pipeline import prepare
    from xemb.settings import load_config

    (tmp_path / "data").symlink_to(small_slice)
    plain = prepare(load_config(write_config(tmp_path, {"encoder": _encoder(tiny_bert),
                                                        "feast": {"enabled": True}})))
    off = prepare(_config(tmp_path, small_slice, tiny_bert, gpt2, enabled=False,
                          recent_items=7, domain_prompt="{domain}? {titles}"))
    on = prepare(_config(tmp_path, small_slice, tiny_bert, gpt2))
    prompt = prepare(_config(tmp_path, small_slice, tiny_bert, gpt2,
                             profile_prompt="all: {summaries}"))
    assert off.keys == plain.keys and "profile" not in off.keys
    for name in ("encode", "adapt", "intents", "compose"):
        assert on.keys[name] == plain.keys[name]  # profiles feed nothing but publish
    assert on.keys["publish"] != plain.keys["publish"]
    assert prompt.keys["profile"] != on.keys["profile"]
    assert prompt.keys["publish"] != on.keys["publish"]
    batch = prepare(_config(tmp_path, small_slice, tiny_bert, gpt2, batch_size=5))
    assert batch.keys == on.keys  # batch size changes no text


@pytest.mark.parametrize(("profile", "field", "message"), [
    ({"domain_prompt": "{domain}: {titles} by {brand}"}, "profile.domain_prompt",
     "unknown placeholder {brand}"),
    ({"profile_prompt": "{summaries} in {domain}"}, "profile.profile_prompt",
     "unknown placeholder {domain}"),
    ({"domain_prompt": "likes {domain}"}, "profile.domain_prompt", "must use {titles}"),
    ({"profile_prompt": "{summaries"}, "profile.profile_prompt", "not a valid template"),
    ({"recent_items": 0}, "profile.recent_items", "greater than or equal to 1")])
def test_bad_profile_config_names_the_field(tmp_path: Path, profile: dict, field: str,
                                            message: str) -> None:
    import yaml

    from xemb.errors import ConfigError
    from xemb.settings import load_config

    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump({"profile": {"enabled": True, **profile}}))
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")) as err:
        load_config(path)
    assert message in str(err.value)


def test_profile_on_without_a_model_is_a_config_error(small_slice: Path, tiny_bert: Path,
                                                       tmp_path: Path) -> None:
    from xemb.embedders.pipeline import prepare
    from xemb.errors import ConfigError

    cfg = _config(tmp_path, small_slice, tiny_bert, tmp_path / "no-such-model")
    with pytest.raises(ConfigError, match=r"profile\.model: a local causal LM folder") as err:
        prepare(cfg)
    assert err.value.field == "profile.model"


_CHILD = """
import sys, time
from pathlib import Path
from xemb.embedders import generate, profile
from tests.integration.test_profile import _histories
from xemb.settings.offline import ProfileConfig
slow = generate.Generator.generate
def generate_slowly(self, prompts):
    time.sleep(0.3)
    return slow(self, prompts)
generate.Generator.generate = generate_slowly
cfg = ProfileConfig(enabled=True, model=Path(sys.argv[1]), max_new_tokens=3, batch_size=2)
profile.profile_users(cfg, _histories(), Path(sys.argv[2]))
"""


def _histories() -> list[History]:
    from xemb.embedders.profile import History

    return [History(f"u{i}", {"food": [f"snack {i}", f"tea {i}"], "kitchen": [f"pan {i}"]})
            for i in range(8)]


def test_a_killed_run_resumes(gpt2: Path, tmp_path: Path) -> None:
    from xemb.embedders.profile import profile_users
    from xemb.settings.offline import ProfileConfig

    cache, users = tmp_path / "cache", _histories()
    total = 3 * len(users)  # two domain summaries and one profile per user
    done = kill_after_cached(_CHILD, [str(gpt2), str(cache)], cache, 6,
                             "the child to generate 6 texts", interval=0.05)
    assert 6 <= done < total, done
    cfg = ProfileConfig(enabled=True, model=gpt2, max_new_tokens=3, batch_size=2)
    made = profile_users(cfg, users, cache, log=lambda _: None)
    assert made.generated <= total - done  # only what the killed run had not finished
    assert len(made.profiles) == len(users)
    again = profile_users(cfg, users, cache, log=lambda _: None)
    assert again.generated == 0
    assert (again.summaries, again.profiles) == (made.summaries, made.profiles)


@pytest.mark.filterwarnings("ignore:On demand feature view:RuntimeWarning")
def test_a_version_without_profiles_has_no_rows_there(tmp_path: Path) -> None:
    """Reading ``user_profiles`` from a version built with profile off gives nulls (online
    and in the history), not an error."""
    from datetime import datetime, timezone

    import pandas as pd

    from tests.helpers.synthetic_feast import make_version
    from xemb.feature_repo import get_feature_store, publish_to_feast
    from xemb.feature_repo.publish import after_switch
    from xemb.settings import XembConfig
    from xemb.store import VersionStore

    cfg = XembConfig.model_validate({"build": {"root": str(tmp_path)}})
    store = VersionStore(tmp_path)
    version = make_version(store, n_items=20,
                           created_at=datetime(2026, 11, 19, tzinfo=timezone.utc))
    publish_to_feast(cfg, store, version)
    store.set_current(version)
    after_switch(store)
    fs = get_feature_store(tmp_path)
    got = fs.get_online_features(features=fs.get_feature_service("xemb_user_profiles"),
                                 entity_rows=[{"user_id": "u1"}]).to_dict()
    assert got["profile"] == got["vector"] == got["xemb_version"] == [None]
    rows = pd.DataFrame({"user_id": ["u1"],
                         "event_timestamp": [datetime(2026, 11, 25, tzinfo=timezone.utc)]})
    past = fs.get_historical_features(entity_df=rows, features=["user_profiles:profile"])
    assert past.to_df()["profile"].isna().all()


def test_with_a_student_profiles_share_the_published_item_space(
        small_slice: Path, tiny_bert: Path, gpt2: Path, tmp_path: Path) -> None:
    """With ``encoder.student`` on, the items and cold start get the student's vectors, and so
    do the profiles: the same vectors the published graph gives their texts (through cold
    start's own code), not the teacher's, which is not published."""
    import numpy as np
    import pyarrow.parquet as pq

    from tests.conftest import write_config
    from tests.integration.test_distill import STATIC, make_teacher
    from xemb import layout
    from xemb.embedders.encode import TextEncoder
    from xemb.embedders.pipeline import build, prepare
    from xemb.serving.models import TextGraph
    from xemb.settings import load_config

    (tmp_path / "data").symlink_to(small_slice)
    teacher = make_teacher(tmp_path / "teacher")
    student = {**STATIC, "teacher_sample": 200}
    cfg = load_config(write_config(tmp_path, {
        "encoder": {"model": str(teacher), "student": student},
        "profile": {**PROFILE, "model": str(gpt2)}}))
    manifest = build(cfg)
    assert manifest is not None
    base = cfg.build.root / "versions" / manifest.version
    table = pq.read_table(base / layout.USER_PROFILES)
    texts = table.column("profile").to_pylist()
    vectors = np.asarray(table.column("vector").to_pylist(), np.float32)
    served = TextGraph(base / layout.ENCODER_DIR).semantic(texts)
    assert (vectors * served).sum(1).min() > 1 - 1e-5
    by_teacher = TextEncoder(cfg.encoder).encode(texts)
    assert (vectors * by_teacher).sum(1).mean() < 0.99  # the teacher's space is another
    # the profile stage follows the encode stage it reads: a new student, new profile vectors
    other = prepare(load_config(write_config(tmp_path, {
        "encoder": {"model": str(teacher), "student": {**student, "epochs": 2}},
        "profile": {**PROFILE, "model": str(gpt2)}})))
    assert other.keys["profile"] != prepare(cfg).keys["profile"]
