"""A private libvirtd for the tests, and helpers to drive it with virsh.

The daemon runs as root (it has to: the QEMU driver's state is a privileged daemon's) but in
its own mount and network namespaces (``unshare --mount --net``): tmpfs over ``/run`` and
``/var`` hold its state, a bind mount gives it our ``/etc/libvirt`` (and an ``/etc/passwd`` with
the ``libvirt-qemu`` user Debian's driver looks up at start, which only libvirt-daemon-system
would create), and the bridges of its networks live in the private network namespace. The host
gets nothing but a socket in the test's temporary directory, which virsh reaches with
``qemu+unix:///system?socket=...``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

NEEDED_COMMANDS = (
    "libvirtd",
    "virsh",
    "virt-xml-validate",
    "xmllint",
    "unshare",
    "qemu-system-x86_64",
    "qemu-img",
    "iptables",
)
FIRMWARE_DESCRIPTORS = Path("/usr/share/qemu/firmware")
TEST_NETWORK = "h2k-test"
START_DEADLINE_S = 30.0
COMMAND_TIMEOUT_S = 60.0

LIBVIRTD_CONF = """\
unix_sock_dir = "{sock_dir}"
unix_sock_group = "root"
unix_sock_rw_perms = "0700"
auth_unix_rw = "none"
auth_unix_ro = "none"
log_outputs = "3:stderr"
"""
# QEMU runs as root so it can open images in pytest's 0700 temporary directories; no security
# driver (no AppArmor in a container), no cgroups (none delegated here), logs to files.
QEMU_CONF = """\
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
stdio_handler = "file"
cgroup_controllers = [ ]
"""
# Runs inside the new namespaces: the mounts are private to them.
START_SCRIPT = """\
set -eu
mount -t tmpfs h2k-test-run /run
mount -t tmpfs h2k-test-var /var
mkdir -p /var/lib/libvirt /var/cache/libvirt /var/log/libvirt
ln -s /run /var/run
mount --bind "$1/etc" /etc/libvirt
mount --bind "$1/passwd" /etc/passwd
mount --bind "$1/group" /etc/group
ip link set lo up
exec libvirtd --config /etc/libvirt/libvirtd.conf
"""
ISOLATED_NETWORK_XML = f"""\
<network>
  <name>{TEST_NETWORK}</name>
  <bridge name="h2ktest0"/>
</network>
"""


class VirshError(AssertionError):
    """A virsh command failed; the message has its stderr and the daemon's last log lines."""


@dataclass
class Libvirtd:
    """The running private daemon."""

    root: Path
    process: subprocess.Popen[bytes]

    @property
    def uri(self) -> str:
        return f"qemu+unix:///system?socket={self.root}/sock/libvirt-sock"

    @property
    def log(self) -> Path:
        return self.root / "libvirtd.log"

    def log_tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace").splitlines()
        # The node-device driver's complaints about this sandbox's devices are noise.
        useful = [line for line in text if "ethtool ioctl" not in line and "dmi" not in line]
        return "\n".join(useful[-lines:])

    def virsh(self, *args: str) -> str:
        """Run ``virsh -c <uri> args...``; its stdout, or :class:`VirshError`."""
        result = subprocess.run(
            ["virsh", "-q", "-c", self.uri, *args],
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            env={**os.environ, "LC_ALL": "C"},
        )
        if result.returncode != 0:
            raise VirshError(
                f"virsh {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}\n"
                f"--- libvirtd log (tail) ---\n{self.log_tail()}"
            )
        return result.stdout


def wait_until(condition: Callable[[], bool], deadline_s: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``deadline_s``."""
    deadline = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {deadline_s:.0f} s")
        time.sleep(0.05)


def _check_prerequisites() -> None:
    missing = [command for command in NEEDED_COMMANDS if shutil.which(command) is None]
    if missing:
        pytest.fail(f"not installed: {', '.join(missing)}; run `make setup` (scripts/setup.sh)")
    if not list(FIRMWARE_DESCRIPTORS.glob("*.json")):
        pytest.fail(
            f"no firmware descriptors in {FIRMWARE_DESCRIPTORS}: the ovmf package is missing"
        )
    if os.geteuid() != 0:
        pytest.fail("tests/libvirt need root: the private libvirtd needs its own mount namespace")


def _write_config(root: Path) -> None:
    (root / "etc").mkdir()
    (root / "sock").mkdir()
    (root / "etc" / "libvirtd.conf").write_text(LIBVIRTD_CONF.format(sock_dir=root / "sock"))
    (root / "etc" / "qemu.conf").write_text(QEMU_CONF)
    (root / "start.sh").write_text(START_SCRIPT)
    passwd = Path("/etc/passwd").read_text()
    group = Path("/etc/group").read_text()
    if not any(line.startswith("libvirt-qemu:") for line in passwd.splitlines()):
        passwd += "libvirt-qemu:x:64055:64055:libvirt qemu:/nonexistent:/usr/sbin/nologin\n"
    for name, gid in (("libvirt-qemu", 64055), ("kvm", 64056)):
        if not any(line.startswith(f"{name}:") for line in group.splitlines()):
            group += f"{name}:x:{gid}:\n"
    (root / "passwd").write_text(passwd)
    (root / "group").write_text(group)


@pytest.fixture(scope="session")
def libvirtd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Libvirtd]:
    """A private libvirtd with the isolated network ``h2k-test`` started."""
    _check_prerequisites()
    root = tmp_path_factory.mktemp("libvirt")
    _write_config(root)
    with (root / "libvirtd.log").open("wb") as log:
        process = subprocess.Popen(
            ["unshare", "--mount", "--net", "--propagation", "private", "--",
             "sh", str(root / "start.sh"), str(root)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    daemon = Libvirtd(root=root, process=process)
    socket = root / "sock" / "libvirt-sock"

    def listening() -> bool:
        if process.poll() is not None:
            pytest.fail(
                f"libvirtd exited {process.returncode} before listening "
                f"(unshare --mount --net needs CAP_SYS_ADMIN):\n{daemon.log_tail()}"
            )
        return socket.is_socket()

    try:
        wait_until(listening, START_DEADLINE_S, f"libvirtd listening on {socket}")
        daemon.virsh("version")  # the drivers are up, not only the socket
        network_xml = root / "network.xml"
        network_xml.write_text(ISOLATED_NETWORK_XML)
        daemon.virsh("net-define", str(network_xml))
        daemon.virsh("net-start", TEST_NETWORK)
        yield daemon
    finally:
        _stop(daemon)


def _stop(daemon: Libvirtd) -> None:
    """Destroy every domain still running (QEMU outlives libvirtd), then stop the daemon."""
    if daemon.process.poll() is None:
        try:
            for uuid in daemon.virsh("list", "--uuid").split():
                daemon.virsh("destroy", uuid)
        except (VirshError, subprocess.TimeoutExpired):
            pass  # the daemon is gone or stuck: still stop it below
        daemon.process.send_signal(signal.SIGTERM)
        try:
            daemon.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            daemon.process.kill()
            daemon.process.wait()
