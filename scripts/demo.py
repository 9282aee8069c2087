"""The h2k demo: a control plane and one agent on loopback convert a sample VMDK.

Run with `make demo`. Everything lives in a temporary directory that is removed at the end.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devsupport.cluster import BIN, running_cluster
from devsupport.images import MiB, build_image
from devsupport.specs import example


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def main() -> int:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="h2k-demo-") as tmp, running_cluster(Path(tmp)) as c:
        say(f"control plane on {c.address} (SQLite in {tmp}/cp), agent node-1 registered")
        subprocess.run([str(BIN / "h2kctl"), "--server", c.address, "--insecure", "agents"])

        say("building a 1 GiB monolithicSparse VMDK with data and holes")
        source = build_image(c.input_dir, "vmdk-monolithicSparse", size=1024 * MiB, stem="vm")
        doc = example("convert")
        doc["job_id"] = "demo-convert-001"
        doc["image"]["path"] = str(source.path)
        doc["artifacts"]["output_path"] = str(c.output_dir)
        doc["capability_requirements"].pop("min_disk_space_gb")
        job_file = c.write_job(doc)
        print(json.dumps(doc, indent=2))

        say("h2kctl submit job.json --watch")
        rc = subprocess.run(
            [
                str(BIN / "h2kctl"),
                "--server",
                c.address,
                "--insecure",
                "submit",
                str(job_file),
                "--watch",
            ]
        ).returncode
        say(f"h2kctl get {doc['job_id']}")
        subprocess.run(
            [str(BIN / "h2kctl"), "--server", c.address, "--insecure", "get", doc["job_id"]]
        )
        output = c.output_dir / "vm.qcow2"
        if rc == 0 and output.exists():
            say(f"qemu-img info {output}")
            subprocess.run(["qemu-img", "info", "-f", "qcow2", str(output)])
            same = subprocess.run(
                ["qemu-img", "compare", "-f", "vmdk", "-F", "qcow2", str(source.path), str(output)],
                capture_output=True,
                text=True,
            )
            say(f"qemu-img compare source output: {same.stdout.strip() or same.stderr.strip()}")
            rc = same.returncode
    say(f"demo finished in {time.monotonic() - started:.1f}s, everything stopped and removed")
    return rc


if __name__ == "__main__":
    sys.exit(main())
