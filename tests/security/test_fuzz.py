"""Property-based fuzzing of SubmitJob against a real control plane process.

Two properties, each over a few hundred generated inputs:
- any JobSpec message (random strings, numbers, enums, maps, nested parameters, timestamps)
  gets OK or INVALID_ARGUMENT (ALREADY_EXISTS only for an id accepted before);
- any byte string sent as a SubmitJobRequest (random, or a valid encoding mutated) gets OK or
  INVALID_ARGUMENT, never INTERNAL or UNKNOWN.
Afterwards the server is still serving and every job it accepted can be read back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devsupport.cluster import Cluster, is_serving
from protocol.gen.h2k.v1 import job_pb2, services_pb2, services_pb2_grpc

EXAMPLES = 1000
Submit = Callable[[bytes], tuple[grpc.StatusCode, bytes]]
ACCEPTABLE = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT}
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class Ledger:
    """What the fuzzer sent and what the server accepted."""

    def __init__(self) -> None:
        self.cases = 0
        self.accepted: dict[str, bytes] = {}  # job_id -> the accepted spec, serialized
        self.codes: dict[str, int] = {}

    def record(self, code: grpc.StatusCode) -> None:
        self.cases += 1
        self.codes[code.name] = self.codes.get(code.name, 0) + 1


@pytest.fixture(scope="module")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A control plane alone (no agent: accepted jobs stay queued and must stay there)."""
    cluster = Cluster(tmp_path_factory.mktemp("fuzz"))
    try:
        cluster.start_controlplane()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def ledger(control_plane: Cluster) -> Iterator[Ledger]:
    book = Ledger()
    yield book
    # Afterwards: still serving, and nothing it accepted was lost.
    assert is_serving(control_plane.address)
    assert control_plane.controlplane is not None and control_plane.controlplane.alive()
    with grpc.insecure_channel(control_plane.address) as channel:
        jobs = services_pb2_grpc.JobServiceStub(channel)
        for job_id in book.accepted:
            job = jobs.GetJob(services_pb2.GetJobRequest(job_id=job_id), timeout=10)
            assert job.spec.job_id == job_id
    print(f"\nfuzz: {book.cases} cases, {len(book.accepted)} accepted, codes {book.codes}")


# --- strategies ---------------------------------------------------------------------------

text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet="abc/._-\x00 ", max_size=12),
    st.builds(lambda n: "x" * n, st.integers(0, 6000)),
)
paths = st.one_of(text, st.builds(lambda t: "/data/" + t, text))
job_ids = st.one_of(text, st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,140}", fullmatch=True))
int32 = st.integers(-(2**31), 2**31 - 1)
json_leaf = st.one_of(
    st.none(), st.booleans(), st.floats(allow_nan=True), st.text(max_size=20), st.integers(-9, 9)
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=40,
)


def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    msg = struct_pb2.Struct()
    msg.update(value)
    return msg


FIELDS = (
    "version", "job_id", "operation", "requested_actions", "image.path", "image.format",
    "image.checksum", "image.size_bytes", "execution_policy", "capability_requirements",
    "artifacts.output_path", "audit.requested_by", "audit.tags", "parameters", "created_at",
)  # fmt: skip


def _base_spec() -> job_pb2.JobSpec:
    spec = job_pb2.JobSpec(version="1.0", operation=1)
    spec.image.path = "/data/input/vm.vmdk"
    spec.image.format = "vmdk"
    spec.artifacts.output_path = "/data/output"
    spec.audit.requested_by = "fuzzer"
    return spec


