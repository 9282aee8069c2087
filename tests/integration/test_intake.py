"""h2k-intake against real processes: a control plane, an agent, the intake, and a HyperSDK
stand-in (tests/support/hypersdk.py) that drops manifests and waits for ``<vm>.qcow2`` or
``<vm>.error`` the way HyperSDK does. Guests without repair (no pipeline, or fix disabled), so
every output is compared with its source."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devsupport.cluster import BIN, Cluster, Process, wait_for
from devsupport.images import write_random_raw
from intake.naming import content_digest, migration_id_for
from tests.support import hypersdk

NETWORK = "VM Network=network:default"
FAST = ("--settle-seconds", "0.4", "--poll-seconds", "0.2", "--follow-seconds", "0.2")
IntakeFactory = Callable[..., Process]


@pytest.fixture
def place(cluster: Cluster, request: pytest.FixtureRequest) -> Path:
    """A directory of this test's own inside the agent's output allow-list."""
    d = cluster.output_dir / request.node.name.replace("[", "_").replace("]", "")
    d.mkdir(parents=True)
    return d


@pytest.fixture
def start_intake(cluster: Cluster, place: Path) -> Iterator[IntakeFactory]:
    started: list[Process] = []

    def start(*args: str, fast: bool = True, name: str = "intake") -> Process:
        argv = [str(BIN / "h2k-intake"), "--control-plane", cluster.address, "--insecure"]
        argv += [*(FAST if fast else ()), "--network", NETWORK, *args]
        proc = Process(name, argv, place / f"{name}.log")
        proc.start()
        started.append(proc)
        wait_for(lambda: "intake watching" in proc.log(), what="intake watching", timeout=30)
        return proc

    yield start
    for proc in started:
        proc.stop()
        print(f"----- {proc.name} -----\n{proc.log()[-5000:]}")


def _raw(path: Path, mib: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_random_raw(path, mib)
    return path


def manifest(
    name: str, disks: list[tuple[Path, str]], *, pipeline: bool = False, **extra: Any
) -> dict[str, Any]:
    """An Artifact Manifest v1 as HyperSDK writes it (disk-0 boot, no hint; the rest data)."""
    document: dict[str, Any] = {
        "manifest_version": "1.0",
        "source": {"provider": "vsphere", "vm_id": f"vm-{name}", "vm_name": name},
        "vm": {"cpu": 1, "mem_gb": 1, "firmware": "bios", "os_hint": "linux"},
        "disks": [
            {
                "id": f"disk-{i}",
                "source_format": fmt,
                "bytes": path.stat().st_size,
                "local_path": str(path),
                **(
                    {"disk_type": "boot"} if i == 0 else {"disk_type": "data", "boot_order_hint": i}
                ),
            }
            for i, (path, fmt) in enumerate(disks)
        ],
        "nics": [{"id": "nic-0", "mac": "00:50:56:ab:cd:01", "network": "VM Network"}],
        "output": {"directory": "/var/lib/hyper2kvm/output", "format": "qcow2"},
    }
    if pipeline:  # HyperSDK's defaults with the guest fix off and compression on
        document["pipeline"] = {
            "inspect": {"enabled": False},
            "fix": {"enabled": False},
            "convert": {"enabled": True, "compress": True},
            "validate": {"enabled": True, "check_image_integrity": True},
        }
    document.update(extra)
    return document


def _bytes(document: dict[str, Any]) -> bytes:
    return json.dumps(document, indent=2).encode()


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


def same_content(source: Path, source_format: str) -> Callable[[Path], None]:
    """The check made the moment ``<vm>.qcow2`` appears: a complete, valid image whose guest
    content equals the source's."""

    def check(image: Path) -> None:
        checked = _run("qemu-img", "check", "-f", "qcow2", str(image))
        assert checked.returncode == 0, checked.stdout + checked.stderr
        compared = _run(
            "qemu-img", "compare", "-f", source_format, "-F", "qcow2", str(source), str(image)
        )
        assert compared.returncode == 0, compared.stdout + compared.stderr

    return check


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def _dated(directory: Path) -> Path:
    """The one dated folder (YYYY-MM-DD) the daemon archived into under ``directory``; read from
    disk rather than computed, so a test that runs across midnight finds it."""
    days = _names(directory)
    assert len(days) <= 1, f"more than one dated folder under {directory}: {days}"
    return directory / days[0] if days else directory / "no-dated-folder-yet"


