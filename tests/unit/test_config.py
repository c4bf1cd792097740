"""One config object; errors name the file and the dotted field."""

from __future__ import annotations

from pathlib import Path

import pytest

from xemb.errors import ConfigError
from xemb.settings import XembConfig, load_config


def test_unknown_field_is_named(tmp_path: Path) -> None:
    p = tmp_path / "x.yaml"
    p.write_text("adapter:\n  dims: 64\n")
    with pytest.raises(ConfigError, match=r"x\.yaml: invalid config: adapter\.dims: Extra"):
        load_config(p)


def test_bad_value_is_named(tmp_path: Path) -> None:
    p = tmp_path / "x.yaml"
    p.write_text("intents:\n  k: 1\n")
    with pytest.raises(ConfigError, match=r"intents\.k: Input should be greater"):
        load_config(p)


def test_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    p = tmp_path / "sub" / "x.yaml"
    p.write_text("data:\n  path: ../data\nbuild:\n  root: out\n")
    cfg = load_config(p)
    assert cfg.data.path == (tmp_path / "data").resolve()
    assert cfg.build.root == (tmp_path / "sub" / "out").resolve()


def test_missing_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "none.yaml")
    p = tmp_path / "x.yaml"
    p.write_text("a: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)


def test_every_field_is_documented() -> None:
    def walk(model: type) -> list[str]:
        missing = []
        for name, field in model.model_fields.items():
            ann = field.annotation
            if isinstance(ann, type) and hasattr(ann, "model_fields"):
                missing += walk(ann)
            elif not field.description and name not in {"seed", "epochs", "batch_size", "lr",
                                                         "weight_decay", "dropout", "niter"}:
                missing.append(f"{model.__name__}.{name}")
        return missing

    assert walk(XembConfig) == []


def test_overrides_reach_nested_sections(tmp_path: Path) -> None:
    """``load_config(path, {"a.b.c": v})`` (benchmarks' ``--set``) sets a nested field and
    keeps the file's other values; a dotted path through a value is a clear error."""
    p = tmp_path / "x.yaml"
    p.write_text("encoder:\n  student:\n    enabled: true\n    epochs: 7\n")
    cfg = load_config(p, {"encoder.student.sample_vectors": "student", "build.keep_versions": 2})
    assert cfg.encoder.student.sample_vectors == "student"
    assert cfg.encoder.student.epochs == 7 and cfg.encoder.student.enabled
    assert cfg.build.keep_versions == 2
    with pytest.raises(ConfigError, match=r"encoder\.student\.sample_vectors: Input should be"):
        load_config(p, {"encoder.student.sample_vectors": "both"})
    with pytest.raises(ConfigError, match="override encoder.student.epochs.x: epochs is not"):
        load_config(p, {"encoder.student.epochs.x": 1})
