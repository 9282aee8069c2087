"""Time of check / time of use: a path swapped after it was checked never reaches a tool.

The race is won deterministically here: the policy check is wrapped so the swap happens right
after it passed, which is the moment an attacker writing to the input directory aims for.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.disk import qemu_img
from agent.errors import PathNotAllowed
from agent.paths import PathPolicy, pinned_input, pinned_output
from tests.security.witness import AtimeWitness

MiB = 1 << 20


def _qcow2(path: Path, size: int) -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), str(size)], check=True)
    return path


@pytest.fixture
def policy(tmp_path: Path) -> PathPolicy:
    for name in ("input", "output", "outside"):
        (tmp_path / name).mkdir()
    return PathPolicy([tmp_path / "input"], [tmp_path / "output"])


def _swap_after_check(
    monkeypatch: pytest.MonkeyPatch, policy: PathPolicy, swap: Callable[[], None]
) -> None:
    real = policy.check_input

    def check_then_swap(path: str | Path, field: str = "image.path") -> Path:
        resolved = real(path, field)
        swap()
        return resolved

    monkeypatch.setattr(policy, "check_input", check_then_swap)


def test_file_swapped_for_a_symlink_after_the_check(
    policy: PathPolicy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = _qcow2(tmp_path / "input" / "disk.qcow2", 64 * MiB)
    secret = AtimeWitness(tmp_path / "outside" / "secret.img")

    def swap() -> None:
        disk.unlink()
        disk.symlink_to(secret.path)

    _swap_after_check(monkeypatch, policy, swap)
    with (
        pytest.raises(PathNotAllowed, match="became a symlink after it was checked"),
        pinned_input(policy, disk),
    ):
        pass
    assert secret.untouched()


def test_directory_swapped_for_a_symlink_after_the_check(
    policy: PathPolicy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sub = tmp_path / "input" / "vm"
    sub.mkdir()
    disk = _qcow2(sub / "disk.qcow2", 64 * MiB)
    secret = AtimeWitness(tmp_path / "outside" / "disk.qcow2")

    def swap() -> None:
        sub.rename(tmp_path / "input" / "vm.old")
        sub.symlink_to(tmp_path / "outside")

    _swap_after_check(monkeypatch, policy, swap)
    with (
        pytest.raises(PathNotAllowed, match="was replaced after it was checked"),
        pinned_input(policy, disk),
    ):
        pass
    assert secret.untouched()


async def test_a_swap_after_pinning_does_not_reach_qemu_img(
    policy: PathPolicy, tmp_path: Path
) -> None:
    disk = _qcow2(tmp_path / "input" / "disk.qcow2", 64 * MiB)
    secret = _qcow2(tmp_path / "outside" / "secret.qcow2", 512 * MiB)
    witness = AtimeWitness(secret, content=None)
    with pinned_input(policy, disk) as pinned:
        disk.rename(tmp_path / "input" / "moved.qcow2")
        disk.symlink_to(secret)
        info = await qemu_img.info(pinned.tool_path, "qcow2", shown=disk)
    assert info.virtual_size == 64 * MiB  # the checked image, not the one swapped in
    assert witness.untouched()


def test_output_never_written_through_a_symlink(policy: PathPolicy, tmp_path: Path) -> None:
    victim = AtimeWitness(tmp_path / "outside" / "victim")
    before = victim.path.read_bytes()
    planted = tmp_path / "output" / ".disk.qcow2.h2k-tmp-job"
    planted.symlink_to(victim.path)
    with (
        pytest.raises(PathNotAllowed, match="already exists; refused to write"),
        pinned_output(policy, planted),
    ):
        pass
    assert victim.path.read_bytes() == before
