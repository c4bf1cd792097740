"""Put the repository root on ``sys.path``: benchmarks reuse the test helpers
(``tests.helpers``: synthetic versions, a throwaway redis-server), which are not installed."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
