"""Path policy: the agent only reads and writes where its operator allowed it.

Every path from a job spec is resolved with symlinks followed *before* it is compared with the
allow-lists, so ``..`` segments and symlinks pointing out of an allowed directory are refused.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

from agent.errors import InputNotFound, PathNotAllowed


def _resolve(path: str | Path) -> Path:
    return Path(os.path.realpath(path))


def _is_under(path: Path, roots: Sequence[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def _describe(roots: Sequence[Path]) -> str:
    return ", ".join(str(root) for root in roots) or "none configured"


class PathPolicy:
    """The allowed input and output directories of this agent."""

    def __init__(self, allow_input: Sequence[Path | str], allow_output: Sequence[Path | str]):
        self.allow_input = [_resolve(p) for p in allow_input]
        self.allow_output = [_resolve(p) for p in allow_output]

    def check_input(self, path: str | Path, field: str = "image.path") -> Path:
        """Resolve an input image path and check it may be read.

        Returns:
            The resolved path (use it, not the original, from here on).

        Raises:
            PathNotAllowed: outside the allowed input directories, or not a regular file.
            InputNotFound: the file does not exist.
        """
        resolved = _resolve(path)
        if not _is_under(resolved, self.allow_input):
            shown = f"{path} (resolves to {resolved})" if str(resolved) != str(path) else path
            raise PathNotAllowed(
                f"{field}: {shown} is outside the allowed input directories "
                f"({_describe(self.allow_input)})"
            )
        try:
            mode = resolved.stat().st_mode
        except FileNotFoundError:
            raise InputNotFound(f"{field}: {path} does not exist") from None
        except OSError as exc:
            raise InputNotFound(f"{field}: {path} cannot be read: {exc.strerror}") from None
        if not stat.S_ISREG(mode):
            raise PathNotAllowed(f"{field}: {path} is not a regular file ({_file_kind(mode)})")
        return resolved

    def check_output_dir(self, path: str | Path, field: str = "artifacts.output_path") -> Path:
        """Resolve an output directory and check it may be written.

        Raises:
            PathNotAllowed: outside the allowed output directories, missing, or not a directory.
        """
        resolved = _resolve(path)
        if not _is_under(resolved, self.allow_output):
            shown = f"{path} (resolves to {resolved})" if str(resolved) != str(path) else path
            raise PathNotAllowed(
                f"{field}: {shown} is outside the allowed output directories "
                f"({_describe(self.allow_output)})"
            )
        if not resolved.exists():
            raise PathNotAllowed(f"{field}: {path} does not exist (create the directory first)")
        if not resolved.is_dir():
            raise PathNotAllowed(f"{field}: {path} is not a directory")
        return resolved

    def check_output_file(self, output: Path, source: Path) -> Path:
        """Check a file the agent is about to create inside a checked output directory.

        Raises:
            PathNotAllowed: the output would overwrite the source image, or escapes the
                allowed output directories (a symlink planted at the output name).
        """
        resolved = _resolve(output)
        if resolved == _resolve(source):
            raise PathNotAllowed(
                f"artifacts.output_path: the output {output} would overwrite the input image"
            )
        if not _is_under(resolved, self.allow_output):
            raise PathNotAllowed(
                f"artifacts.output_path: {output} resolves to {resolved}, outside the allowed "
                f"output directories ({_describe(self.allow_output)})"
            )
        return output


def _file_kind(mode: int) -> str:
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((name for test, name in kinds if test(mode)), "a special file")
