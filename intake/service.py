"""The intake's main loop: watch the queues, wait for complete drops, claim them, hand each
claim to its own thread (:mod:`intake.claims`), resume earlier claims on start."""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
import time
from datetime import datetime
from pathlib import Path

from client import H2KClient
from intake import error_text
from intake.claims import Claim, ClaimProcessor
from intake.config import IntakeConfig, QueuePair
from intake.files import archive, atomic_write, rename_exclusive
from intake.naming import (
    CLAIMED_DIR,
    FAILED_DIR,
    PROCESSED_DIR,
    claim_name,
    error_file_name,
    vm_name_of_document,
)
from intake.notify import sd_notify
from intake.settle import FileStamp, SettleTracker, Verdict
from intake.watch import QueueWatcher

log = logging.getLogger("intake")
RETRY_UNUSABLE_SECONDS = 10.0
STOP_JOIN_SECONDS = 10.0
MIN_TICK = 0.05


class IntakeService:
    """Serves every configured queue until :meth:`request_stop`."""

    def __init__(self, config: IntakeConfig, client: H2KClient) -> None:
        self.config = config
        self.stop = threading.Event()
        self._stop_requested = False
        self.watcher = QueueWatcher(config.use_inotify)
        self.processor = ClaimProcessor(config, client, self.stop)
        self.trackers = {
            q.queue: SettleTracker(config.settle_seconds, config.grace_seconds)
            for q in config.queues
        }
        self._usable: set[Path] = set()
        self._retry_at: dict[Path, float] = {}
        self._workers: dict[Path, threading.Thread] = {}

    def request_stop(self) -> None:
        """Ask the loop to stop; safe in a signal handler (a flag and a byte to a pipe)."""
        self._stop_requested = True
        self.watcher.wake()

    # --- the loop ----------------------------------------------------------------------------

    def run(self) -> None:
        for pair in self.config.queues:
            self._prepare(pair)
        sd_notify("READY=1")
        log.info(
            "intake watching queues=%d usable=%d mode=%s",
            len(self.config.queues),
            len(self._usable),
            self.watcher.mode,
        )
        try:
            while not self._stop_requested:
                for pair in self.config.queues:
                    if pair.queue not in self._usable:
                        self._prepare(pair)
                    if pair.queue in self._usable:
                        self._scan(pair)
                self._reap()
                self.watcher.wait(self._tick())
        finally:
            self._shutdown()

    def _tick(self) -> float:
        pending = any(t.pending for t in self.trackers.values())
        if not pending:
            return self.config.poll_seconds
        return max(MIN_TICK, min(self.config.poll_seconds, self.config.settle_seconds / 4))

    def _shutdown(self) -> None:
        sd_notify("STOPPING=1")
        log.info("intake stopping claims_in_progress=%d", len(self._workers))
        self.stop.set()
        deadline = time.monotonic() + STOP_JOIN_SECONDS
        for thread in list(self._workers.values()):
            thread.join(max(0.0, deadline - time.monotonic()))
        self.watcher.close()
        log.info("intake stopped")

    def _reap(self) -> None:
        for path in [p for p, t in self._workers.items() if not t.is_alive()]:
            del self._workers[path]

    # --- queues ------------------------------------------------------------------------------

    def _prepare(self, pair: QueuePair) -> None:
        """Create the queue's directories; an unusable queue is logged and tried again later,
        the others are served meanwhile."""
        now = time.monotonic()
        if now < self._retry_at.get(pair.queue, 0.0):
            return
        try:
            for directory in (pair.queue, pair.queue / CLAIMED_DIR, pair.output):
                directory.mkdir(parents=True, exist_ok=True)
            for directory in (pair.queue, pair.queue / CLAIMED_DIR, pair.output):
                if not os.access(directory, os.W_OK | os.X_OK):
                    raise PermissionError(f"{directory} is not writable by the intake")
        except OSError as error:
            self._retry_at[pair.queue] = now + RETRY_UNUSABLE_SECONDS
            log.error(
                "queue unusable, serving the others queue=%s output=%s error=%s",
                pair.queue,
                pair.output,
                json.dumps(str(error)),
            )
            return
        self._usable.add(pair.queue)
        self.watcher.watch(pair.queue)
        log.info("queue served queue=%s output=%s", pair.queue, pair.output)
        self._resume(pair)

    def _resume(self, pair: QueuePair) -> None:
        """Start a worker for every claim left by an earlier run (or another intake)."""
        claimed = sorted(
            p for p in (pair.queue / CLAIMED_DIR).iterdir() if p.is_file() and p.name[0] != "."
        )
        for path in claimed:
            if path not in self._workers:
                log.info("claim resumed claim=%s", path)
                self._start(Claim(pair, path))

    def _start(self, claim: Claim) -> None:
        thread = threading.Thread(
            target=self.processor.process, args=(claim,), name=f"claim {claim.path.name}"
        )
        thread.daemon = True
        self._workers[claim.path] = thread
        thread.start()

    def _scan(self, pair: QueuePair) -> None:
        tracker = self.trackers[pair.queue]
        try:
            entries = list(os.scandir(pair.queue))
        except OSError as error:
            self._usable.discard(pair.queue)
            log.error("queue unreadable queue=%s error=%s", pair.queue, json.dumps(str(error)))
            return
        drops = {}
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISREG(st.st_mode):
                drops[entry.name] = FileStamp(st.st_ino, st.st_size, st.st_mtime_ns)
        tracker.forget_missing(set(drops))
        now = time.monotonic()
        for name, stamp in drops.items():
            verdict = tracker.observe(name, stamp, now)
            content = b""
            if verdict is not Verdict.WAIT:
                try:
                    content = (pair.queue / name).read_bytes()
                except FileNotFoundError:
                    tracker.forget(name)
                    continue
                except OSError as error:
                    log.error("drop unreadable file=%s error=%s", name, json.dumps(str(error)))
                    continue
            if verdict is Verdict.READY:
                verdict = tracker.confirm(name, content, now)
            if verdict is Verdict.READY:
                tracker.forget(name)
                self._claim(pair, name, content)
            elif verdict is Verdict.EXPIRED:
                tracker.forget(name)
                self._expire(pair, name, content, tracker.problem(name))

    def _claim(self, pair: QueuePair, name: str, content: bytes) -> None:
        source = pair.queue / name
        target = pair.queue / CLAIMED_DIR / claim_name(name, content)
        if target.exists():
            # The same content dropped again while its claim is in progress: one migration
            # answers both.
            duplicate = target.with_name(f".duplicate-{target.name}")
            if rename_exclusive(source, duplicate):
                when = datetime.now()
                archive(duplicate, pair.queue, PROCESSED_DIR, when, name=target.name)
                log.info("duplicate drop archived file=%s claim=%s", name, target.name)
            return
        if not rename_exclusive(source, target):
            log.info("drop taken by another intake file=%s", name)
            return
        # HyperSDK writes in place: content may have changed between our read and the rename.
        claimed = target.read_bytes()
        if claimed != content:
            corrected = target.with_name(claim_name(name, claimed))
            if rename_exclusive(target, corrected):
                target = corrected
        log.info("drop claimed file=%s claim=%s queue=%s", name, target.name, pair.queue)
        self._start(Claim(pair, target))

    def _expire(self, pair: QueuePair, name: str, content: bytes, problem: str) -> None:
        text = error_text.incomplete_drop(name, self.config.grace_seconds, problem)
        claimed = pair.queue / CLAIMED_DIR / f".expired-{claim_name(name, content)}"
        if not rename_exclusive(pair.queue / name, claimed):
            return
        original = claimed.name.removeprefix(".expired-")
        final = archive(claimed, pair.queue, FAILED_DIR, datetime.now(), error=text, name=original)
        error_path = pair.output / error_file_name(vm_name_of_document(content), name)
        try:
            atomic_write(error_path, text)
        except OSError as error:
            log.error("cannot write the error file file=%s error=%r", error_path, str(error))
        log.warning(
            "drop never completed file=%s archived=%s error_file=%s reason=%s",
            name,
            final,
            error_path,
            json.dumps(problem),
        )
