"""The errors of the contract: the codes a failed job reports, and the RPC error hierarchy.

:class:`ErrorCode` is the ``JobError.code`` vocabulary (the agent raises it, the control plane
decides retries by it, clients show it). :class:`H2KError` and its subclasses each know the
gRPC status they are reported as; :mod:`runtime.status` turns them into statuses on every
server, :func:`from_rpc_error` turns statuses back into them on clients.
"""

from __future__ import annotations

from enum import StrEnum

import grpc


class ErrorCode(StrEnum):
    """Why a job attempt failed (``JobError.code``)."""

    INVALID_SPEC = "INVALID_SPEC"
    INPUT_NOT_FOUND = "INPUT_NOT_FOUND"
    PATH_NOT_ALLOWED = "PATH_NOT_ALLOWED"
    UNSAFE_IMAGE = "UNSAFE_IMAGE"
    OUTPUT_EXISTS = "OUTPUT_EXISTS"
    TOOL_FAILED = "TOOL_FAILED"
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"
    INTERNAL = "INTERNAL"
    NOT_IMPLEMENTED = "NOT_IMPLEMENTED"
    # The attempt was interrupted: the agent restarted (or was lost), or it shut down.
    AGENT_LOST = "AGENT_LOST"
    AGENT_SHUTDOWN = "AGENT_SHUTDOWN"
    CAPABILITY_MISSING = "CAPABILITY_MISSING"
    GUEST_NOT_FOUND = "GUEST_NOT_FOUND"
    # The image itself is bad: a source cut short, corrupt or refused by qemu-img, a size or
    # checksum mismatch, a written image failing its check. Retrying cannot fix it.
    INVALID_IMAGE = "INVALID_IMAGE"
    # The output did not fit on this node's output file system (refused before writing, or
    # the disk filled during the write): another node, or the same one later, may have room.
    OUT_OF_SPACE = "OUT_OF_SPACE"
    # A tool stopped making progress (a hung NFS read, say) and was killed: a node fault.
    STALLED = "STALLED"


class H2KError(Exception):
    """Base of every error h2k reports to a caller."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(H2KError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(H2KError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(H2KError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(H2KError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class PermissionDenied(H2KError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unavailable(H2KError):
    code = grpc.StatusCode.UNAVAILABLE


class ResourceExhausted(H2KError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


_BY_CODE: dict[grpc.StatusCode, type[H2KError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        PermissionDenied,
        Unavailable,
        ResourceExhausted,
    )
}


def from_rpc_error(error: grpc.RpcError) -> H2KError:
    """Map a gRPC error received by a client to the typed error (the one place that does it)."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else str(error)
    cls = _BY_CODE.get(code, H2KError)
    exc = cls(f"{code.name}: {details}")
    exc.code = code
    return exc
