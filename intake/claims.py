"""One claimed manifest from claim to answer: validate, submit, follow, answer HyperSDK.

The rules, in the order they apply:

1. A manifest that is not a valid Artifact Manifest v1 gets ``<vm>.error`` (``<manifest>.error``
   when it names no safe VM) and goes to ``failed/``.
2. Its migration id is ``<vm>-<digest of content>``. When the control plane already knows that
   migration (a restart, or a re-drop of the same content) it is followed, never submitted
   again, and the output rules below are skipped: its outputs are its own.
3. A new migration for a VM whose ``<vm>.qcow2`` is in the output directory is refused with
   ``<vm>.error``: an earlier run's complete result is never overwritten. With
   ``--replace-existing`` the earlier outputs are moved to ``<output>/replaced/<date>/`` first.
4. A stale ``<vm>.error`` is removed before the migration is submitted.
5. COMPLETED: the control plane published the outputs, ``<vm>.qcow2`` last; the intake checks
   it is there. FAILED or CANCELLED: ``<vm>.error`` is written atomically, reason first.
6. The manifest is archived in ``processed/`` or ``failed/``. A claim is only archived when it
   has its answer, so an intake stopped or killed before that resumes it on start.

One VM of one output directory is handled by one claim at a time (two drops for the same VM
would otherwise publish over each other).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from client import H2KClient
from intake import error_text
from intake.config import IntakeConfig, QueuePair
from intake.files import archive, atomic_write, move_aside, remove_if_present
from intake.naming import (
    FAILED_DIR,
    PROCESSED_DIR,
    REPLACED_DIR,
    dropped_name,
    error_file_name,
    vm_name_of_document,
)
from intake.spec import forced_format_note, intake_spec
from migration.manifest import ParsedManifest, read_manifest
from migration.model import MigrationProblem
from migration.naming import output_names
from protocol.errors import AlreadyExists, FailedPrecondition, H2KError, InvalidArgument, NotFound
from protocol.gen.h2k.v1 import migration_pb2

log = logging.getLogger("intake.claims")
T = TypeVar("T")
TERMINAL = (
    migration_pb2.MIGRATION_STATE_COMPLETED,
    migration_pb2.MIGRATION_STATE_FAILED,
    migration_pb2.MIGRATION_STATE_CANCELLED,
)
MAX_RETRY_WAIT = 10.0


class Stopped(Exception):
    """The intake is stopping: leave the claim where it is."""


@dataclass(frozen=True)
class Claim:
    queue: QueuePair
    path: Path  # <queue>/.claimed/<basename>.<digest>

    @property
    def basename(self) -> str:
        return dropped_name(self.path.name)


class VmLocks:
    """One lock per (output directory, VM name)."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[tuple[Path, str], threading.Lock] = {}

    @contextlib.contextmanager
    def held(self, output: Path, vm: str, stop: threading.Event) -> Iterator[None]:
        with self._guard:
            lock = self._locks.setdefault((output, vm), threading.Lock())
        while not lock.acquire(timeout=0.5):
            if stop.is_set():
                raise Stopped
        try:
            yield
        finally:
            lock.release()


def _state(m: migration_pb2.Migration) -> str:
    return migration_pb2.MigrationState.Name(m.state).removeprefix("MIGRATION_STATE_")


