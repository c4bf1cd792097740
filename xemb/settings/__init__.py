"""The one config object: a pydantic model loaded from one YAML file, passed explicitly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from xemb.errors import ConfigError
from xemb.settings.feast import FeastConfig
from xemb.settings.index import IndexConfig
from xemb.settings.offline import (
    AdapterConfig,
    BuildConfig,
    ComposerConfig,
    DataConfig,
    DescribeConfig,
    EncoderConfig,
    EvalConfig,
    GateConfig,
    IntentsConfig,
    ProfileConfig,
)
from xemb.settings.serving import ServingConfig

__all__ = ["XembConfig", "load_config", "config_hash"]


class XembConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, frozen=True)

    data: DataConfig = Field(default_factory=DataConfig)
    """Input tables."""
    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    """Frozen (M)LLM that turns item text/images into semantic vectors."""
    describe: DescribeConfig = Field(default_factory=DescribeConfig)
    """Generated item descriptions (optional, off by default)."""
    profile: ProfileConfig = Field(default_factory=ProfileConfig)
    """Hierarchical user profiles (optional, off by default)."""
    adapter: AdapterConfig = Field(default_factory=AdapterConfig)
    """Transferable + residual adapter."""
    intents: IntentsConfig = Field(default_factory=IntentsConfig)
    """Atomic intent library."""
    composer: ComposerConfig = Field(default_factory=ComposerConfig)
    """Sequence -> user-intent vector model."""
    build: BuildConfig = Field(default_factory=BuildConfig)
    """Versioned output."""
    eval: EvalConfig = Field(default_factory=EvalConfig)
    """Evaluation protocol."""
    gate: GateConfig = Field(default_factory=GateConfig)
    """Quality gate: when a new build may become current."""
    index: IndexConfig = Field(default_factory=IndexConfig)
    """ANN indexes written at publish (type by domain size, tuned to a recall target)."""
    feast: FeastConfig = Field(default_factory=FeastConfig)
    """Feast publishing."""
    serving: ServingConfig = Field(default_factory=ServingConfig)
    """gRPC service."""


_PATH_FIELDS = {"data": ("path", "items", "events"), "encoder": ("model",),
                "describe": ("model",), "profile": ("model",),
                "build": ("root",), "feast": ("repo_path",),
                "serving": ("tls_cert_file", "tls_key_file", "tls_client_ca_file",
                            "auth_tokens_file")}


def _resolve_paths(raw: dict[str, Any], base: Path) -> None:
    """Relative paths in the YAML are relative to the YAML file, not to the shell's cwd."""
    for section, keys in _PATH_FIELDS.items():
        sec = raw.get(section)
        if not isinstance(sec, dict):
            continue
        for key in keys:
            if isinstance(sec.get(key), str) and not Path(sec[key]).is_absolute():
                sec[key] = str((base / sec[key]).resolve())
    encoder = raw.get("encoder")
    student = encoder.get("student") if isinstance(encoder, dict) else None
    model = student.get("model") if isinstance(student, dict) else None
    if isinstance(model, str) and not Path(model).is_absolute():
        student["model"] = str((base / model).resolve())  # type: ignore[index]


def _format_validation(path: Path, exc: ValidationError) -> str:
    errs = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" if e["loc"] else e["msg"]
            for e in exc.errors()]  # a check across sections has no field of its own
    return f"{path}: invalid config: " + "; ".join(errs)


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> XembConfig:
    """Load and validate a YAML config; errors name the file and the dotted field."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    for dotted, value in (overrides or {}).items():
        *parents, key = dotted.split(".")
        node = raw
        for part in parents:  # "encoder.student.epochs" reaches into nested sections
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{path}: override {dotted}: {part} is not a section")
        node[key] = value
    _resolve_paths(raw, path.resolve().parent)
    try:
        return XembConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation(path, exc)) from exc


def config_hash(cfg: XembConfig, sections: tuple[str, ...],
                include: set[str] | None = None) -> str:
    """Stable hash of the named sections (what a stage's output depends on), without their
    file paths: where a file lives changes nothing a build makes (contents are hashed
    separately), so a clone at another path rebuilds nothing."""
    import hashlib
    import json

    blob = json.dumps({s: getattr(cfg, s).model_dump(mode="json", include=include,
                                                     exclude=set(_PATH_FIELDS.get(s, ())))
                       for s in sections}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
