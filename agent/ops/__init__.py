"""Operations by v1 name; any name without an implementation fails cleanly."""

from __future__ import annotations

from agent.errors import OperationNotImplemented
from agent.ops.base import JobContext, Operation, OpResult, Output
from agent.ops.cleanup import run_cleanup
from agent.ops.convert import run_convert
from agent.ops.inspect import run_inspect
from agent.ops.publish import run_publish
from agent.ops.repair import run_repair
from protocol.spec import Operation as OperationName


def _not_implemented(name: str) -> Operation:
    async def run(ctx: JobContext) -> OpResult:
        raise OperationNotImplemented(f"{name} is not implemented on this agent yet", phase="start")

    return run


OPERATIONS: dict[OperationName, Operation] = {
    OperationName.INSPECT: run_inspect,
    OperationName.CONVERT: run_convert,
    OperationName.OFFLINE_FIX: run_repair,
    OperationName.BOOT_REPAIR: run_repair,
    OperationName.FS_REPAIR: run_repair,
    OperationName.INITRAMFS_REGENERATE: run_repair,
    OperationName.SELINUX_PREP: run_repair,
    OperationName.LVM_REPAIR: run_repair,
    OperationName.MIGRATION_PUBLISH: run_publish,
    OperationName.MIGRATION_CLEANUP: run_cleanup,
}
for _name in OperationName:
    OPERATIONS.setdefault(_name, _not_implemented(_name.value))


__all__ = ["OPERATIONS", "JobContext", "OpResult", "Operation", "Output"]
