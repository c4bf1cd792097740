"""Faster ``import feast`` for xemb's own command-line processes.

Feast decorates its core classes with typeguard's ``@typechecked``. typeguard 4 implements it
by re-parsing and recompiling the decorated module's source at import time: on this project's
2-core machine that is about 6 s of the 10 s ``import feast`` takes, paid by every ``xemb``
command that touches Feast (build, add-items, feast publish/export). xemb's entry points make
the decorator a no-op before Feast is imported; Feast then runs without its runtime argument
type checks (xemb's calls into Feast are covered by its own tests). Set
``XEMB_FEAST_TYPECHECKS=1`` to keep them. Importing xemb as a library changes nothing: only
the CLI entry points call :func:`skip_feast_typechecks`.
"""

from __future__ import annotations

import os
import sys
from typing import Any

__all__ = ["skip_feast_typechecks", "ENV"]

ENV = "XEMB_FEAST_TYPECHECKS"


def _passthrough(target: Any = None, **_options: Any) -> Any:
    """``@typechecked`` and ``@typechecked(...)`` that return what they decorate."""
    return target if target is not None else (lambda inner: inner)


def skip_feast_typechecks() -> bool:
    """Make typeguard's ``typechecked`` a no-op if Feast is not imported yet (and the
    environment does not ask to keep it); returns whether it did."""
    if os.environ.get(ENV) == "1" or "feast" in sys.modules:
        return False
    try:
        import typeguard
    except ImportError:  # Feast not installed: nothing to speed up
        return False
    typeguard.typechecked = _passthrough  # type: ignore[assignment]
    return True