def _queue_pair(place: Path, name: str = "queue") -> tuple[Path, Path]:
    queue, output = place / name, place / f"{name}-output"
    queue.mkdir()
    output.mkdir()
    return queue, output


def test_a_two_disk_vm_arrives_and_hypersdk_sees_it_only_when_complete(
    cluster: Cluster, images: Path, place: Path, start_intake: IntakeFactory
) -> None:
    queue, output = _queue_pair(place)
    boot, data = _raw(images / "boot.img"), _raw(images / "data.img", 4)
    document = manifest("web-01", [(boot, "raw"), (data, "raw")])
    document["output"]["format"] = "raw"  # HyperSDK still waits for .qcow2
    start_intake("--queue", f"{queue}={output}")
    content = _bytes(document)
    hypersdk.drop(queue, "artifact-manifest.json", content)

    def complete(image: Path) -> None:
        same_content(boot, "raw")(image)
        # Published before the boot disk: already whole when HyperSDK sees success.
        same_content(data, "raw")(output / "web-01-disk-1.qcow2")

    outcome = hypersdk.wait_for_result(output, "web-01", on_success=complete)
    assert outcome.succeeded
    assert _names(output) == [
        "web-01-disk-1.qcow2",
        "web-01.kubevirt.yaml",
        "web-01.qcow2",
        "web-01.report.json",
        "web-01.xml",
    ]
    report = json.loads((output / "web-01.report.json").read_text())
    assert any("h2k-intake writes qcow2" in note for note in report["input"]["notes"])
    assert report["migration_id"] == migration_id_for("web-01", content)
    claim = f"artifact-manifest.json.{content_digest(content)}"
    wait_for(lambda: (_dated(queue / "processed") / claim).exists(), what="archived in processed/")
    assert (_dated(queue / "processed") / claim).read_bytes() == content
    assert _names(queue / ".claimed") == [] and "artifact-manifest.json" not in _names(queue)


def test_a_failing_vm_gets_an_error_whose_first_line_says_why(
    cluster: Cluster, images: Path, place: Path, start_intake: IntakeFactory
) -> None:
    queue, output = _queue_pair(place)
    boot = _raw(images / "boot.img", 4)
    broken = images / "broken.vmdk"
    broken.write_bytes(b"this is not a vmdk\n" * 200)
    start_intake("--queue", f"{queue}={output}")
    content = _bytes(manifest("web-02", [(boot, "raw"), (broken, "vmdk")]))
    hypersdk.drop(queue, "artifact-manifest.json", content)
    outcome = hypersdk.wait_for_result(output, "web-02")
    assert not outcome.succeeded
    first, *detail = outcome.error.splitlines()
    mid = migration_id_for("web-02", content)
    assert first.startswith(f"migration {mid} failed: ") and "disk disk-1" in first, first
    assert f"more: h2kctl migrations get {mid}" in detail
    assert _names(output) == ["web-02.error"]  # nothing at web-02.qcow2, nothing staged
    failed = _dated(queue / "failed")
    assert _names(failed) == [
        f"artifact-manifest.json.{content_digest(content)}",
        f"artifact-manifest.json.{content_digest(content)}.error",
    ]


