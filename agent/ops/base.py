"""What an operation is given and what it returns."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.paths import PathPolicy
from agent.progress import ProgressReporter
from protocol.spec import JobSpec


@dataclass(frozen=True)
class JobContext:
    """One job attempt as an operation sees it; paths are already checked and resolved."""

    spec: JobSpec
    input_path: Path
    output_dir: Path
    state_dir: Path
    policy: PathPolicy
    progress: ProgressReporter
    node_name: str = ""
    attempt: int = 0
    # The agent's --stall-seconds: a tool whose progress stops that long is killed.
    stall_seconds: float | None = None

    @property
    def job_id(self) -> str:
        return self.spec.job_id

    @property
    def spec_sha256(self) -> str:
        """A digest of the whole spec: an output recorded with it was made for this job."""
        return self.spec.fingerprint()

    @property
    def scratch_dir(self) -> Path:
        """Agent-private space for short-lived files."""
        return self.state_dir / "tmp"


@dataclass(frozen=True)
class Output:
    kind: str  # "image", "inspection", "report", "log"
    path: Path
    size_bytes: int
    format: str
    # Hex sha256 of the published file; the executor hashes an output that comes without.
    sha256: str = ""


@dataclass(frozen=True)
class OpResult:
    outputs: list[Output] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


Operation = Callable[[JobContext], Awaitable[OpResult]]
