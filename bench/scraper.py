"""A Prometheus-like scraper for the benchmark: /metrics every few seconds, gzip accepted.

Runs in a thread of the benchmark process while the measured window is open, so scrapes
land while the PCs report (as Prometheus' would), and the ack latencies of that window
show whether a scrape stalls ingestion. Each scrape is timed from the request to the last
byte of the (compressed) body; decoding happens after the clock stops and only checks
that the body is a page.
"""

from __future__ import annotations

import gzip
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from bench.latency import Histogram


@dataclass
class ScrapeStats:
    latency: Histogram = field(default_factory=Histogram)
    count: int = 0
    gzipped: int = 0  # answers with Content-Encoding: gzip
    wire_bytes: int = 0  # last body as sent
    page_bytes: int = 0  # last body decoded
    errors: list[str] = field(default_factory=list)

    def figures(self) -> dict[str, Any]:
        return {
            "scrapes": self.count,
            "scrapes_gzipped": self.gzipped,
            "scrape_p50_s": self.latency.quantile(0.5),
            "scrape_p99_s": self.latency.quantile(0.99),
            "scrape_max_s": self.latency.maximum,
            "scrape_wire_bytes": self.wire_bytes,
            "scrape_page_bytes": self.page_bytes,
            "scrape_errors": self.errors[:3],
        }


class Scraper:
    """Scrapes ``url`` every ``interval`` seconds (from one request's start to the next)
    in a daemon thread, between :meth:`start` and :meth:`stop`."""

    def __init__(self, url: str, interval: float, timeout: float = 60.0) -> None:
        self.url = url
        self.interval = interval
        self.timeout = timeout
        self.stats = ScrapeStats()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-scraper", daemon=True)

    def start(self) -> Scraper:
        self._thread.start()
        return self

    def stop(self) -> ScrapeStats:
        self._stop.set()
        self._thread.join(self.timeout + 5)
        return self.stats

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self._scrape_once()
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def _scrape_once(self) -> None:
        request = urllib.request.Request(self.url, headers={"Accept-Encoding": "gzip"})
        started = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body = response.read()
                encoding = response.headers.get("Content-Encoding", "")
        except OSError as exc:  # refused, reset, timed out: counted, the run goes on
            self.stats.errors.append(f"{type(exc).__name__}: {exc}")
            return
        self.stats.latency.add(time.monotonic() - started)
        self.stats.count += 1
        self.stats.wire_bytes = len(body)
        if encoding == "gzip":
            self.stats.gzipped += 1
            body = gzip.decompress(body)
        self.stats.page_bytes = len(body)
        if b"# TYPE tripline_agent_up gauge" not in body:
            self.stats.errors.append("a scrape's body is not the collector's page")
