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
