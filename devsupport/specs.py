"""Builder for v1 job documents: start from the shared examples, change what a test needs."""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path
from typing import Any

# The repository keeps a copy of the upstream example files (../shared/examples);
# tests/unit/protocol/test_examples.py checks that the copy is unchanged.
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def example(name: str) -> dict[str, Any]:
    """One of the upstream example files (convert, inspect, offline-fix), as a dict."""
    return json.loads((EXAMPLES / f"{name}-job.json").read_text())


def job_spec(
    operation: str = "convert",
    *,
    image: str | Path = "/data/input/vm.vmdk",
    image_format: str | None = "vmdk",
    output: str | Path = "/data/output",
    job_id: str | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """A valid v1 document based on the shared example for ``operation``.

    Keyword overrides replace top-level fields; nested dicts are merged one level deep.
    """
    base = example("inspect" if operation == "inspect" else "convert")
    doc = copy.deepcopy(base)
    doc["operation"] = operation
    doc["job_id"] = job_id or f"{operation}-{uuid.uuid4().hex[:12]}"
    doc["image"] = {"path": str(image)}
    if image_format is not None:
        doc["image"]["format"] = image_format
    doc["artifacts"]["output_path"] = str(output)
    # The examples ask for the job's log beside the outputs; tests that want it say so.
    doc["artifacts"]["log_upload"] = False
    # The examples ask for 20 GB free disk; test machines may be smaller.
    doc["capability_requirements"].pop("min_disk_space_gb", None)
    doc["capability_requirements"].pop("min_memory_gb", None)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(doc.get(key), dict):
            doc[key] = {**doc[key], **value}
        else:
            doc[key] = value
    return doc