class ClaimProcessor:
    """Takes claims to their answer; one instance serves every queue (thread safe)."""

    def __init__(
        self,
        config: IntakeConfig,
        client: H2KClient,
        stop: threading.Event,
        now: Callable[[], datetime] = datetime.now,
    ) -> None:
        self.config = config
        self.client = client
        self.stop = stop
        self.now = now
        self.locks = VmLocks()

    # --- the steps ---------------------------------------------------------------------------

    def process(self, claim: Claim) -> None:
        """Take ``claim`` to its answer; returns early (claim kept) when the intake stops."""
        try:
            self._process(claim)
        except Stopped:
            log.info("claim left for the next start claim=%s", claim.path)
        except OSError as error:
            log.error(
                "claim not finished: file error claim=%s error=%r (retried on restart)",
                claim.path,
                str(error),
            )

    def _process(self, claim: Claim) -> None:
        try:
            content = claim.path.read_bytes()
        except FileNotFoundError:
            log.info("claim gone claim=%s", claim.path)
            return
        try:
            parsed = read_manifest(content, path_exists=os.path.exists)
            spec = intake_spec(
                parsed,
                content,
                output_directory=str(claim.queue.output),
                networks=self.config.networks,
                default_network=self.config.default_network,
            )
        except MigrationProblem as problem:
            name = error_file_name(vm_name_of_document(content), claim.basename)
            text = error_text.manifest_refused(claim.basename, problem.problems)
            self._answer_failure(claim, name, text, event="manifest refused")
            return
        vm = parsed.vm.name
        mid = spec.migration_id
        log.info("manifest claimed claim=%s vm=%s migration_id=%s", claim.path.name, vm, mid)
        if parsed.options.output.format != "qcow2":
            log.info("%s migration_id=%s", forced_format_note(parsed.options.output.format), mid)
        with self.locks.held(claim.queue.output, vm, self.stop):
            migration = self._retrying(lambda: self._existing(mid), "get migration")
            if migration is None:
                if not self._make_room(claim, parsed, mid):
                    return
                migration = self._submit(claim, spec, parsed)
                if migration is None:
                    return
            else:
                log.info(
                    "migration already known, following migration_id=%s state=%s",
                    mid,
                    _state(migration),
                )
            final = self._follow(mid)
            self._finish(claim, final, parsed)

    def _existing(self, mid: str) -> migration_pb2.Migration | None:
        try:
            return self.client.get_migration(mid)
        except NotFound:
            return None

    def _make_room(self, claim: Claim, parsed: ParsedManifest, mid: str) -> bool:
        """Apply the existing-output rule; False when the claim was answered with a refusal."""
        output = claim.queue.output
        vm = parsed.vm.name
        result = parsed.options.hypersdk_result_name
        boot = output / f"{vm}.qcow2"
        if boot.exists():
            if not self.config.replace_existing:
                text = error_text.existing_output(vm, str(output), mid)
                self._answer_failure(claim, f"{result}.error", text, event="earlier output")
                return False
            where = output / REPLACED_DIR / self.now().strftime("%Y-%m-%d")
            moved = move_aside(_earlier_outputs(output, parsed), where)
            log.info(
                "earlier outputs replaced vm=%s migration_id=%s moved=%d to=%s",
                vm,
                mid,
                len(moved),
                where,
            )
        for name in {f"{result}.error", f"{vm}.error"}:
            if remove_if_present(output / name):
                log.info("stale error removed file=%s migration_id=%s", output / name, mid)
        return True

    def _submit(
        self, claim: Claim, spec: migration_pb2.MigrationSpec, parsed: ParsedManifest
    ) -> migration_pb2.Migration | None:
        mid = spec.migration_id
        try:
            (answer,) = self._retrying(
                lambda: self.client.submit_migrations([spec]), "submit migration"
            )
        except AlreadyExists as error:
            # Same content, another spec: the intake's configuration changed since it was
            # submitted. The content decides the migration: follow the one that exists.
            log.warning("migration exists with another spec, following migration_id=%s", mid)
            log.debug("already exists: %s", error.message)
            return self._retrying(lambda: self.client.get_migration(mid), "get migration")
        except (InvalidArgument, FailedPrecondition) as error:
            text = error_text.control_plane_refused(
                claim.basename,
                mid,
                error.code.name,
                error.message.removeprefix(f"{error.code.name}: "),
            )
            name = f"{parsed.options.hypersdk_result_name}.error"
            self._answer_failure(claim, name, text, event="migration refused")
            return None
        log.info(
            "migration submitted migration_id=%s vm=%s created=%s output=%s",
            mid,
            spec.vm.name,
            answer.created,
            claim.queue.output,
        )
        return answer.migration

    def _follow(self, mid: str) -> migration_pb2.Migration:
        """Poll the migration until it ended (raises Stopped when the intake stops)."""
        last = ""
        while True:
            m = self._retrying(lambda: self.client.get_migration(mid), "get migration")
            now = f"{_state(m)}/{m.stage}"
            if now != last:
                log.info(
                    "migration progress migration_id=%s state=%s stage=%s disks=%d/%d",
                    mid,
                    _state(m),
                    m.stage,
                    m.disks_done,
                    m.disks_total,
                )
                last = now
            if m.state in TERMINAL:
                return m
            if self.stop.wait(self.config.follow_seconds):
                raise Stopped

    def _finish(self, claim: Claim, m: migration_pb2.Migration, parsed: ParsedManifest) -> None:
        output = claim.queue.output
        vm = parsed.vm.name
        result = parsed.options.hypersdk_result_name
        mid = m.spec.migration_id
        if m.state != migration_pb2.MIGRATION_STATE_COMPLETED:
            text = error_text.migration_failure(m)
            self._answer_failure(claim, f"{result}.error", text, event="migration failed")
            return
        boot = output / f"{vm}.qcow2"
        if not boot.exists():
            text = error_text.missing_output(m, str(boot))
            self._answer_failure(claim, f"{result}.error", text, event="output missing")
            return
        if result != vm:
            # HyperSDK looks for <source.vm_name or "vm">.qcow2; h2k named the VM by vm_id.
            with contextlib.suppress(FileExistsError):
                os.link(boot, output / f"{result}.qcow2")
        archived = archive(claim.path, claim.queue.queue, PROCESSED_DIR, self.now())
        self._record(claim, "completed", archived, mid)
        log.info(
            "migration completed migration_id=%s vm=%s output=%s archived=%s",
            mid,
            vm,
            boot,
            archived,
        )

    # --- helpers -----------------------------------------------------------------------------

    def _record(self, claim: Claim, outcome: str, archived: Path, migration_id: str = "") -> None:
        """One JSON line per answer in ``<state-dir>/answers.jsonl`` (for operators; the
        queue's directories stay the truth)."""
        line = {
            "time": self.now().isoformat(timespec="seconds"),
            "queue": str(claim.queue.queue),
            "manifest": claim.basename,
            "migration_id": migration_id,
            "outcome": outcome,
            "archived": str(archived),
        }
        try:
            self.config.state_dir.mkdir(parents=True, exist_ok=True)
            with (self.config.state_dir / "answers.jsonl").open("a", encoding="utf-8") as f:
                f.write(json.dumps(line) + "\n")
        except OSError as error:
            log.warning("state dir not writable dir=%s error=%r", self.config.state_dir, str(error))

    def _answer_failure(self, claim: Claim, error_name: str, text: str, *, event: str) -> None:
        """Write ``<output>/<error_name>`` and archive the claim in failed/."""
        error_path = claim.queue.output / error_name
        try:
            atomic_write(error_path, text)
        except OSError as error:
            log.error("cannot write the error file file=%s error=%r", error_path, str(error))
        archived = archive(claim.path, claim.queue.queue, FAILED_DIR, self.now(), error=text)
        self._record(claim, event, archived)
        log.warning(
            "%s claim=%s error_file=%s archived=%s reason=%s",
            event,
            claim.path.name,
            error_path,
            archived,
            json.dumps(text.splitlines()[0]),
        )

    def _retrying(self, call: Callable[[], T], what: str) -> T:
        """``call()``, again after a pause while the control plane cannot answer."""
        wait = self.config.follow_seconds
        reported = False
        while True:
            try:
                return call()
            except (NotFound, AlreadyExists, InvalidArgument, FailedPrecondition):
                raise
            except H2KError as error:
                if not reported:
                    log.warning(
                        "control plane not answering, retrying call=%r error=%r",
                        what,
                        error.message,
                    )
                    reported = True
            if self.stop.wait(wait):
                raise Stopped
            wait = min(wait * 2, MAX_RETRY_WAIT)


def _earlier_outputs(output: Path, parsed: ParsedManifest) -> list[Path]:
    """The files an earlier migration of the VM left: this manifest's names, plus the disks
    the earlier run's report lists."""
    names = output_names(parsed.vm, "qcow2")
    found = [*names.disks, names.domain_xml, names.kubevirt_yaml, names.report_json]
    found += [f"{parsed.vm.name}.error", f"{parsed.options.hypersdk_result_name}.qcow2"]
    try:
        report = json.loads((output / names.report_json).read_text())
        found += [d["output"] for d in report.get("disks", []) if isinstance(d.get("output"), str)]
    except (OSError, ValueError, AttributeError, TypeError):
        pass
    unique = dict.fromkeys(n for n in found if n and "/" not in n and n not in (".", ".."))
    return [output / n for n in unique]
