"""One error hierarchy; each class knows the gRPC status it is reported as."""

from __future__ import annotations

import grpc


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
