"""The pure part of migration_publish: what is left to rename, and renaming it in order.

No I/O here: :func:`plan_publish` reads what the caller saw in the output directory, and
:func:`rename_in_order` calls the ``move`` it is given, so both are tested without files.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from agent.errors import InputNotFound, JobFailure, OutputExists
from protocol.errors import ErrorCode
from protocol.migration_jobs import PublishFile

log = logging.getLogger(__name__)

Move = Callable[[str, str], None]


class NameState(Enum):
    """What the output directory holds for one file of a publish."""

    STAGED = "staged"  # only the staged name: still to be renamed
    PUBLISHED = "published"  # only the final name: renamed by an earlier attempt
    INTERRUPTED = "interrupted"  # both names, one inode: a move stopped between link and unlink
    CONFLICT = "conflict"  # both names, different files: the final is not ours
    MISSING = "missing"  # neither name


@dataclass(frozen=True)
class PublishPlan:
    """The files of a publish split at the first one still staged."""

    published: list[PublishFile]  # a prefix of the order, in place already
    interrupted: list[PublishFile]  # among ``published``: the staged name still to drop
    pending: list[PublishFile]  # the rest of the order, to rename now

    @property
    def resumed(self) -> bool:
        return bool(self.published)


class RenameFailed(JobFailure):
    """A rename failed for a reason other than the target existing (an I/O error)."""

    code = ErrorCode.INTERNAL


def plan_publish(
    files: Sequence[PublishFile],
    states: Mapping[str, NameState],
    documents: Collection[str] = (),
) -> PublishPlan:
    """Decide what a publish has left to do (see the rule in :mod:`agent.ops.publish`).

    Args:
        files: the files in the order they are renamed.
        states: each file's :class:`NameState`, by staged name.
        documents: staged names the job writes itself (MISSING is fine for them).

    Raises:
        OutputExists: a final name exists that an earlier attempt of this publish cannot have
            made (a different file, or out of order).
        InputNotFound: a staged disk is missing and its final name does not exist.
    """
    published: list[PublishFile] = []
    interrupted: list[PublishFile] = []
    pending: list[PublishFile] = []
    for file in files:
        state = states[file.staged]
        if state is NameState.MISSING and file.staged in documents:
            state = NameState.STAGED
        if state is NameState.CONFLICT:
            raise OutputExists(f"{file.final} already exists; nothing was renamed")
        if state is NameState.MISSING:
            raise InputNotFound(
                f"{file.staged} (to be published as {file.final}) does not exist; "
                "nothing was renamed"
            )
        if state is NameState.STAGED:
            pending.append(file)
            continue
        if pending:
            raise OutputExists(
                f"{file.final} already exists while {pending[0].staged}, earlier in the order, "
                "is not published yet: it was not left by this publish; nothing was renamed"
            )
        published.append(file)
        if state is NameState.INTERRUPTED:
            interrupted.append(file)
    return PublishPlan(published, interrupted, pending)


def rename_in_order(
    files: Sequence[PublishFile], move: Move, on_moved: Callable[[PublishFile], None]
) -> None:
    """Rename each file from staged to final, in order; on any failure or cancellation,
    rename back the ones this call renamed (newest first) and re-raise.

    Raises:
        OutputExists: a final name appeared meanwhile (the message says what was rolled back).
        RenameFailed: a rename failed (idem).
        BaseException: anything else ``move`` or ``on_moved`` raised (after the roll back).
    """
    moved: list[PublishFile] = []
    current = files[0] if files else None
    try:
        for current in files:
            move(current.staged, current.final)
            moved.append(current)
            on_moved(current)
    except (JobFailure, OSError) as exc:
        stuck = roll_back(moved, move)
        assert current is not None
        raise _failure(current, exc, moved, stuck) from exc
    except BaseException:
        roll_back(moved, move)
        raise


def roll_back(moved: Sequence[PublishFile], move: Move) -> list[PublishFile]:
    """Rename files back from final to staged, newest first; returns those that stayed."""
    stuck: list[PublishFile] = []
    for file in reversed(moved):
        try:
            move(file.final, file.staged)
        except (JobFailure, OSError) as exc:
            log.error("cannot roll back publish final=%s error=%s", file.final, exc)
            stuck.append(file)
    return stuck


def _failure(
    file: PublishFile,
    exc: JobFailure | OSError,
    moved: Sequence[PublishFile],
    stuck: Sequence[PublishFile],
) -> JobFailure:
    reason = exc.message if isinstance(exc, JobFailure) else f"{exc.strerror or exc}"
    message = f"renaming {file.staged} to {file.final} failed: {reason}"
    if moved:
        message += f"; rolled back {', '.join(f.final for f in moved if f not in stuck)}"
    if stuck:
        message += f"; could not roll back {', '.join(f.final for f in stuck)}"
    cls: type[JobFailure] = OutputExists if isinstance(exc, OutputExists) else RenameFailed
    return cls(message, phase="publish")
