"""The migration_publish operation: a VM migration's staged outputs appear under their names.

Everything happens inside ``artifacts.output_path`` (checked against --allow-output, then
opened once; see :mod:`agent.disk.output_dir`). Steps, each refusing before anything is
renamed:

1. ``parameters.migration`` is validated (INVALID_SPEC): each staged name is this migration's
   staged name of its final (:func:`protocol.migration_jobs.staged_name`), names are unique,
   every document is a non-disk file of the list and fits ``MAX_DOCUMENT_BYTES``.
2. Each staged disk exists as a regular file (opened with ``O_NOFOLLOW``; a symlink is
   PATH_NOT_ALLOWED, a missing file INPUT_NOT_FOUND) and no final name exists (OUTPUT_EXISTS).
3. Each disk with a format passes ``qemu-img check`` on the pinned file (INVALID_IMAGE:
   corrupt, leaking or unreadable; raw has nothing to check).
4. Each document is written atomically to its staged name (temporary name, fsync, rename).
5. The files are renamed from staged to final in the order given (the boot disk last), never
   over an existing name, with the directory fsynced after each one; a failure or a
   cancellation renames back what this attempt renamed, newest first.

Retries (the job is idempotent) follow one rule, decided by :func:`plan_publish`: the files
whose final name exists and whose staged name is gone must be a prefix of the order. They are
taken as published by an earlier attempt (a document's content must equal the one asked for,
a disk is checked again with qemu-img check) and the rest is renamed in order. So a publish
that completed succeeds again, and one that crashed half-way goes on where it stopped. A final
name that exists next to its staged name (another file), or after a file still staged, was not
made by this publish: OUTPUT_EXISTS, nothing renamed. Both names on one inode is a rename that
crashed half-way (see :meth:`OutputDir.move`): the staged name is dropped.

Progress: "check" 0-50 % (one event per disk), "publish" 50-100 % (one event per renamed
file, naming it: the order can be read from the events).
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from agent.disk import qemu_img
from agent.disk.atomic import temporary_name
from agent.disk.output_dir import OutputDir, opened_output_dir
from agent.errors import InvalidSpec, OutputExists, PathNotAllowed
from agent.ops.base import JobContext, OpResult, Output
from agent.ops.publish_order import NameState, PublishPlan, plan_publish, rename_in_order
from protocol.errors import InvalidArgument
from protocol.migration_jobs import (
    MAX_DOCUMENT_BYTES,
    PublishFile,
    PublishParameters,
    publish_parameters,
    staged_name,
)
from protocol.spec import OutputFormat

CHECK_END = 50.0
TOOL_TIMEOUT_MARGIN = 120.0


def validated_parameters(ctx: JobContext) -> PublishParameters:
    """The publish parameters, with the rules the model alone does not state.

    Raises:
        InvalidSpec: naming the field and the rule.
    """
    try:
        params = publish_parameters(ctx.spec)
    except InvalidArgument as exc:
        raise InvalidSpec(exc.message, phase="start") from None
    problems: list[str] = []
    staged = [f.staged for f in params.files]
    finals = [f.final for f in params.files]
    for i, file in enumerate(params.files):
        if file.staged != staged_name(params.migration_id, file.final):
            problems.append(
                f"files[{i}].staged: must be "
                f"{staged_name(params.migration_id, file.final)!r} (the staged name of "
                f"{file.final!r} in migration {params.migration_id})"
            )
    if len(set(staged)) != len(staged) or len(set(finals)) != len(finals):
        problems.append("files: staged and final names must be unique")
    kinds = {f.staged: f.kind for f in params.files}
    for name, content in params.documents.items():
        if kinds.get(name) in (None, "disk"):
            problems.append(f"documents[{name!r}]: must be the staged name of a non-disk file")
        if len(content.encode()) > MAX_DOCUMENT_BYTES:
            problems.append(f"documents[{name!r}]: must be at most {MAX_DOCUMENT_BYTES} bytes")
    if problems:
        raise InvalidSpec("; ".join(f"parameters.migration.{p}" for p in problems), phase="start")
    return params


def _name_state(out: OutputDir, file: PublishFile) -> NameState:
    staged, final = out.lstat(file.staged), out.lstat(file.final)
    if staged is None:
        return NameState.MISSING if final is None else NameState.PUBLISHED
    if final is None:
        return NameState.STAGED
    return NameState.INTERRUPTED if out.same_file(file.staged, file.final) else NameState.CONFLICT


@contextlib.contextmanager
def _pinned(out: OutputDir, names: list[str]) -> Iterator[dict[str, int]]:
    """Open each name as a regular file (never a symlink); closed on exit."""
    fds: dict[str, int] = {}
    try:
        for name in names:
            try:
                fds[name] = out.open_regular(name)
            except FileNotFoundError:
                raise PathNotAllowed(
                    f"{out.path / name} disappeared; nothing was renamed"
                ) from None
            except PathNotAllowed as exc:
                raise PathNotAllowed(f"{exc.message}; nothing was renamed") from None
        yield fds
    finally:
        for fd in fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)


def _disk_name(file: PublishFile, plan: PublishPlan) -> str:
    """The name a disk has now: final when an earlier attempt published it."""
    return file.final if file in plan.published else file.staged


async def _check_disks(
    ctx: JobContext,
    out: OutputDir,
    disks: list[PublishFile],
    fds: dict[str, int],
    plan: PublishPlan,
) -> None:
    timeout = ctx.spec.execution_policy.timeout_seconds + TOOL_TIMEOUT_MARGIN
    for i, disk in enumerate(disks):
        name = _disk_name(disk, plan)
        if disk.format is not None and disk.format is not OutputFormat.RAW:
            # raw has no metadata to check (qemu-img check refuses it).
            await qemu_img.check(
                out.tool_path(fds[name]), disk.format.value, timeout=timeout, shown=out.path / name
            )
        ctx.progress.report(
            "check", CHECK_END * (i + 1) / len(disks), message=f"checked {name}", force=True
        )


def _check_published_documents(
    out: OutputDir, params: PublishParameters, plan: PublishPlan
) -> None:
    for file in plan.published:
        content = params.documents.get(file.staged)
        if content is None:
            continue
        fd = out.open_regular(file.final)
        try:
            with open(fd, "rb", closefd=False) as handle:
                same = handle.read(MAX_DOCUMENT_BYTES + 1) == content.encode()
        finally:
            os.close(fd)
        if not same:
            raise OutputExists(
                f"{out.path / file.final} already exists with other content; nothing was renamed"
            )


async def run_publish(ctx: JobContext) -> OpResult:
    """Publish a migration's staged outputs; see the module docstring."""
    started = time.monotonic()
    params = validated_parameters(ctx)
    ctx.progress.report("check", 0, message=f"publishing migration {params.migration_id}")
    with opened_output_dir(ctx.policy, ctx.output_dir) as out:
        states = {f.staged: _name_state(out, f) for f in params.files}
        plan = plan_publish(params.files, states, params.documents.keys())
        disks = [f for f in params.files if f.kind == "disk"]
        with _pinned(out, [_disk_name(d, plan) for d in disks]) as fds:
            _check_published_documents(out, params, plan)
            await _check_disks(ctx, out, disks, fds, plan)
            for file in plan.interrupted:
                out.finish_move(file.staged, file.final)
            _write_documents(ctx, out, params, plan)
            _rename(ctx, out, plan, fds)
        outputs = [_output(out, f) for f in params.files]
    return OpResult(
        outputs=outputs,
        metrics={"duration_seconds": round(time.monotonic() - started, 3)},
        details={
            "migration_id": params.migration_id,
            "published": [f.final for f in plan.pending],
            "already_published": [f.final for f in plan.published],
        },
    )


