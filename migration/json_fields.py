"""Typed, path-aware reading of a decoded JSON document that collects every problem at once.

A reader never stops at the first bad field: each check appends ``"<json path>: <rule>"`` to
:attr:`Findings.problems` and returns a harmless default, so the caller can raise one
:class:`~migration.model.MigrationProblem` listing everything. Keys a reader is never asked
about are recorded in :attr:`Findings.ignored` by :meth:`JsonObject.finish`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field

INT64_MAX = 2**63 - 1


class _Object(dict[str, object]):
    """A JSON object that remembers keys given more than once (``json`` keeps the last)."""

    duplicates: tuple[str, ...] = ()


def _pairs_to_object(pairs: list[tuple[str, object]]) -> _Object:
    obj = _Object(pairs)
    if len(obj) != len(pairs):
        counts: dict[str, int] = {}
        for key, _ in pairs:
            counts[key] = counts.get(key, 0) + 1
        obj.duplicates = tuple(k for k, n in counts.items() if n > 1)
    return obj


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def decode_json(document: bytes | str) -> object:
    """Decode ``document``; raise ``ValueError`` with a readable reason when it is not JSON."""
    try:
        return json.loads(
            document, object_pairs_hook=_pairs_to_object, parse_constant=_refuse_constant
        )
    except RecursionError:
        raise ValueError("nested too deeply") from None


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


@dataclass
class Findings:
    """What reading found wrong (``problems``) and what it did not use (``ignored``)."""

    problems: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    def add(self, path: str, rule: str) -> None:
        self.problems.append(f"{path}: {rule}")


class JsonObject:
    """One JSON object at ``path``; every getter checks the type and remembers the key."""

    def __init__(self, value: dict[str, object], path: str, findings: Findings) -> None:
        self.value = value
        self.path = path
        self.findings = findings
        self._known: set[str] = set()
        for key in getattr(value, "duplicates", ()):
            findings.add(self.at(key), "is given more than once")

    @classmethod
    def of(cls, value: object, path: str, findings: Findings) -> JsonObject | None:
        """Wrap ``value`` when it is an object, else record a problem and return None."""
        if isinstance(value, dict):
            return cls(value, path, findings)
        findings.add(path or "document", f"must be an object, not {type_name(value)}")
        return None

    def at(self, key: str) -> str:
        return join(self.path, key)

    def has(self, key: str) -> bool:
        return key in self.value

    def raw(self, key: str, *, required: bool = False) -> object:
        """The value of ``key`` unchecked (None when absent)."""
        self._known.add(key)
        if key not in self.value:
            if required:
                self.findings.add(self.at(key), "is required")
            return None
        return self.value[key]

    def _typed(self, key: str, kind: type | tuple[type, ...], want: str, required: bool) -> object:
        value = self.raw(key, required=required)
        if value is None:
            if key in self.value:
                self.findings.add(self.at(key), f"must be {want}, not null")
            return None
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            self.findings.add(self.at(key), f"must be {want}, not a boolean")
            return None
        if not isinstance(value, kind):
            self.findings.add(self.at(key), f"must be {want}, not {type_name(value)}")
            return None
        return value

    def string(
        self,
        key: str,
        *,
        required: bool = False,
        default: str = "",
        choices: tuple[str, ...] = (),
        pattern: str = "",
        check: Callable[[str], str] | None = None,
    ) -> str:
        """A string; ``choices``/``pattern``/``check`` (returns a rule, "" when fine) apply."""
        value = self._typed(key, str, "a string", required)
        if not isinstance(value, str):
            return default
        if choices and value not in choices:
            self.findings.add(self.at(key), f"must be one of {', '.join(choices)}")
            return default
        if pattern and re.fullmatch(pattern, value) is None:
            self.findings.add(self.at(key), f"must match {pattern}")
            return default
        if check is not None and (rule := check(value)):
            self.findings.add(self.at(key), rule)
            return default
        return value

    def integer(
        self,
        key: str,
        *,
        required: bool = False,
        minimum: int | None = None,
        maximum: int | None = INT64_MAX,
    ) -> int | None:
        """An integer (not a float, not a boolean) within ``minimum``..``maximum``."""
        value = self._typed(key, int, "an integer", required)
        if not isinstance(value, int):
            return None
        too_low = minimum is not None and value < minimum
        if too_low or (maximum is not None and value > maximum):
            if minimum is not None and maximum is not None and maximum != INT64_MAX:
                self.findings.add(self.at(key), f"must be between {minimum} and {maximum}")
            elif too_low:
                self.findings.add(self.at(key), f"must be >= {minimum}")
            else:
                self.findings.add(self.at(key), f"must be <= {maximum}")
            return None
        return value

    def boolean(self, key: str, *, default: bool = False, required: bool = False) -> bool:
        value = self._typed(key, bool, "true or false", required)
        return value if isinstance(value, bool) else default

    def obj(self, key: str, *, required: bool = False) -> JsonObject | None:
        value = self._typed(key, dict, "an object", required)
        return JsonObject(value, self.at(key), self.findings) if isinstance(value, dict) else None

    def array(self, key: str, *, required: bool = False) -> list[object] | None:
        value = self._typed(key, list, "a list", required)
        return value if isinstance(value, list) else None

    def objects(self, key: str, *, required: bool = False) -> list[JsonObject] | None:
        """A list of objects; items that are not objects are problems and left out."""
        items = self.array(key, required=required)
        if items is None:
            return None
        found = (
            JsonObject.of(item, f"{self.at(key)}[{i}]", self.findings)
            for i, item in enumerate(items)
        )
        return [item for item in found if item is not None]

    def strings(self, key: str) -> list[str]:
        items = self.array(key) or []
        for i, item in enumerate(items):
            if not isinstance(item, str):
                self.findings.add(
                    f"{self.at(key)}[{i}]", f"must be a string, not {type_name(item)}"
                )
        return [item for item in items if isinstance(item, str)]

    def finish(self) -> None:
        """Record each key no getter asked for as ignored (by its JSON path)."""
        self.findings.ignored.extend(self.at(k) for k in self.value if k not in self._known)
