"""Config section for the gRPC service (owned by ``serving``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ServingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, frozen=True)

    host: str = "127.0.0.1"
    """Address to bind."""
    port: int = Field(50051, ge=0, le=65535)
    """Port to bind; 0 picks a free one."""
