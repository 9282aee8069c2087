"""The MigrationSpec the intake submits for a manifest (pure).

It is ``h2kctl migrate``'s spec with the intake's rules on top: the migration id comes from
the content (:func:`intake.naming.migration_id_for`), the output directory is the queue's, the
network mapping is the intake's configuration, and the output format is always qcow2 because
HyperSDK's daemon mode only ever looks for ``<vm>.qcow2``.
"""

from __future__ import annotations

from collections.abc import Mapping

from intake.naming import migration_id_for
from migration.manifest import ParsedManifest
from migration.wire import spec_from_manifest
from protocol.gen.h2k.v1 import migration_pb2

# The control plane keeps at most this much of the input document.
MAX_DOCUMENT_BYTES = 256 * 1024
REQUESTED_BY = "h2k-intake"


def forced_format_note(asked: str) -> str:
    return (
        f"output.format {asked} was asked; h2k-intake writes qcow2 because HyperSDK's daemon "
        "mode only looks for <vm>.qcow2"
    )


def network_map_for(
    parsed: ParsedManifest,
    networks: Mapping[str, migration_pb2.NetworkTarget],
    default: migration_pb2.NetworkTarget | None,
) -> dict[str, migration_pb2.NetworkTarget]:
    """The configured mapping, with ``default`` for every NIC network it does not name."""
    mapping = dict(networks)
    if default is not None:
        for nic in parsed.vm.nics:
            mapping.setdefault(nic.network, default)
    return mapping


def _document_text(content: bytes) -> str:
    text = content.decode("utf-8", errors="replace")
    while len(text.encode()) > MAX_DOCUMENT_BYTES:
        text = text[: len(text) * 3 // 4]
    return text


def intake_spec(
    parsed: ParsedManifest,
    content: bytes,
    *,
    output_directory: str,
    networks: Mapping[str, migration_pb2.NetworkTarget],
    default_network: migration_pb2.NetworkTarget | None = None,
) -> migration_pb2.MigrationSpec:
    """The spec of the migration of a dropped manifest (the same content: the same spec)."""
    spec = spec_from_manifest(
        parsed,
        _document_text(content),
        migration_id=migration_id_for(parsed.vm.name, content),
        output_directory=output_directory,
        network_map=network_map_for(parsed, networks, default_network),
        requested_by=REQUESTED_BY,
    )
    asked = parsed.options.output.format
    if asked != "qcow2":
        spec.vm.notes.append(forced_format_note(asked))
    spec.output_format = "qcow2"
    return spec
