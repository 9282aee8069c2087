"""Mutual TLS: only the control plane may drive an agent; nobody talks plaintext by accident."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import grpc
import pytest

from devsupport.cluster import BIN, Cluster, Process, free_port, is_serving, wait_for
from devsupport.images import build_image
from devsupport.pki import CertificateAuthority, ClusterPKI, Leaf, tls_args
from devsupport.specs import job_spec
from protocol.conversion import spec_to_proto
from protocol.gen.h2k.v1 import services_pb2, services_pb2_grpc
from protocol.spec import parse_spec


def _worker(address: str, credentials: grpc.ChannelCredentials | None) -> tuple:
    channel = (
        grpc.insecure_channel(address)
        if credentials is None
        else grpc.secure_channel(address, credentials)
    )
    return channel, services_pb2_grpc.WorkerStub(channel)


def _capabilities_error(address: str, credentials: grpc.ChannelCredentials | None) -> grpc.RpcError:
    channel, stub = _worker(address, credentials)
    with channel, pytest.raises(grpc.RpcError) as caught:
        stub.GetCapabilities(services_pb2.GetCapabilitiesRequest(), timeout=5)
    return caught.value


def test_agent_refuses_a_plaintext_client(tls_cluster: Cluster) -> None:
    error = _capabilities_error(tls_cluster.agent_addresses["node-1"], None)
    assert error.code() is grpc.StatusCode.UNAVAILABLE


def test_agent_refuses_a_client_without_a_certificate(
    tls_cluster: Cluster, pki: ClusterPKI
) -> None:
    server_only = grpc.ssl_channel_credentials(root_certificates=pki.ca.cert.read_bytes())
    error = _capabilities_error(tls_cluster.agent_addresses["node-1"], server_only)
    assert error.code() is grpc.StatusCode.UNAVAILABLE


def test_agent_refuses_a_certificate_from_another_ca(
    tls_cluster: Cluster, pki: ClusterPKI, tmp_path: Path
) -> None:
    rogue_ca = CertificateAuthority(tmp_path / "rogue", name="rogue-ca")
    # The impostor even claims the control plane's name.
    impostor = rogue_ca.issue("h2k-controlplane")
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki.ca.cert.read_bytes(),
        private_key=impostor.key.read_bytes(),
        certificate_chain=impostor.cert.read_bytes(),
    )
    error = _capabilities_error(tls_cluster.agent_addresses["node-1"], credentials)
    assert error.code() is grpc.StatusCode.UNAVAILABLE


def _worker_calls(stub: services_pb2_grpc.WorkerStub, request: services_pb2.ExecuteJobRequest):
    """Every Worker method, as a call to make."""
    return {
        "GetCapabilities": lambda: stub.GetCapabilities(
            services_pb2.GetCapabilitiesRequest(), timeout=5
        ),
        "ExecuteJob": lambda: list(stub.ExecuteJob(request, timeout=5)),
        "AttachJob": lambda: list(
            stub.AttachJob(services_pb2.AttachJobRequest(job_id="x"), timeout=5)
        ),
        "CancelJob": lambda: stub.CancelJob(
            services_pb2.WorkerCancelJobRequest(job_id="x"), timeout=5
        ),
    }


def test_agent_refuses_a_valid_certificate_without_the_control_plane_identity(
    tls_cluster: Cluster, pki: ClusterPKI, images: Path, outdir: Path
) -> None:
    address = tls_cluster.agent_addresses["node-1"]
    source = build_image(images, "qcow2")
    spec = parse_spec(job_spec(image=source.path, image_format="qcow2", output=outdir))
    request = services_pb2.ExecuteJobRequest(spec=spec_to_proto(spec), attempt=1, start_seq=1)
    # admin and another agent both hold certificates from the right CA.
    for leaf in (pki.admin, pki.client("node-2")):
        channel, stub = _worker(address, pki.credentials(leaf))
        with channel:
            for name, call in _worker_calls(stub, request).items():
                with pytest.raises(grpc.RpcError) as caught:
                    call()
                assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED, name
                assert "'h2k-controlplane'" in caught.value.details()
                assert f"Worker.{name}" in caught.value.details()
    assert list(outdir.iterdir()) == []
    # The control plane's own certificate is served: the refusals were about identity.
    channel, stub = _worker(address, pki.credentials(pki.controlplane))
    with channel:
        assert stub.GetCapabilities(services_pb2.GetCapabilitiesRequest(), timeout=5).ByteSize()


def test_control_plane_refuses_clients_without_a_certificate(
    tls_cluster: Cluster, pki: ClusterPKI
) -> None:
    for credentials in (None, grpc.ssl_channel_credentials(pki.ca.cert.read_bytes())):
        channel = (
            grpc.insecure_channel(tls_cluster.address)
            if credentials is None
            else grpc.secure_channel(tls_cluster.address, credentials)
        )
        with channel, pytest.raises(grpc.RpcError) as caught:
            services_pb2_grpc.JobServiceStub(channel).ListJobs(
                services_pb2.ListJobsRequest(), timeout=5
            )
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE


def test_h2kctl_without_tls_material_says_what_is_missing(tls_cluster: Cluster) -> None:
    run = subprocess.run(
        [str(BIN / "h2kctl"), "--server", tls_cluster.address, "list"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert run.returncode == 2
    assert "no TLS material" in run.stderr and "--tls-ca" in run.stderr


@pytest.mark.parametrize("program", ["h2k-controlplane", "h2k-agent"])
def test_servers_refuse_to_start_without_tls_material(program: str, tmp_path: Path) -> None:
    argv = {
        "h2k-controlplane": ["--db", f"sqlite:///{tmp_path}/h2k.db"],
        "h2k-agent": [
            "--control-plane",
            "127.0.0.1:1",
            "--listen",
            "127.0.0.1:0",
            "--node-name",
            "n",
            "--state-dir",
            str(tmp_path / "state"),
        ],
    }[program]
    run = subprocess.run(
        [str(BIN / program), *argv, "--tls-cert", str(tmp_path / "only-a-cert.pem")],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert run.returncode == 2
    assert "missing --tls-key (or $H2K_TLS_KEY), --tls-ca (or $H2K_TLS_CA)" in run.stderr
    assert "--insecure" in run.stderr


def test_insecure_logs_a_warning(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    cp = Process(
        "cp",
        [
            str(BIN / "h2k-controlplane"),
            "--listen",
            address,
            "--db",
            f"sqlite:///{tmp_path}/h2k.db",
            "--insecure",
        ],
        tmp_path / "cp.log",
    )
    cp.start()
    try:
        wait_for(lambda: is_serving(address), what="insecure control plane")
        assert "WARNING" in cp.log() and "--insecure" in cp.log()
    finally:
        cp.stop()


def _rotate(files: dict[str, Path], ca: CertificateAuthority, name: str) -> None:
    leaf = ca.issue(name, stem=f"{name}-{ca.cert.stem}")
    # cert-manager swaps files in place; a rename keeps each one whole.
    for target, source in ((files["cert"], leaf.cert), (files["key"], leaf.key)):
        shutil.copy(source, target.with_suffix(".new"))
        target.with_suffix(".new").replace(target)
    shutil.copy(ca.cert, files["ca"].with_suffix(".new"))
    files["ca"].with_suffix(".new").replace(files["ca"])


def test_rotated_certificates_are_used_without_a_restart(tmp_path: Path) -> None:
    old_ca = CertificateAuthority(tmp_path / "old", name="old-ca")
    new_ca = CertificateAuthority(tmp_path / "new", name="new-ca")
    live = tmp_path / "live"
    live.mkdir()
    files = {"cert": live / "tls.crt", "key": live / "tls.key", "ca": live / "ca.crt"}
    _rotate(files, old_ca, "h2k-controlplane")
    roles = tmp_path / "roles.yaml"
    roles.write_text("identities: {admin: [admin]}\n")
    address = f"127.0.0.1:{free_port()}"
    cp = Process(
        "cp",
        [
            str(BIN / "h2k-controlplane"),
            "--listen",
            address,
            "--db",
            f"sqlite:///{tmp_path}/h2k.db",
            "--roles-file",
            str(roles),
            *tls_args(_leaf(files), files["ca"]),
        ],
        tmp_path / "cp.log",
    )

    def client(ca: CertificateAuthority) -> grpc.ChannelCredentials:
        leaf = ca.issue("admin", stem=f"admin-{ca.cert.stem}")
        return grpc.ssl_channel_credentials(
            ca.cert.read_bytes(), leaf.key.read_bytes(), leaf.cert.read_bytes()
        )

    old_client, new_client = client(old_ca), client(new_ca)
    cp.start()
    try:
        wait_for(lambda: is_serving(address, old_client), what="control plane on the old CA")
        assert not _serves(address, new_client)
        _rotate(files, new_ca, "h2k-controlplane")
        wait_for(lambda: _serves(address, new_client), what="control plane on the new CA")
        assert not _serves(address, old_client)
        assert "tls material reloaded" in cp.log()
    finally:
        cp.stop()


def _leaf(files: dict[str, Path]) -> Leaf:
    return Leaf("h2k-controlplane", files["cert"], files["key"])


def _serves(address: str, credentials: grpc.ChannelCredentials) -> bool:
    try:
        return is_serving(address, credentials)
    except grpc.RpcError:
        return False
