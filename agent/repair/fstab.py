"""Parse /etc/fstab and /etc/crypttab, and rewrite the device column of chosen lines."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TabEntry:
    """One non-comment line of fstab (spec, mountpoint, fstype, options) or crypttab (name,
    spec)."""

    line_index: int
    spec: str
    mountpoint: str = ""
    fstype: str = ""
    options: tuple[str, ...] = ()


def _unescape(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t")


def parse_fstab(text: str) -> list[TabEntry]:
    entries = []
    for index, line in enumerate(text.splitlines()):
        fields = line.split()
        if len(fields) < 3 or fields[0].startswith("#"):
            continue
        options = tuple(fields[3].split(",")) if len(fields) > 3 else ()
        entries.append(
            TabEntry(index, _unescape(fields[0]), _unescape(fields[1]), fields[2], options)
        )
    return entries


def parse_crypttab(text: str) -> list[TabEntry]:
    """crypttab: ``name device [keyfile [options]]``; the device is the second column."""
    entries = []
    for index, line in enumerate(text.splitlines()):
        fields = line.split()
        if len(fields) < 2 or fields[0].startswith("#"):
            continue
        entries.append(TabEntry(index, fields[1], mountpoint=fields[0]))
    return entries


def replace_column(text: str, line_index: int, column: int, value: str) -> str:
    """``text`` with column ``column`` of line ``line_index`` replaced, spacing kept."""
    lines = text.splitlines(keepends=True)
    line = lines[line_index]
    start = 0
    for col in range(column + 1):
        while start < len(line) and line[start] in " \t":
            start += 1
        end = start
        while end < len(line) and line[end] not in " \t\r\n":
            end += 1
        if col == column:
            lines[line_index] = line[:start] + value + line[end:]
            break
        start = end
    return "".join(lines)
