"""Parse untrusted XML (an OVF descriptor) into an ElementTree, refusing DTDs and entities.

Built on expat directly so the refusal is not left to a library default: a document type
declaration, an entity declaration or an external entity reference stops the parse with
:class:`UnsafeXml`. Element and attribute names come out in ``{namespace}local`` form.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from xml.parsers import expat

MAX_DOCUMENT_BYTES = 16 * 1024 * 1024


class UnsafeXml(ValueError):
    """The document is not well-formed XML, or uses a feature refused here."""


def _clark(name: str) -> str:
    # expat joins namespace and local name with the separator given below.
    return "{" + name if "}" in name else name


def parse_xml(document: bytes) -> ET.Element:
    """Return the root element of ``document``.

    Raises:
        UnsafeXml: not well-formed, too big, or has a DTD, an entity or an external reference.
    """
    if len(document) > MAX_DOCUMENT_BYTES:
        raise UnsafeXml(f"larger than {MAX_DOCUMENT_BYTES} bytes")
    builder = ET.TreeBuilder()
    parser = expat.ParserCreate(namespace_separator="}")

    def refuse(what: str) -> None:
        raise UnsafeXml(f"{what} is not allowed (line {parser.CurrentLineNumber})")

    def start(name: str, attributes: dict[str, str]) -> None:
        builder.start(_clark(name), {_clark(k): v for k, v in attributes.items()})

    def end(name: str) -> None:
        builder.end(_clark(name))

    parser.StartDoctypeDeclHandler = lambda *_: refuse("a DTD (<!DOCTYPE>)")
    parser.EntityDeclHandler = lambda *_: refuse("an entity declaration")
    parser.UnparsedEntityDeclHandler = lambda *_: refuse("an entity declaration")
    parser.ExternalEntityRefHandler = lambda *_: refuse("an external entity")  # type: ignore[assignment]
    parser.SkippedEntityHandler = lambda *_: refuse("an undefined entity")
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = builder.data
    try:
        parser.Parse(document, True)
    except expat.ExpatError as error:
        raise UnsafeXml(f"not well-formed XML: {error}") from None
    try:
        return builder.close()
    except AssertionError:  # TreeBuilder's way of saying nothing was built
        raise UnsafeXml("no root element") from None


def local_name(tag: object) -> str:
    """``{namespace}local`` -> ``local`` (comments and the like give "")."""
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def attribute(element: ET.Element, name: str) -> str:
    """The attribute with local name ``name`` in any namespace (or none); "" when absent."""
    for key, value in element.attrib.items():
        if local_name(key) == name:
            return value
    return ""


def children(element: ET.Element, name: str) -> list[ET.Element]:
    """Direct children with local name ``name``, in document order."""
    return [child for child in element if local_name(child.tag) == name]


def child_text(element: ET.Element, name: str) -> str:
    """Stripped text of the first direct child named ``name`` ("" when absent)."""
    for child in children(element, name):
        return (child.text or "").strip()
    return ""
