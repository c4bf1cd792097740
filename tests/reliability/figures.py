"""What a reliability run measured: calls, outcomes by status, latency; one table row each."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Figures", "table"]


@dataclass
class Figures:
    """Outcomes of one scenario. ``unexpected`` counts outcomes the scenario forbids (an
    INTERNAL status, a crash, a wrong value); a passing run has none."""

    scenario: str
    calls: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    unexpected: int = 0
    latencies: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)

    def record(self, code: str, seconds: float, *, expected: bool = True,
               example: str = "") -> None:
        self.calls += 1
        self.codes[code] += 1
        self.latencies.append(seconds)
        if not expected:
            self.unexpected += 1
            if len(self.examples) < 5:
                self.examples.append(f"{code}: {example}"[:300])

    def merge(self, other: Figures) -> None:
        self.calls += other.calls
        self.codes.update(other.codes)
        self.unexpected += other.unexpected
        self.latencies += other.latencies
        self.examples += other.examples[: max(0, 5 - len(self.examples))]

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies, q) * 1e3) if self.latencies else float("nan")

    def row(self) -> list[str]:
        ok = self.codes.get("OK", 0)
        others = ", ".join(f"{c} {n:,}" for c, n in sorted(self.codes.items()) if c != "OK")
        return [self.scenario, f"{self.calls:,}", f"{ok:,}", others or "-",
                f"{self.unexpected:,}", f"{self.percentile_ms(50):.2f}",
                f"{self.percentile_ms(99):.2f}", f"{self.percentile_ms(100):.1f}",
                "; ".join(self.notes)]


HEADER = ["scenario", "calls", "OK", "refused (by status)", "unexpected", "p50 ms", "p99 ms",
          "max ms", "notes"]


def table(figures: list[Figures]) -> str:
    """A Markdown table, one row per scenario."""
    rows = [HEADER, ["---"] * len(HEADER), *(f.row() for f in figures)]
    return "\n".join("| " + " | ".join(r) + " |" for r in rows)
