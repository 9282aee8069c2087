"""A restarted agent stops tools a killed agent left writing its temporary outputs."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from agent.disk.atomic import AtomicOutput
from agent.recovery import kill_orphans


def test_an_orphaned_writer_of_a_journaled_temporary_output_is_killed(tmp_path: Path) -> None:
    state_dir, out = tmp_path / "state", tmp_path / "out"
    out.mkdir()
    output = AtomicOutput(out / "vm.qcow2", "job-1", state_dir)
    output.begin()  # journals the temporary name, as a conversion does before qemu-img runs
    # A stand-in for qemu-img (which would die of SIGPIPE on its next progress line; a tool
    # without output would not): its own session, the temporary file in its argv.
    orphan = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)", str(output.tmp)],
        start_new_session=True,
    )
    bystander = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)", str(out / "other")],
        start_new_session=True,
    )
    try:
        assert kill_orphans(state_dir) == [orphan.pid]
        assert orphan.wait(5) == -signal.SIGKILL
        assert bystander.poll() is None
    finally:
        for proc in (orphan, bystander):
            proc.kill()
            proc.wait(5)
