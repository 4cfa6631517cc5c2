"""Prometheus metrics, one registry per app (no process-global collectors)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from proxy.record import Record

__all__ = ["Metrics"]

# Fine around a second, where the recorder runs under heavy load (and the bench reads its p99).
_LAG_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 2.5, 5, 10, 30, 60)
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class Metrics:
    """Counted once per request, at its end: nothing here runs per chunk."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "streamproxy_requests", "Requests relayed or replayed, by outcome", ["outcome"], registry=self.registry
        )
        self.chunks = Counter("streamproxy_chunks", "Chunks relayed", registry=self.registry)
        self.bytes = Counter("streamproxy_bytes", "Response body bytes relayed", registry=self.registry)
        self.ttfb = Histogram(
            "streamproxy_ttfb_seconds", "Time to first byte", buckets=_LATENCY_BUCKETS, registry=self.registry
        )
        self.duration = Histogram(
            "streamproxy_duration_seconds", "Request duration", buckets=_LATENCY_BUCKETS, registry=self.registry
        )
        self.recorder_lag = Histogram(
            "streamproxy_recorder_lag_seconds",
            "From the end of a stream to its recording's commit to the database",
            buckets=_LAG_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "streamproxy_recorder_queue_depth", "Recordings waiting in memory for the database", registry=self.registry
        )
        self.spool_bytes = Gauge(
            "streamproxy_spool_bytes", "Bytes of recordings waiting in the spool on disk", registry=self.registry
        )

    def observe(self, rec: Record) -> None:
        self.requests.labels(str(rec.outcome)).inc()
        self.chunks.inc(rec.chunk_count)
        self.bytes.inc(rec.body_bytes)
        if rec.ttfb_ms is not None:
            self.ttfb.observe(rec.ttfb_ms / 1000.0)
        if rec.duration_ms is not None:
            self.duration.observe(rec.duration_ms / 1000.0)

    def bind_recorder(self, depth: Callable[[], float], spool_bytes: Callable[[], float]) -> None:
        """Gauges read live at scrape time."""
        self.queue_depth.set_function(depth)
        self.spool_bytes.set_function(spool_bytes)

    def render(self) -> bytes:
        return generate_latest(self.registry)
