"""Names the intake gives things: claims, archives, migration ids, error files (pure).

Rules:

* A claim is the manifest renamed to ``<queue>/.claimed/<basename>.<digest>`` where ``digest``
  is the first 12 hex digits of the SHA-256 of its content: two drops that share a file name
  (every vSphere export is ``artifact-manifest.json``) get two claims, and two intakes on
  shared storage cannot both win the same ``rename``.
* A migration's id is ``<vm>-<digest>``: the same content always names the same migration, so
  a restart or a re-drop never makes a second one (SubmitMigration is idempotent by id), and
  an export of the same VM that differs in anything is a new migration.
* Archives go to ``<queue>/processed/<YYYY-MM-DD>/`` or ``<queue>/failed/<YYYY-MM-DD>/``
  under the claim's name, so nothing archived is ever overwritten.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from pathlib import Path

from migration.model import MigrationProblem
from migration.naming import check_vm_name, migration_id_part

CLAIMED_DIR = ".claimed"
PROCESSED_DIR = "processed"
FAILED_DIR = "failed"
REPLACED_DIR = "replaced"
DIGEST_CHARS = 12
_CLAIM_SUFFIX = re.compile(rf"\.[0-9a-f]{{{DIGEST_CHARS}}}$")
_VM_NAME_IN_TEXT = re.compile(rb'"vm_name"\s*:\s*"([^"\\]{1,200})"')


def content_digest(content: bytes) -> str:
    """The first 12 hex digits of the SHA-256 of ``content``."""
    return hashlib.sha256(content).hexdigest()[:DIGEST_CHARS]


def claim_name(basename: str, content: bytes) -> str:
    """The file name of the claim of a drop named ``basename`` with ``content``."""
    return f"{basename}.{content_digest(content)}"


def dropped_name(claim: str) -> str:
    """The name the manifest had in the queue (``claim_name`` undone)."""
    return _CLAIM_SUFFIX.sub("", claim)


def migration_id_for(vm_name: str, content: bytes) -> str:
    """``<vm>-<digest of content>``, the VM part made fit for a migration id.

    Characters other than letters, digits, ``.``, ``_`` and ``-`` become ``-``; the id starts
    with a letter or digit; a name with nothing usable left becomes ``vm``.
    """
    return f"{migration_id_part(vm_name)}-{content_digest(content)}"


def is_safe_file_stem(name: str) -> bool:
    """Whether ``name`` may be the stem of a file in the output directory."""
    try:
        check_vm_name(name)
    except MigrationProblem:
        return False
    return True


def error_file_name(vm_name: str | None, manifest_basename: str) -> str:
    """``<vm>.error`` when the VM name is safe as a file name, else ``<manifest>.error``."""
    if vm_name and is_safe_file_stem(vm_name):
        return f"{vm_name}.error"
    return f"{manifest_basename}.error"


def vm_name_of_document(content: bytes) -> str | None:
    """``source.vm_name`` of a manifest, even of one that is not valid (best effort).

    A drop that never becomes a JSON document still usually names its VM near the top; the
    error file then goes where HyperSDK looks for it.
    """
    try:
        document = json.loads(content)
    except ValueError:
        found = _VM_NAME_IN_TEXT.search(content)
        return found.group(1).decode("utf-8", errors="replace") if found else None
    source = document.get("source") if isinstance(document, dict) else None
    name = source.get("vm_name") if isinstance(source, dict) else None
    return name if isinstance(name, str) else None


def archive_dir(queue: Path, kind: str, when: datetime) -> Path:
    """``<queue>/<kind>/<YYYY-MM-DD>`` (kind: processed or failed)."""
    return queue / kind / when.strftime("%Y-%m-%d")
