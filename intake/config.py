"""What one h2k-intake serves: its queues, timings, network mapping and rules (no I/O)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cli.migration_input import parse_network
from migration.model import MigrationProblem
from protocol.gen.h2k.v1 import migration_pb2

BASE_DIR = Path("/var/lib/hyper2kvm")


@dataclass(frozen=True)
class QueuePair:
    """A watched queue directory and the output directory its migrations write to."""

    queue: Path
    output: Path


@dataclass(frozen=True)
class IntakeConfig:
    control_plane: str
    queues: tuple[QueuePair, ...]
    state_dir: Path
    settle_seconds: float = 2.0
    grace_seconds: float = 300.0
    poll_seconds: float = 1.0
    follow_seconds: float = 1.0
    replace_existing: bool = False
    networks: dict[str, migration_pb2.NetworkTarget] = field(default_factory=dict)
    default_network: migration_pb2.NetworkTarget | None = None
    use_inotify: bool = True


def parse_queue(option: str) -> QueuePair:
    """``DIR=OUTPUT_DIR`` -> QueuePair (both absolute).

    Raises:
        MigrationProblem: naming the option and the rule.
    """
    queue, sep, output = option.partition("=")
    if not sep or not queue.startswith("/") or not output.startswith("/"):
        raise MigrationProblem([f"--queue {option!r}: must be DIR=OUTPUT_DIR, both absolute"])
    return QueuePair(Path(queue), Path(output))


def instance_queue(base: Path, instance: str) -> QueuePair:
    """HyperSDK's directories of a named instance: ``<base>/<i>-queue`` and ``<i>-output``.

    Raises:
        MigrationProblem: an instance name that is not one path component.
    """
    if not instance or "/" in instance or instance.startswith(".") or "\0" in instance:
        raise MigrationProblem([f"--instance {instance!r}: must be a plain name"])
    return QueuePair(base / f"{instance}-queue", base / f"{instance}-output")


def queues_of(
    queue_options: Sequence[str], instances: Sequence[str], base: Path = BASE_DIR
) -> tuple[QueuePair, ...]:
    """Every queue asked for; none asked: HyperSDK's default ``queue`` and ``output``.

    Raises:
        MigrationProblem: a bad option, or one queue directory named twice.
    """
    pairs = [parse_queue(o) for o in queue_options] + [instance_queue(base, i) for i in instances]
    if not pairs:
        pairs = [QueuePair(base / "queue", base / "output")]
    seen = [p.queue for p in pairs]
    twice = sorted({str(q) for q in seen if seen.count(q) > 1})
    if twice:
        raise MigrationProblem([f"queue {q} is named more than once" for q in twice])
    return tuple(pairs)


def networks_of(options: Sequence[str]) -> dict[str, migration_pb2.NetworkTarget]:
    """``--network`` options -> source network name -> target (see h2kctl migrate)."""
    return dict(parse_network(option) for option in options)


def default_network_of(option: str | None) -> migration_pb2.NetworkTarget | None:
    """``--default-network network:NAME|bridge:NAME[,pod|multus:NAME]`` -> target."""
    if not option:
        return None
    try:
        return parse_network(f"*={option}")[1]
    except MigrationProblem:
        raise MigrationProblem(
            [
                f"--default-network {option!r}: must be network:NAME or bridge:NAME, "
                "optionally followed by ,pod or ,multus:NAME"
            ]
        ) from None
