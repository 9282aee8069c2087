"""Path policy against real directories, symlinks and special files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.errors import JobFailure
from agent.paths import PathPolicy
from protocol.errors import ErrorCode
from tests.unit.agent.builders import AgentDirs


def _code(exc: pytest.ExceptionInfo[JobFailure]) -> ErrorCode:
    return exc.value.code


def test_regular_file_inside_allowed_dir_is_accepted(dirs: AgentDirs) -> None:
    image = dirs.input / "disk.vmdk"
    image.write_bytes(b"x")
    assert dirs.policy.check_input(str(image)) == image.resolve()
    assert dirs.policy.check_output_dir(str(dirs.output)) == dirs.output.resolve()


def test_outside_path_is_refused_with_the_rule(dirs: AgentDirs) -> None:
    with pytest.raises(JobFailure) as exc:
        dirs.policy.check_input("/etc/passwd")
    assert _code(exc) is ErrorCode.PATH_NOT_ALLOWED
    assert str(exc.value) == (
        f"image.path: /etc/passwd is outside the allowed input directories ({dirs.input})"
    )


def test_dotdot_escape_is_refused(dirs: AgentDirs) -> None:
    sneaky = f"{dirs.input}" + "/.." * 30 + "/etc/passwd"
    with pytest.raises(JobFailure) as exc:
        dirs.policy.check_input(sneaky)
    assert _code(exc) is ErrorCode.PATH_NOT_ALLOWED
    assert "resolves to /etc/passwd" in str(exc.value)


def test_symlink_to_etc_inside_allowed_dir_is_refused(dirs: AgentDirs) -> None:
    link = dirs.input / "innocent.vmdk"
    link.symlink_to("/etc/passwd")
    with pytest.raises(JobFailure) as exc:
        dirs.policy.check_input(str(link))
    assert _code(exc) is ErrorCode.PATH_NOT_ALLOWED
    assert "outside the allowed input directories" in str(exc.value)


def test_symlinked_output_dir_pointing_out_is_refused(dirs: AgentDirs, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (dirs.output / "escape").symlink_to(elsewhere)
    with pytest.raises(JobFailure) as exc:
        dirs.policy.check_output_dir(str(dirs.output / "escape"))
    assert _code(exc) is ErrorCode.PATH_NOT_ALLOWED


def test_device_file_is_refused(tmp_path: Path) -> None:
    policy = PathPolicy(["/dev"], [tmp_path])
    with pytest.raises(JobFailure) as exc:
        policy.check_input("/dev/null")
    assert _code(exc) is ErrorCode.PATH_NOT_ALLOWED
    assert "is not a regular file (a character device)" in str(exc.value)


def test_fifo_is_refused(dirs: AgentDirs) -> None:
    fifo = dirs.input / "pipe.vmdk"
    os.mkfifo(fifo)
    with pytest.raises(JobFailure) as exc:
        dirs.policy.check_input(str(fifo))
    assert "a FIFO" in str(exc.value)


def test_missing_input_is_input_not_found(dirs: AgentDirs) -> None:
    missing = dirs.input / "missing.vmdk"
    with pytest.raises(JobFailure) as exc:
        dirs.policy.check_input(str(missing))
    assert _code(exc) is ErrorCode.INPUT_NOT_FOUND
    assert str(exc.value) == f"image.path: {missing} does not exist"


def test_missing_output_dir_and_file_as_output_dir_are_refused(dirs: AgentDirs) -> None:
    with pytest.raises(JobFailure, match="does not exist"):
        dirs.policy.check_output_dir(str(dirs.output / "nope"))
    (dirs.output / "file").write_bytes(b"")
    with pytest.raises(JobFailure, match="is not a directory"):
        dirs.policy.check_output_dir(str(dirs.output / "file"))


def test_output_equal_to_input_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    image = shared / "disk.qcow2"
    image.write_bytes(b"x")
    policy = PathPolicy([shared], [shared])
    with pytest.raises(JobFailure) as exc:
        policy.check_output_file(shared / "disk.qcow2", policy.check_input(image))
    assert _code(exc) is ErrorCode.PATH_NOT_ALLOWED
    assert "would overwrite the input image" in str(exc.value)


def test_internal_job_image_path_must_be_inside_the_output_dir(dirs: AgentDirs) -> None:
    out = dirs.policy.check_output_dir(dirs.output)
    staged = out / ".vm.qcow2.h2k-m1"
    assert dirs.policy.check_inside_output_dir(str(staged), out) == staged  # need not exist
    for outside in (out, out / ".." / "elsewhere.qcow2", dirs.input / "vm.qcow2"):
        with pytest.raises(JobFailure) as exc:
            dirs.policy.check_inside_output_dir(str(outside), out)
        assert _code(exc) is ErrorCode.PATH_NOT_ALLOWED
