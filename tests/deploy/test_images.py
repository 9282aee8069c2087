"""A parser-based lint of the Dockerfiles (hadolint is not packaged for Debian)."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.deploy.conftest import ROOT

AGENT_PACKAGES = {
    "qemu-utils", "qemu-system-common", "fdisk", "e2fsprogs", "xfsprogs", "lvm2", "kmod", "mount",
}  # fmt: skip
DISK_TOOLS = AGENT_PACKAGES | {"util-linux", "parted", "nbd-client", "qemu-system-x86"}


@dataclass(frozen=True)
class Instruction:
    line: int
    keyword: str
    value: str


def parse(path: Path) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped."""
    instructions: list[Instruction] = []
    pending, start = "", 0
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        start = start or number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, value = (pending + line).partition(" ")
        instructions.append(Instruction(start, keyword.upper(), value.strip()))
        pending, start = "", 0
    return instructions


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    result: list[list[Instruction]] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            result.append([])
        result[-1].append(instruction)
    return result


@pytest.fixture(params=["Dockerfile.controlplane", "Dockerfile.agent"])
def dockerfile(request: pytest.FixtureRequest) -> Path:
    return ROOT / request.param


def test_general_rules(dockerfile: Path) -> None:
    instructions = parse(dockerfile)
    known = {"FROM", "RUN", "COPY", "ENV", "WORKDIR", "USER", "EXPOSE", "ENTRYPOINT", "CMD", "ARG",
             "LABEL"}  # fmt: skip
    assert {i.keyword for i in instructions} <= known
    froms = [i for i in instructions if i.keyword == "FROM"]
    assert len(froms) >= 2, "multi-stage: a build stage and a runtime stage"
    for instruction in froms:
        image = instruction.value.split()[0]
        assert re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+[\w.-]*(@sha256:[0-9a-f]{64})?", image), (
            f"line {instruction.line}: pin the base image to an exact version, not {image}"
        )
        assert " AS " in instruction.value, f"line {instruction.line}: name the stage"
    for instruction in instructions:
        assert instruction.keyword != "ADD", "use COPY"
        if instruction.keyword == "RUN" and "apt-get install" in instruction.value:
            assert "--no-install-recommends" in instruction.value
            assert "apt-get update" in instruction.value, "update and install in one layer"
            assert "rm -rf /var/lib/apt/lists/*" in instruction.value
        if instruction.keyword == "RUN":
            assert "curl " not in instruction.value and "wget " not in instruction.value
            assert "cd " not in instruction.value, "use WORKDIR"
    entrypoint = [i for i in instructions if i.keyword == "ENTRYPOINT"]
    assert len(entrypoint) == 1 and entrypoint[0].value.startswith("["), "exec form"


def test_dependencies_are_a_layer_of_their_own(dockerfile: Path) -> None:
    build = stages(parse(dockerfile))[0]
    copies = [i for i in build if i.keyword == "COPY"]
    runs = [i for i in build if i.keyword == "RUN"]
    # pyproject.toml alone, then the dependency install, then the sources.
    assert copies[0].value.split()[0] == "pyproject.toml"
    install = next(i for i in runs if "requirements.txt" in i.value)
    assert copies[0].line < install.line < copies[1].line
    assert any("--no-deps" in i.value and i.line > copies[-1].line for i in runs)


def _installed_packages(instructions: list[Instruction]) -> set[str]:
    packages: set[str] = set()
    for instruction in instructions:
        if instruction.keyword == "RUN" and "apt-get install" in instruction.value:
            for command in instruction.value.split("&&"):
                words = shlex.split(command)
                if words[:2] == ["apt-get", "install"]:
                    packages |= {w.split("=")[0] for w in words[2:] if not w.startswith("-")}
    return packages


def test_the_control_plane_image_is_non_root_without_disk_tools() -> None:
    runtime = stages(parse(ROOT / "Dockerfile.controlplane"))[-1]
    users = [i.value for i in runtime if i.keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert not _installed_packages(runtime) & DISK_TOOLS


def test_the_agent_image_has_the_disk_tools() -> None:
    runtime = stages(parse(ROOT / "Dockerfile.agent"))[-1]
    assert _installed_packages(runtime) >= AGENT_PACKAGES


def test_dockerignore_keeps_the_context_small() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv", "tests", "**/__pycache__"} <= ignored
    for kept in ("pyproject.toml", "protocol", "controlplane", "agent", "client", "cli"):
        assert kept not in ignored