def test_two_drops_with_the_same_file_name_are_both_migrated(
    cluster: Cluster, images: Path, place: Path, start_intake: IntakeFactory
) -> None:
    queue, output = _queue_pair(place)
    first, second = _raw(images / "a.img", 4), _raw(images / "b.img", 4)
    start_intake("--queue", f"{queue}={output}")
    hypersdk.drop(queue, "artifact-manifest.json", _bytes(manifest("vm-a", [(first, "raw")])))
    wait_for(lambda: not (queue / "artifact-manifest.json").exists(), what="first claimed")
    hypersdk.drop(queue, "artifact-manifest.json", _bytes(manifest("vm-b", [(second, "raw")])))
    for vm, source in (("vm-a", first), ("vm-b", second)):
        outcome = hypersdk.wait_for_result(output, vm, on_success=same_content(source, "raw"))
        assert outcome.succeeded
    wait_for(lambda: len(_names(_dated(queue / "processed"))) == 2, what="both archived")


def test_a_killed_intake_resumes_its_claim_and_makes_one_migration_only(
    cluster: Cluster, slow_source: Path, images: Path, place: Path, start_intake: IntakeFactory
) -> None:
    queue, output = _queue_pair(place)
    source = images / "slow.img"
    os.link(slow_source, source)
    content = _bytes(manifest("slow-vm", [(source, "raw")], pipeline=True))
    mid = migration_id_for("slow-vm", content)
    first = start_intake("--queue", f"{queue}={output}", name="intake-1")
    hypersdk.drop(queue, "artifact-manifest.json", content)
    with cluster.client() as api:
        wait_for(
            lambda: any(j.bytes_done > 0 for j in api.get_migration(mid).jobs),
            what="the disk converting",
            timeout=60,
            interval=0.1,
        )
        first.kill()
        assert _names(queue / ".claimed") == [f"artifact-manifest.json.{content_digest(content)}"]
        second = start_intake("--queue", f"{queue}={output}", name="intake-2")
        outcome = hypersdk.wait_for_result(
            output, "slow-vm", on_success=same_content(source, "raw")
        )
        assert outcome.succeeded
        ours = [m for m in api.list_migrations() if m.spec.vm.name == "slow-vm"]
    assert [m.spec.migration_id for m in ours] == [mid]
    assert "claim resumed" in second.log() and "migration already known" in second.log()
    wait_for(lambda: _names(queue / ".claimed") == [], what="claim archived")


def test_a_named_instance_uses_hypersdks_directories(
    cluster: Cluster, images: Path, place: Path, start_intake: IntakeFactory
) -> None:
    disk = _raw(images / "disk.img", 4)
    start_intake("--base-dir", str(place), "--instance", "blue")
    queue, output = place / "blue-queue", place / "blue-output"
    assert queue.is_dir() and output.is_dir()
    hypersdk.drop(queue, "db-01-manifest.json", _bytes(manifest("db-01", [(disk, "raw")])))
    outcome = hypersdk.wait_for_result(output, "db-01", on_success=same_content(disk, "raw"))
    assert outcome.succeeded