@st.composite
def job_specs(draw: st.DrawFn) -> tuple[job_pb2.JobSpec, bool]:
    """A valid spec with up to four fields replaced by anything; True when job_id was."""
    spec = _base_spec()
    fuzzed = draw(st.sets(st.sampled_from(FIELDS), max_size=4))
    if "version" in fuzzed:
        spec.version = draw(st.one_of(st.sampled_from(["", "1", "2.0", "x"]), text))
    if "job_id" in fuzzed:
        spec.job_id = draw(job_ids)
    if "operation" in fuzzed:
        spec.operation = draw(st.integers(-3, 12))
    if "requested_actions" in fuzzed:
        spec.requested_actions.extend(draw(st.lists(text, max_size=70)))
    if "image.path" in fuzzed:
        spec.image.path = draw(paths)
    if "image.format" in fuzzed:
        spec.image.format = draw(st.one_of(st.sampled_from(["qcow2", "raw", "vhd"]), text))
    if "image.checksum" in fuzzed:
        spec.image.checksum = draw(st.one_of(text, st.just("sha256:" + "a" * 64)))
    if "image.size_bytes" in fuzzed:
        spec.image.size_bytes = draw(st.integers(-(2**63), 2**63 - 1))
    for group, names in (
        ("execution_policy", ("retry_count", "timeout_seconds", "priority")),
        ("capability_requirements", ("min_memory_gb", "min_disk_space_gb")),
    ):
        if group in fuzzed:
            for name in names:
                if draw(st.booleans()):
                    setattr(getattr(spec, group), name, draw(int32))
    if "artifacts.output_path" in fuzzed:
        spec.artifacts.output_path = draw(paths)
    if "audit.requested_by" in fuzzed:
        spec.audit.requested_by = draw(text)
    if "audit.tags" in fuzzed:
        for key, value in draw(st.dictionaries(text, text, max_size=70)).items():
            spec.audit.tags[key] = value
    if "parameters" in fuzzed:
        params = draw(st.dictionaries(st.text(max_size=10), json_value, max_size=70))
        with contextlib.suppress(ValueError, TypeError):
            spec.parameters.CopyFrom(_struct(params))
    if "created_at" in fuzzed:
        spec.created_at.seconds = draw(st.integers(-(2**40), 2**40))
        spec.created_at.nanos = draw(st.integers(-(2**31), 2**31 - 1))
    return spec, "job_id" in fuzzed


def _valid_request() -> bytes:
    spec = _base_spec()
    spec.job_id = "fuzz-base"
    spec.audit.tags["k"] = "v"
    spec.parameters.update({"a": [1, 2, {"b": "c"}]})
    return services_pb2.SubmitJobRequest(spec=spec).SerializeToString()


@st.composite
def mutated_requests(draw: st.DrawFn) -> bytes:
    data = bytearray(_valid_request())
    for _ in range(draw(st.integers(1, 8))):
        choice = draw(st.integers(0, 3))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if choice == 0 and data:
            data[at] = draw(st.integers(0, 255))
        elif choice == 1:
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif choice == 2:
            del data[at : at + draw(st.integers(1, 16))]
        else:
            data = data[:at]
    return bytes(data)


# --- the properties -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def submit_raw(control_plane: Cluster) -> Iterator[Submit]:
    """Send bytes as a SubmitJobRequest (no client-side encoding or checks)."""
    with grpc.insecure_channel(control_plane.address) as channel:
        call = channel.unary_unary("/h2k.v1.JobService/SubmitJob")

        def submit(payload: bytes) -> tuple[grpc.StatusCode, bytes]:
            try:
                return grpc.StatusCode.OK, call(payload, timeout=10)
            except grpc.RpcError as exc:
                return exc.code(), exc.details().encode()

        yield submit


def _check(ledger: Ledger, payload: bytes, code: grpc.StatusCode, reply: bytes) -> None:
    ledger.record(code)
    if code is grpc.StatusCode.OK:
        job = services_pb2.SubmitJobResponse.FromString(reply).job
        ledger.accepted[job.spec.job_id] = job.spec.SerializeToString()
        return
    if code is grpc.StatusCode.ALREADY_EXISTS:
        sent = services_pb2.SubmitJobRequest.FromString(payload)
        assert sent.spec.job_id in ledger.accepted, reply
        return
    assert code in ACCEPTABLE, (code, reply.decode(errors="replace"))


@FUZZ
@given(case=job_specs())
def test_any_job_spec_gets_ok_or_invalid_argument(
    submit_raw: Submit, ledger: Ledger, case: tuple[job_pb2.JobSpec, bool]
) -> None:
    spec, fuzzed_id = case
    if not fuzzed_id:
        spec.job_id = f"fuzz-{ledger.cases}"  # unique, so acceptance is never ALREADY_EXISTS
    payload = services_pb2.SubmitJobRequest(spec=spec).SerializeToString()
    code, reply = submit_raw(payload)
    _check(ledger, payload, code, reply)


@FUZZ
@given(payload=st.one_of(mutated_requests(), st.binary(max_size=512)))
def test_any_bytes_get_ok_or_invalid_argument(
    submit_raw: Submit, ledger: Ledger, payload: bytes
) -> None:
    code, reply = submit_raw(payload)
    if code is grpc.StatusCode.ALREADY_EXISTS:
        ledger.record(code)  # a mutation that kept the id "fuzz-base" but changed the spec
        assert "fuzz-base" in ledger.accepted or b"already exists" in reply
        return
    _check(ledger, payload, code, reply)


def test_the_fuzzed_server_lost_nothing(control_plane: Cluster, ledger: Ledger) -> None:
    """Runs last in this module: the ledger fixture's teardown does the checks."""
    assert ledger.cases >= 2 * EXAMPLES
    assert ledger.accepted, "the generators never produced an acceptable job"
