"""Config section for publishing into Feast (owned by the Feast integration)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class FeastConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, frozen=True)

    enabled: bool = True
    """Apply the feature repo and materialize each build into the online store."""
    online_store: Literal["sqlite", "redis"] = "sqlite"
    """Online store type; ``redis`` needs the ``redis`` extra."""
    redis_url: str = "localhost:6379"
    """Feast Redis connection string (``host:port[,password=...]``)."""
    redis_retries: int = Field(default=2, ge=0)
    """Retries of a failed Redis call before a Feast read raises ``Unavailable`` (redis-py 8's
    own default, 10 retries with backoff, kept a read waiting about 4 s while Redis was down;
    a ranking request has a tighter deadline)."""
    redis_timeout_s: float = Field(default=1.0, gt=0)
    """Connect and socket timeout of each Redis call, in seconds (a ``socket_timeout`` or
    ``socket_connect_timeout`` in ``redis_url`` wins)."""
    project: str = Field(default="xemb", pattern=r"^[A-Za-z0-9][A-Za-z0-9_]*$")
    """Feast project; also the namespace of this root's slots and markers in a shared Redis
    (give each root that shares one Redis its own project)."""
    repo_path: Path | None = None
    """Feature repo folder; default: the ``feature_repo`` package shipped with xemb."""
    write_batch_size: int = Field(default=1000, ge=1)
    """Rows per online-store write (one SQLite commit, one Redis pipeline)."""
    registry_cache_ttl_seconds: int = Field(default=0, ge=0)
    """How long a reader caches the Feast registry; 0 = load once. Definitions do not change
    between versions (the version switch happens in the online store), so readers need a
    refresh only after an xemb upgrade changed them."""
