"""Temporary output names carry job, node and attempt; output records round-trip."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

from agent.disk.atomic import (
    OutputRecord,
    Writer,
    atomic_output,
    attach_record,
    proven_output,
    recorded_sha256,
    temporary_name,
    writing_as,
)

FINAL = Path("/out/vm.qcow2")


def test_two_agents_and_two_attempts_never_share_a_temporary_name() -> None:
    names = {
        temporary_name(FINAL, "job-1", Writer("node-a", 1)),
        temporary_name(FINAL, "job-1", Writer("node-b", 1)),
        temporary_name(FINAL, "job-1", Writer("node-a", 2)),
    }
    assert len(names) == 3
    assert all(n.parent == FINAL.parent and n.name.startswith(".vm.qcow2.h2k-tmp-") for n in names)
    assert temporary_name(FINAL, "job-1", Writer("node-a", 2)).name == (
        ".vm.qcow2.h2k-tmp-job-1.node-a.2"
    )


def test_the_executors_writer_names_every_temporary_output(tmp_path: Path) -> None:
    with writing_as("node-z", 3), atomic_output(tmp_path / "x.json", "j", tmp_path) as out:
        assert out.tmp.name == ".x.json.h2k-tmp-j.node-z.3"


def test_a_name_too_long_keeps_its_prefix_and_fits() -> None:
    name = temporary_name(FINAL, "j" * 200, Writer("n" * 63, 7)).name
    assert len(name) <= 255 and name.startswith(".vm.qcow2.h2k-tmp-")


def test_an_output_is_proven_by_its_record_and_its_content(tmp_path: Path) -> None:
    final = tmp_path / "disk.raw"
    data = b"x" * 10_000
    with writing_as("node-a", 1), atomic_output(final, "job-1", tmp_path / "state") as out:
        out.tmp.write_bytes(data)
        record = OutputRecord(
            "job-1", 1, "node-a", "spec", len(data), hashlib.sha256(data).hexdigest()
        )
        with open(out.tmp, "rb") as f:
            assert attach_record(f.fileno(), record)
        out.commit()
    proven, why = asyncio.run(proven_output(final, "job-1", "spec"))
    assert proven == record and why == ""
    assert asyncio.run(proven_output(final, "job-2", "spec"))[1].startswith("it was written by")
    final.write_bytes(b"y" * 10_000)  # rewritten in place: the attribute stays, the hash not
    assert "content changed" in asyncio.run(proven_output(final, "job-1", "spec"))[1]


def test_a_recorded_digest_holds_only_while_the_file_is_unchanged(tmp_path: Path) -> None:
    final = tmp_path / "staged.qcow2"
    data = b"z" * 4096
    final.write_bytes(data)
    fd = os.open(final, os.O_RDONLY)
    try:
        st = os.fstat(fd)
        digest = hashlib.sha256(data).hexdigest()
        record = OutputRecord("j", 1, "n", "s", len(data), digest, st.st_mtime_ns)
        attach_record(fd, record)
    finally:
        os.close(fd)
    assert recorded_sha256(final) == digest
    os.utime(final, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # written again, say
    assert recorded_sha256(final) is None
