"""The one error hierarchy of xemb.

Every error a user can cause or meet derives from :class:`XembError` and names its gRPC
status code, so the CLI prints its message and the gRPC interceptor maps it to a status in
one place (``serving/interceptors.py``). Code below the boundary wraps foreign exceptions
with ``raise XembError(...) from exc``; nothing here imports grpc, so offline code can use it.
"""

from __future__ import annotations

__all__ = [
    "XembError",
    "InvalidArgument",
    "ConfigError",
    "DataValidationError",
    "NotFound",
    "VersionNotFound",
    "FailedPrecondition",
    "NoCurrentVersion",
    "VersionIntegrityError",
    "ParityError",
    "BuildLocked",
    "NotPublished",
    "ResourceExhausted",
    "Unavailable",
    "Unauthenticated",
    "DeadlineExceeded",
    "Cancelled",
]


class XembError(Exception):
    """Base class; ``grpc_code`` is the name of a ``grpc.StatusCode`` member. ``field``, when
    given, is the request or input field the error is about; the message starts with it."""

    grpc_code = "INTERNAL"
    exit_code = 1

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


class InvalidArgument(XembError):
    """A request or input names a bad value; the message names the field."""

    grpc_code = "INVALID_ARGUMENT"
    exit_code = 2


class ConfigError(InvalidArgument):
    """The YAML config is missing, unreadable or has a bad field."""


class DataValidationError(InvalidArgument):
    """An input table is bad; the message names the file, row and field."""

    def __init__(self, message: str, *, file: str, field: str | None = None,
                 row: int | None = None) -> None:
        where = file + (f", row {row}" if row is not None else "")
        where += f", field {field!r}" if field else ""
        super().__init__(f"{where}: {message}")
        self.file, self.row = file, row
        self.field = field


class NotFound(XembError):
    grpc_code = "NOT_FOUND"
    exit_code = 3


class VersionNotFound(NotFound):
    """A version id that is not (or no longer) on disk."""


class FailedPrecondition(XembError):
    grpc_code = "FAILED_PRECONDITION"
    exit_code = 4


class NoCurrentVersion(FailedPrecondition):
    """Nothing has been published yet under this root."""


class VersionIntegrityError(FailedPrecondition):
    """A version directory is incomplete or a file does not match its manifest checksum."""


class ParityError(FailedPrecondition):
    """An exported ONNX model disagrees with torch beyond the tolerance."""


class BuildLocked(FailedPrecondition):
    """Another build holds the root's lock; the message names the holder."""


class NotPublished(FailedPrecondition):
    """A version exists but is not (or no longer) selectable: never fully published, or
    refused by a server."""


class ResourceExhausted(XembError):
    grpc_code = "RESOURCE_EXHAUSTED"
    exit_code = 5


class Unavailable(XembError):
    grpc_code = "UNAVAILABLE"
    exit_code = 6


class Unauthenticated(XembError):
    grpc_code = "UNAUTHENTICATED"
    exit_code = 7


class DeadlineExceeded(XembError):
    grpc_code = "DEADLINE_EXCEEDED"
    exit_code = 8


class Cancelled(XembError):
    """The caller cancelled the call (or went away) while it was being worked on."""

    grpc_code = "CANCELLED"
    exit_code = 9
