"""Prometheus metrics, one registry per app (no process-global collectors).

What moves with every request is kept as plain numbers and turned into metric families only when
``/metrics`` is scraped: a ``prometheus_client`` instrument takes a lock (and a labelled one a
dict lookup and a tuple) on every update, five updates a request, some 5 µs hot and several
times that when the relay's thread comes back to them with cold caches between other processes'
turns; counting here is a few additions. The text ``/metrics`` serves is the same, less the
``_created`` series.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from proxy.record import Record

__all__ = ["Histogram", "Metrics"]

# Fine around a second, where the recorder runs under heavy load (and the bench reads its p99).
_LAG_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 2.5, 5, 10, 30, 60)
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class Histogram:
    """A histogram as counts per bucket (the value ≤ the bucket's bound, as Prometheus' ``le``)."""

    __slots__ = ("name", "doc", "bounds", "counts", "total")

    def __init__(self, name: str, doc: str, bounds: tuple[float, ...]) -> None:
        self.name = name
        self.doc = doc
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last: past every bound (+Inf only)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def family(self) -> HistogramMetricFamily:
        cumulative = 0
        buckets: list[tuple[str, float]] = []
        for bound, count in zip((*map(floatToGoString, self.bounds), "+Inf"), self.counts, strict=True):
            cumulative += count
            buckets.append((bound, cumulative))
        return HistogramMetricFamily(self.name, self.doc, buckets=buckets, sum_value=self.total)


class _PerRequest(Collector):
    """The request, chunk and byte counts and the two latency histograms, at scrape time."""

    def __init__(self) -> None:
        self.outcomes: dict[str, int] = {}
        self.chunks = 0
        self.bytes = 0
        self.ttfb = Histogram("streamproxy_ttfb_seconds", "Time to first byte", _LATENCY_BUCKETS)
        self.duration = Histogram("streamproxy_duration_seconds", "Request duration", _LATENCY_BUCKETS)

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("streamproxy_requests", "Requests relayed or replayed, by outcome", labels=["outcome"])
        for outcome, count in list(self.outcomes.items()):
            requests.add_metric([outcome], count)
        yield requests
        yield CounterMetricFamily("streamproxy_chunks", "Chunks relayed", value=self.chunks)
        yield CounterMetricFamily("streamproxy_bytes", "Response body bytes relayed", value=self.bytes)
        yield self.ttfb.family()
        yield self.duration.family()


class _Lag(Collector):
    def __init__(self, histogram: Histogram) -> None:
        self.histogram = histogram

    def collect(self) -> Iterator[Metric]:
        yield self.histogram.family()


class Metrics:
    """Counted once per request, at its end: nothing here runs per chunk."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._per_request = _PerRequest()
        self.registry.register(self._per_request)
        self.recorder_lag = Histogram(
            "streamproxy_recorder_lag_seconds", "From the end of a stream to its recording's commit to the database", _LAG_BUCKETS
        )
        self.registry.register(_Lag(self.recorder_lag))
        self.queue_depth = Gauge(
            "streamproxy_recorder_queue_depth", "Recordings waiting in memory for the database", registry=self.registry
        )
        self.spool_bytes = Gauge(
            "streamproxy_spool_bytes", "Bytes of recordings waiting in the spool on disk", registry=self.registry
        )

    def observe(self, rec: Record) -> None:
        counts = self._per_request
        outcomes = counts.outcomes
        outcome = rec.outcome.value
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        counts.chunks += rec.chunk_count
        counts.bytes += rec.body_bytes
        if rec.ttfb_ms is not None:
            counts.ttfb.observe(rec.ttfb_ms / 1000.0)
        if rec.duration_ms is not None:
            counts.duration.observe(rec.duration_ms / 1000.0)

    def bind_recorder(self, depth: Callable[[], float], spool_bytes: Callable[[], float]) -> None:
        """Gauges read live at scrape time."""
        self.queue_depth.set_function(depth)
        self.spool_bytes.set_function(spool_bytes)

    def render(self) -> bytes:
        return generate_latest(self.registry)
