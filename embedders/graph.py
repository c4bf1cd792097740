"""The build's stages as data: each one's name, the stages and inputs it reads, the files it
writes, how its cache key is formed, and whether the config turns it on. The runner in
embedders/pipeline.py walks :data:`STAGES` in order; adding a stage means adding an entry
here (and its function), not editing the runner.

A key is ``stage_key(*stage.key(KeyInputs))``: the parts are spelled out per stage so keys
stay exactly those of earlier builds (a finished stage of an existing root is never rebuilt
because this list was reorganised).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xemb.embedders import steps
from xemb.embedders.context import BuildContext
from xemb.embedders.distill import student_key
from xemb.settings import XembConfig

if TYPE_CHECKING:
    from xemb.store import Manifest

__all__ = ["CODE_VERSION", "KeyInputs", "STAGES", "Stage", "stage_named", "upstream"]

CODE_VERSION = "3"  # bump when a change to the training code changes its output


@dataclass(frozen=True)
class KeyInputs:
    """What a stage's key may be formed from: the config, the dataset's fingerprint, the
    encoder's fingerprint and the keys of the stage's declared ``needs`` that are on."""

    cfg: XembConfig
    dataset: str
    encoder: str
    up: Mapping[str, str]


@dataclass(frozen=True)
class Stage:
    name: str
    needs: tuple[str, ...]
    """Earlier stages whose outputs it reads (an optional one that is off is left out)."""
    reads: tuple[str, ...]
    """Its other inputs: ``dataset``, ``encoder`` (the checkpoint) and config sections or
    fields; ``key`` covers them (publish's ``gate`` and ``feast`` are checked apart: a new
    Feast setting republishes the same build, see ``pipeline._up_to_date``)."""
    outputs: tuple[str, ...]
    """Files it writes into its cache folder (publish: into a new version)."""
    key: Callable[[KeyInputs], tuple[Any, ...]]
    """The parts of its key, in order."""
    run: Callable[[BuildContext, Path], None] | None = None
    """A cached stage: writes its outputs into the folder it is given."""
    final: Callable[[BuildContext], Manifest] | None = None
    """The last stage (publish): writes a version and returns its manifest; not cached."""
    enabled: Callable[[XembConfig], bool] = lambda cfg: True
    """Off stages are skipped, and their key is left out of their dependants' keys."""


def _publish(ctx: BuildContext) -> Manifest:
    from xemb.embedders.publish import publish

    return publish(ctx)


def _encode_key(k: KeyInputs) -> tuple[Any, ...]:
    c = k.cfg
    described = [k.up["describe"], c.describe.use] if "describe" in k.up else []
    return (k.encoder, k.dataset, c.encoder.export_onnx, c.encoder.backend, c.build.parity_tol,
            *student_key(c.encoder), *described)


def _adapt_key(k: KeyInputs) -> tuple[Any, ...]:
    c = k.cfg
    # describe.use is in the encode key already; the description dropout only matters (and
    # only counts, so earlier roots keep their keys) with describe.use: separate
    separate = [c.describe.dropout] if c.describe.enabled and c.describe.use == "separate" \
        else []
    return (k.up["encode"], c.adapter, c.composer.max_len, c.composer.heads, c.composer.dropout,
            CODE_VERSION, *separate)


def _describe_key(k: KeyInputs) -> tuple[Any, ...]:
    from xemb.embedders.describe import generator_fingerprint

    return (generator_fingerprint(k.cfg.describe), k.dataset, k.cfg.describe.prompts)


def _profile_key(k: KeyInputs) -> tuple[Any, ...]:
    from xemb.embedders.generate import generator_fingerprint

    p = k.cfg.profile
    # the student's vectors depend on the encode stage (only then, so earlier roots keep keys)
    student = [k.up["encode"]] if k.cfg.encoder.student.enabled else []
    return (generator_fingerprint(p, "profile"), k.dataset, p.domain_prompt, p.profile_prompt,
            p.recent_items, k.encoder, *student)


def _publish_key(k: KeyInputs) -> tuple[Any, ...]:
    index = k.cfg.index  # only when not the default, so earlier roots keep their keys
    profile = [k.up["profile"]] if "profile" in k.up else []  # only when on, likewise
    return (k.up["compose"], k.cfg.build.parity_tol, *([index] if index != type(index)() else []),
            *profile)


STAGES: list[Stage] = [
    Stage("describe", needs=(), reads=("dataset", "describe"),
          outputs=("descriptions.parquet",), key=_describe_key, run=steps.describe,
          enabled=lambda cfg: cfg.describe.enabled),
    Stage("encode", needs=("describe",),
          reads=("dataset", "encoder", "build.parity_tol", "describe.use"),
          # descriptions.npy and description_mask.npy with describe.use: separate
          outputs=("semantic.npy", "encoder/", "descriptions.npy", "description_mask.npy"),
          key=_encode_key, run=steps.encode),
    # after encode: with a student on, profiles are encoded by its published graph
    Stage("profile", needs=("encode",), reads=("dataset", "encoder", "profile"),
          outputs=("user_profiles.parquet",), key=_profile_key, run=steps.profile,
          enabled=lambda cfg: cfg.profile.enabled),
    Stage("adapt", needs=("encode",),
          reads=("dataset", "adapter", "composer.max_len", "composer.heads",
                 "composer.dropout", "describe.dropout"),
          outputs=("adapt.pt",), key=_adapt_key, run=steps.adapt),
    Stage("intents", needs=("adapt", "encode"), reads=("dataset", "intents"),
          outputs=("intents.npz",), key=lambda k: (k.up["adapt"], k.cfg.intents),
          run=steps.intents),
    Stage("compose", needs=("intents", "adapt", "encode"), reads=("dataset", "composer"),
          outputs=("compose.pt",),
          key=lambda k: (k.up["intents"], k.cfg.composer, CODE_VERSION), run=steps.compose),
    Stage("publish", needs=("compose", "intents", "adapt", "encode", "describe", "profile"),
          reads=("dataset", "build.parity_tol", "index", "gate", "feast"),
          outputs=("versions/<v>/",), key=_publish_key, final=_publish),
]


def stage_named(name: str) -> Stage:
    return next(s for s in STAGES if s.name == name)


def upstream(name: str) -> list[str]:
    """Every stage ``name`` depends on, directly or not, in build order."""
    seen: set[str] = set()
    todo = list(stage_named(name).needs)
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo.extend(stage_named(n).needs)
    return [s.name for s in STAGES if s.name in seen]


def _check(stages: list[Stage]) -> None:
    """Every need names an earlier stage; every stage runs or publishes."""
    names = [s.name for s in stages]
    for i, s in enumerate(stages):
        late = [n for n in s.needs if n not in names[:i]]
        if late or (s.run is None) == (s.final is None):
            raise RuntimeError(f"stage {s.name!r}: needs {late} not before it, or not "
                               f"exactly one of run/final")


_check(STAGES)
