"""Why a job failed on the agent: the JobError codes and the exception that carries them.

A :class:`JobFailure` ends a job with a FAILED terminal event (never a gRPC error); its code is
one of :class:`ErrorCode` and its message names the field or path and the rule it broke.
"""

from __future__ import annotations

from protocol.errors import ErrorCode
from runtime.status import cap_message


class JobFailure(Exception):
    """A job cannot go on; reported as JobError{phase, code, message}."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str, *, phase: str | None = None) -> None:
        # Capped like the control plane's status messages: a tool's stderr can be huge.
        message = cap_message(message)
        super().__init__(message)
        self.message = message
        self.phase = phase  # None: the phase the job was in when this was raised


class PathNotAllowed(JobFailure):
    code = ErrorCode.PATH_NOT_ALLOWED


class InputNotFound(JobFailure):
    code = ErrorCode.INPUT_NOT_FOUND


class UnsafeImage(JobFailure):
    code = ErrorCode.UNSAFE_IMAGE


class OutputExists(JobFailure):
    code = ErrorCode.OUTPUT_EXISTS


class ToolFailed(JobFailure):
    code = ErrorCode.TOOL_FAILED


class OperationNotImplemented(JobFailure):
    code = ErrorCode.NOT_IMPLEMENTED


class InvalidSpec(JobFailure):
    code = ErrorCode.INVALID_SPEC


class CapabilityMissing(JobFailure):
    """The node lacks what the operation needs (the scheduler should not have sent it)."""

    code = ErrorCode.CAPABILITY_MISSING


class GuestNotFound(JobFailure):
    """No partition of the disk holds a root file system the agent recognises."""

    code = ErrorCode.GUEST_NOT_FOUND


class InvalidImage(JobFailure):
    """A problem of the image itself, never retried: a source cut short or corrupt, one
    qemu-img refuses, a size or checksum that does not match, or an output that fails its
    check."""

    code = ErrorCode.INVALID_IMAGE


class OutOfSpace(JobFailure):
    """The output does not fit on the output file system (retryable: another node may)."""

    code = ErrorCode.OUT_OF_SPACE


class ToolStalled(JobFailure):
    """A tool made no progress for the agent's stall time and was killed (retryable)."""

    code = ErrorCode.STALLED
