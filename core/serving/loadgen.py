"""A bounded HTTP load generator (stdlib only) for the serving tests and benchmark."""

from __future__ import annotations

import http.client
import statistics
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass
class LoadResult:
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float
    shed: int = 0  # answered 503 (load shedding): refused on purpose, not an error


    @property
    def throughput(self) -> float:
        return self.requests / self.seconds

    def __str__(self) -> str:
        shed = f", {self.shed} shed (503)" if self.shed else ""
        return (f"{self.requests} requests in {self.seconds:.1f} s ({self.throughput:.0f}/s), {self.errors} errors"
                f"{shed}, p50 {self.p50_ms:.1f} ms, p99 {self.p99_ms:.1f} ms")


def run_load(url: str, body: bytes, clients: int = 8, seconds: float = 5.0, max_requests: int = 100_000) -> LoadResult:
    """`clients` threads POST `body` to `url` (keep-alive) until `seconds` or `max_requests` pass."""
    parts = urlsplit(url)
    latencies: list[float] = []
    errors, shed = [0], [0]
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def client() -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        while time.perf_counter() < stop_at:
            with lock:
                if len(latencies) + errors[0] + shed[0] >= max_requests:
                    break
            start = time.perf_counter()
            try:
                conn.request("POST", parts.path, body, {"content-type": "application/json"})
                response = conn.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                status = None
                conn.close()
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
            with lock:
                if status == 200:
                    latencies.append(time.perf_counter() - start)
                elif status == 503:
                    shed[0] += 1
                else:
                    errors[0] += 1
        conn.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    ms = sorted(x * 1e3 for x in latencies) or [float("nan")]
    return LoadResult(len(latencies), errors[0], elapsed, statistics.median(ms), ms[int(0.99 * (len(ms) - 1))],
                      shed[0])
