"""Operations by v1 name. Offline-repair operations are not built yet and fail cleanly."""

from __future__ import annotations

from agent.errors import OperationNotImplemented
from agent.ops.base import JobContext, Operation, OpResult, Output
from agent.ops.convert import run_convert
from agent.ops.inspect import run_inspect
from protocol.spec import Operation as OperationName


def _not_implemented(name: str) -> Operation:
    async def run(ctx: JobContext) -> OpResult:
        raise OperationNotImplemented(f"{name} is not implemented on this agent yet", phase="start")

    return run


OPERATIONS: dict[OperationName, Operation] = {
    OperationName.INSPECT: run_inspect,
    OperationName.CONVERT: run_convert,
}
for _name in OperationName:
    OPERATIONS.setdefault(_name, _not_implemented(_name.value))


__all__ = ["OPERATIONS", "JobContext", "OpResult", "Operation", "Output"]
