"""How the agent drives qemu-img convert: flags per output, zstd support, early write-back.

Real qemu-img and a real file system; nothing is mocked.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from agent.disk import qemu_img
from agent.disk.qemu_img import convert_argv, supports_compression_type
from agent.disk.writeback import drop_cached, early_writeback

SRC, DST = Path("/i/a.vmdk"), Path("/o/a.qcow2")
needs_qemu_img = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")


def _options(argv: list[str]) -> str:
    return argv[argv.index("-o") + 1]


def test_zstd_is_passed_as_a_qcow2_create_option() -> None:
    argv = convert_argv(SRC, "vmdk", DST, "qcow2", compress=True, compression_type="zstd")
    assert _options(argv) == "preallocation=off,compression_type=zstd"
    assert argv[-2:] == [str(SRC), str(DST)]


def test_default_and_uncompressed_argv_name_no_compression_type() -> None:
    # zlib is qemu-img's default; naming it would break qemu-img older than 5.1
    assert _options(convert_argv(SRC, "vmdk", DST, "qcow2", compress=True)) == "preallocation=off"
    unpacked = convert_argv(SRC, "vmdk", DST, "qcow2", compress=False, compression_type="zstd")
    assert _options(unpacked) == "preallocation=off" and "-c" not in unpacked


@needs_qemu_img
async def test_compression_support_is_probed_with_real_qemu_img(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(qemu_img, "_COMPRESSION_SUPPORT", {})  # a fresh cache for this test
    assert await supports_compression_type("no-such-method", tmp_path) is False
    create = ["qemu-img", "create", "-q", "-f", "qcow2", "-o", "compression_type=zstd"]
    made = subprocess.run([*create, str(tmp_path / "check.qcow2"), "1M"], capture_output=True)
    (tmp_path / "check.qcow2").unlink(missing_ok=True)
    assert await supports_compression_type("zstd", tmp_path) is (made.returncode == 0)
    assert list(tmp_path.iterdir()) == [], "the probe image is removed"


def _resident_bytes(path: Path) -> int:
    out = subprocess.run(
        ["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return int(out.split()[0])


def _is_tmpfs(path: Path) -> bool:
    out = subprocess.run(["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True)
    return out.stdout.strip() == "tmpfs"


@pytest.mark.skipif(shutil.which("fincore") is None, reason="needs fincore (util-linux)")
async def test_written_data_is_written_back_before_any_fsync_and_stays_cached_until_dropped(
    tmp_path: Path,
) -> None:
    if _is_tmpfs(tmp_path):
        pytest.skip("tmpfs has no write-back")
    path = tmp_path / "out.img"
    data = os.urandom(1 << 20)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        async with early_writeback(fd, "job-1", interval=0.02):
            for _ in range(32):
                os.write(fd, data)
            # Only clean pages can be dropped: once a drop empties the cache, the hints have
            # written the data out (no fsync was called). Until then the pages stay cached
            # (the hash that follows a conversion reads them from memory).
            for _ in range(10):  # ten hint periods: the hints themselves drop nothing
                assert _resident_bytes(path) == 32 << 20
                await asyncio.sleep(0.02)  # an observation window, not a synchronisation
            deadline = time.monotonic() + 20
            while not _written_back(fd, path) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)  # polling an outcome with a deadline
            assert _resident_bytes(path) == 0
    finally:
        os.close(fd)
    with open(path, "rb") as f:
        assert f.read(1 << 20) == data and os.path.getsize(path) == 32 << 20


def _written_back(fd: int, path: Path) -> bool:
    """Whether every page is clean: a drop then leaves none of them cached."""
    drop_cached(fd)
    return _resident_bytes(path) == 0


async def test_a_descriptor_without_write_back_only_stops_the_hints(
    caplog: pytest.LogCaptureFixture,
) -> None:
    read_end, write_end = os.pipe()
    try:
        with caplog.at_level(logging.WARNING):
            async with early_writeback(write_end, "job-2", interval=0.01):
                os.write(write_end, b"body runs")
                deadline = time.monotonic() + 10
                while "early write-back stopped" not in caplog.text:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.01)
        assert os.read(read_end, 100) == b"body runs"
        assert "job_id=job-2" in caplog.text
    finally:
        os.close(read_end)
        os.close(write_end)


async def test_leaving_the_context_does_not_wait_for_the_next_hint(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        started = time.monotonic()
        async with early_writeback(fd, "job-3", interval=60):
            pass
        assert time.monotonic() - started < 5
    finally:
        os.close(fd)
