"""Issue 8 (distill): the student's config section and its loss on constructed cases."""

from __future__ import annotations

from pathlib import Path

import pytest

from xemb.errors import ConfigError
from xemb.settings import load_config


def test_student_section_forbids_unknown_fields_and_resolves_its_path(tmp_path: Path) -> None:
    cfg = tmp_path / "xemb.yaml"
    cfg.write_text("encoder:\n  student:\n    enabled: true\n    model: ckpt\n")
    assert load_config(cfg).encoder.student.model == (tmp_path / "ckpt").resolve()
    cfg.write_text("encoder:\n  student:\n    layer: 2\n")
    with pytest.raises(ConfigError, match="encoder.student.layer"):
        load_config(cfg)


def test_distill_loss_is_zero_on_a_perfect_student_and_sees_relations() -> None:
    torch = pytest.importorskip("torch")
    from xemb.embedders.distill import distill_loss

    t = torch.nn.functional.normalize(torch.randn(8, 16, generator=torch.Generator()
                                                  .manual_seed(0)), dim=-1)
    assert float(distill_loss(t, t, 1.0, 0.05)) == pytest.approx(0.0, abs=1e-6)
    # a student off the teacher also gets its in-batch relations wrong: the KD term is > 0
    rot = torch.linalg.qr(torch.randn(16, 16, generator=torch.Generator().manual_seed(1)))[0]
    s = torch.nn.functional.normalize(0.9 * t + 0.1 * (t @ rot), dim=-1)
    assert float(distill_loss(s, t, 1.0, 0.05)) > float(distill_loss(s, t, 0.0, 0.05))


def test_zero_epochs_needs_the_projection(tmp_path: Path) -> None:
    cfg = tmp_path / "xemb.yaml"
    cfg.write_text("encoder:\n  student:\n    enabled: true\n    epochs: 0\n")
    with pytest.raises(ConfigError, match="projection: true"):
        load_config(cfg)
    cfg.write_text("encoder:\n  student:\n    enabled: true\n    epochs: 0\n    projection: true\n")
    assert load_config(cfg).encoder.student.epochs == 0


def test_static_student_options(tmp_path: Path) -> None:
    cfg = tmp_path / "xemb.yaml"
    cfg.write_text("encoder:\n  student:\n    enabled: true\n    kind: static\n")
    student = load_config(cfg).encoder.student
    assert student.kind == "static" and student.learning_rate == 3e-3
    assert student.relational == 0.0
    cfg.write_text("encoder:\n  student:\n    enabled: true\n")
    layers = load_config(cfg).encoder.student
    assert layers.learning_rate == 1e-4 and layers.relational == 1.0
    for extra, why in (("model: ckpt", "apply to kind: layers"),
                       ("projection: true", "apply to kind: layers"),
                       ("epochs: 0", "trains nothing with kind: static")):
        cfg.write_text(f"encoder:\n  student:\n    enabled: true\n    kind: static\n"
                       f"    {extra}\n")
        with pytest.raises(ConfigError, match=why):
            load_config(cfg)


def test_lr_schedule_linear_falls_to_zero_and_the_default_keeps_old_keys(
        tmp_path: Path) -> None:
    """``lr_schedule: linear`` takes the learning rate from ``lr`` down to 0 over the steps;
    left at ``constant`` it is not part of the encode stage's key, so configs written before
    the setting existed keep their cached students."""
    torch = pytest.importorskip("torch", reason="the offline extra")
    from xemb.embedders.distill import _schedule, student_key

    cfg = tmp_path / "xemb.yaml"
    cfg.write_text("encoder:\n  student:\n    enabled: true\n")
    constant = load_config(cfg).encoder
    cfg.write_text("encoder:\n  student:\n    enabled: true\n    lr_schedule: linear\n")
    linear = load_config(cfg).encoder
    assert not {"lr_schedule", "int8_ffn_out"} & set(student_key(constant)[0])
    assert student_key(linear)[0]["lr_schedule"] == "linear"
    assert student_key(linear) != student_key(constant)

    def rates(kind: str, steps: int) -> list[float]:
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.2)
        sched, seen = _schedule(opt, kind, steps), []
        for _ in range(steps):
            seen.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return seen + [opt.param_groups[0]["lr"]]

    assert rates("linear", 4) == pytest.approx([0.2, 0.15, 0.1, 0.05, 0.0])
    assert rates("constant", 4) == pytest.approx([0.2] * 5)
    cfg.write_text("encoder:\n  student:\n    enabled: true\n    lr_schedule: cosine\n")
    with pytest.raises(ConfigError, match="lr_schedule"):
        load_config(cfg)
