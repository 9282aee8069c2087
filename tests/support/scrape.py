"""Reading a process's Prometheus /metrics endpoint."""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


@dataclass(frozen=True)
class Family:
    name: str
    type: str
    documentation: str
    samples: list[Sample]


class Scrape:
    """One scrape: families by name, and sample values looked up by name and labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families = {
            f.name: Family(f.name, f.type, f.documentation, list(f.samples))
            for f in text_string_to_metric_families(text)
        }

    def samples(self, name: str, **labels: str) -> list[Sample]:
        """Every sample called ``name`` whose labels include ``labels``."""
        return [
            s
            for family in self.families.values()
            for s in family.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        ]

    def value(self, name: str, **labels: str) -> float:
        """The sum of the matching samples (0 when there is none)."""
        return sum(s.value for s in self.samples(name, **labels))

    def sample_names(self) -> set[str]:
        return {s.name for family in self.families.values() for s in family.samples}


def scrape(port: int) -> Scrape:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        return Scrape(reply.read().decode())