def _write_documents(
    ctx: JobContext, out: OutputDir, params: PublishParameters, plan: PublishPlan
) -> None:
    for file in plan.pending:
        content = params.documents.get(file.staged)
        if content is not None:
            tmp = temporary_name(Path(file.staged), ctx.job_id).name
            out.write_atomically(file.staged, content.encode(), tmp)


def _rename(ctx: JobContext, out: OutputDir, plan: PublishPlan, fds: dict[str, int]) -> None:
    def move(source: str, target: str) -> None:
        # A staged disk must still be the file qemu-img checked.
        pinned = fds.get(source)
        if pinned is not None:
            now, checked = out.lstat(source), os.fstat(pinned)
            if now is None or (now.st_dev, now.st_ino) != (checked.st_dev, checked.st_ino):
                raise PathNotAllowed(f"{out.path / source} was replaced after it was checked")
        out.move(source, target)

    count = len(plan.pending)
    done = 0

    def on_moved(file: PublishFile) -> None:
        nonlocal done
        done += 1
        ctx.progress.report(
            "publish",
            CHECK_END + (100 - CHECK_END) * done / max(count, 1),
            message=f"renamed {file.staged} to {file.final}",
            force=True,
        )

    rename_in_order(plan.pending, move, on_moved)


def _output(out: OutputDir, file: PublishFile) -> Output:
    st = out.lstat(file.final)
    size = st.st_size if st is not None and stat.S_ISREG(st.st_mode) else 0
    if file.kind == "disk":
        kind, fmt = "image", file.format.value if file.format else ""
    else:
        kind, fmt = file.kind, Path(file.final).suffix.lstrip(".")
    return Output(kind=kind, path=out.path / file.final, size_bytes=size, format=fmt)