def test_half_a_document_never_finished_goes_to_failed_after_the_grace(
    cluster: Cluster, images: Path, place: Path, start_intake: IntakeFactory
) -> None:
    queue, output = _queue_pair(place)
    disk = _raw(images / "disk.img", 1)
    whole = _bytes(manifest("half-01", [(disk, "raw")]))
    start_intake("--queue", f"{queue}={output}", "--grace-seconds", "3")
    half = whole[: len(whole) // 2]
    hypersdk.drop(queue, "artifact-manifest.json", half, pieces=2)
    outcome = hypersdk.wait_for_result(output, "half-01", timeout=30)
    assert not outcome.succeeded
    assert outcome.error.startswith("manifest artifact-manifest.json was not a complete JSON")
    failed = _dated(queue / "failed")
    name = f"artifact-manifest.json.{content_digest(half)}"
    assert _names(failed) == [name, f"{name}.error"]
    assert (failed / name).read_bytes() == half
    assert _names(queue) == [".claimed", "failed"]
    with cluster.client() as api:
        assert "half-01" not in {m.spec.vm.name for m in api.list_migrations()}


def test_a_vm_name_that_climbs_out_is_refused_by_the_manifest_name(
    cluster: Cluster, images: Path, place: Path, start_intake: IntakeFactory
) -> None:
    queue, output = _queue_pair(place)
    disk = _raw(images / "disk.img", 1)
    document = manifest("../etc", [(disk, "raw")])
    start_intake("--queue", f"{queue}={output}")
    hypersdk.drop(queue, "evil-manifest.json", _bytes(document))
    error = output / "evil-manifest.json.error"
    wait_for(error.exists, what="the error file", timeout=30)
    first = error.read_text().splitlines()[0]
    assert first.startswith("manifest evil-manifest.json refused: source.vm_name"), first
    assert _names(output) == ["evil-manifest.json.error"]
    assert not (place / "etc.error").exists() and not (output.parent / "etc.qcow2").exists()
    wait_for(lambda: len(_names(_dated(queue / "failed"))) == 2, what="archived in failed/")


def test_an_earlier_output_is_never_overwritten_unless_replace_is_asked(
    cluster: Cluster, images: Path, place: Path, start_intake: IntakeFactory
) -> None:
    queue, output = _queue_pair(place)
    old, new = _raw(images / "old.img", 2), _raw(images / "new.img", 2)
    intake = start_intake("--queue", f"{queue}={output}")
    hypersdk.drop(queue, "artifact-manifest.json", _bytes(manifest("app-01", [(old, "raw")])))
    assert hypersdk.wait_for_result(output, "app-01").succeeded
    again = _bytes(manifest("app-01", [(new, "raw")]))
    hypersdk.drop(queue, "artifact-manifest.json", again)
    error = output / "app-01.error"
    wait_for(error.exists, what="the refusal", timeout=30)
    assert "app-01.qcow2 exists from an earlier run" in error.read_text().splitlines()[0]
    assert "--replace-existing" in error.read_text()
    same_content(old, "raw")(output / "app-01.qcow2")  # untouched
    intake.stop()
    start_intake("--queue", f"{queue}={output}", "--replace-existing", name="intake-replace")
    hypersdk.drop(
        queue,
        "artifact-manifest.json",
        _bytes(manifest("app-01", [(new, "raw")]) | {"notes": ["retry"]}),
    )
    wait_for(lambda: not error.exists(), what="the stale error removed", timeout=30)
    outcome = hypersdk.wait_for_result(output, "app-01", on_success=same_content(new, "raw"))
    assert outcome.succeeded
    replaced = _dated(output / "replaced")
    assert "app-01.qcow2" in _names(replaced)
    same_content(old, "raw")(replaced / "app-01.qcow2")


def test_an_unusable_queue_is_logged_the_others_are_served_and_systemd_is_told(
    cluster: Cluster,
    images: Path,
    place: Path,
    start_intake: IntakeFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    queue, output = _queue_pair(place)
    (place / "not-a-dir").write_text("a file\n")
    bad = place / "not-a-dir" / "queue"
    disk = _raw(images / "disk.img", 1)
    short = tempfile.mkdtemp(prefix="h2k-notify-")  # a socket path has at most 107 bytes
    notify_path = Path(short) / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.settimeout(30)
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify_path))
    try:
        intake = start_intake("--queue", f"{bad}={output}", "--queue", f"{queue}={output}")
        assert notify.recv(256) == b"READY=1"
        assert "queue unusable" in intake.log() and str(bad) in intake.log()
        hypersdk.drop(queue, "ok-manifest.json", _bytes(manifest("ok-01", [(disk, "raw")])))
        assert hypersdk.wait_for_result(output, "ok-01").succeeded
        assert intake.popen is not None
        intake.popen.send_signal(signal.SIGTERM)
        assert notify.recv(256) == b"STOPPING=1"
        assert intake.popen.wait(20) == 0
    finally:
        notify.close()
        shutil.rmtree(short)
