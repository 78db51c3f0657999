"""Scraping a real /metrics endpoint in tests: the exposition text parsed by prometheus_client's parser."""

from __future__ import annotations

import time
from typing import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families


class Samples(dict[tuple[str, frozenset[tuple[str, str]]], float]):
    """sample name + labels -> value, with the metric families' names and types beside."""

    families: dict[str, str]

    def get_value(self, name: str, **labels: str) -> float | None:
        return self.get((name, frozenset(labels.items())))

    def value(self, name: str, **labels: str) -> float:
        """The sample's value; 0 when absent (a counter child not created yet)."""
        return self.get_value(name, **labels) or 0.0

    def names(self) -> set[str]:
        return {name for name, _ in self}


def parse(text: str) -> Samples:
    out = Samples()
    out.families = {}
    for family in text_string_to_metric_families(text):
        out.families[family.name] = family.type
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def scrape(url: str) -> Samples:
    r = httpx.get(url, timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain"), r.headers["content-type"]
    return parse(r.text)


def scrape_until(url: str, ready: Callable[[Samples], bool], timeout: float = 20.0) -> Samples:
    """Scrape until ``ready`` holds (the work behind the numbers is asynchronous); AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    samples = scrape(url)
    while not ready(samples):
        if time.monotonic() > deadline:
            raise AssertionError("metrics never matched; last scrape:\n" + "\n".join(
                f"{n}{dict(l)} {v}" for (n, l), v in sorted(samples.items(), key=lambda kv: kv[0][0])))
        time.sleep(0.1)
        samples = scrape(url)
    return samples
