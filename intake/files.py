"""The file operations of the intake: atomic writes and renames inside its own directories.

Every move is a ``rename`` within one file system (the queue's sub-directories live in the
queue; replaced outputs stay in the output directory), so it is atomic and, on shared storage,
exactly one of several intakes succeeds. The intake never opens an image.
"""

from __future__ import annotations

import contextlib
import errno
import os
from datetime import datetime
from pathlib import Path

from intake.naming import archive_dir


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a reader sees all of it or nothing (temp + fsync +
    rename, then fsync of the directory)."""
    temporary = path.with_name(f".{path.name}.h2k-intake-{os.getpid()}")
    try:
        with temporary.open("w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rename_exclusive(source: Path, target: Path) -> bool:
    """Rename ``source`` to ``target`` unless ``target`` exists; False when ``source`` is gone
    (another intake took it) or ``target`` exists.

    ``link`` + ``unlink`` would be exclusive but is not atomic for the source; a rename that
    checks first is enough here because every target name is unique to its content.
    """
    if target.exists():
        return False
    try:
        os.rename(source, target)
    except FileNotFoundError:
        return False
    return True


def unique_path(directory: Path, name: str) -> Path:
    """``directory/name``, or ``directory/name.1``, ``.2``... when taken."""
    candidate = directory / name
    number = 0
    while candidate.exists() or candidate.is_symlink():
        number += 1
        candidate = directory / f"{name}.{number}"
    return candidate


def archive(
    claim: Path, queue: Path, kind: str, when: datetime, error: str = "", name: str = ""
) -> Path:
    """Move a claim to ``<queue>/<kind>/<date>/<name or its own name>`` (an ``.error`` beside
    it when given)."""
    directory = archive_dir(queue, kind, when)
    directory.mkdir(parents=True, exist_ok=True)
    target = unique_path(directory, name or claim.name)
    os.rename(claim, target)
    if error:
        atomic_write(target.with_name(target.name + ".error"), error)
    return target


def move_aside(paths: list[Path], directory: Path) -> list[Path]:
    """Move each existing file of ``paths`` into ``directory`` (never overwriting)."""
    moved = []
    for path in paths:
        if not path.exists():
            continue
        directory.mkdir(parents=True, exist_ok=True)
        target = unique_path(directory, path.name)
        os.rename(path, target)
        moved.append(target)
    return moved


def remove_if_present(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def is_unwritable(error: OSError) -> bool:
    return error.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
