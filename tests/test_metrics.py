"""``/metrics``: every series the issue names is there, moves with traffic, and never shows a credential."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxy.settings import sqlite_path
from tests.conftest import API_KEY, ProxyFactory, RunningProxy
from tests.fakes import FakeUpstream, Script
from tests.test_relay import PIECES, REQUEST, chat_events, raw_post

SERIES = [
    "streamproxy_requests_total",
    "streamproxy_chunks_total",
    "streamproxy_bytes_total",
    "streamproxy_ttfb_seconds_count",
    "streamproxy_ttfb_seconds_bucket",
    "streamproxy_duration_seconds_count",
    "streamproxy_duration_seconds_bucket",
    "streamproxy_recorder_queue_depth",
    "streamproxy_spool_bytes",
]


async def scrape(proxy: RunningProxy) -> tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    """The raw text and every sample by (name, labels)."""
    async with aiohttp.ClientSession() as s:
        async with s.get(proxy.url + "/metrics") as r:
            assert r.status == 200 and r.content_type == "text/plain"
            text = await r.text()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value for fam in text_string_to_metric_families(text) for s in fam.samples
    }
    return text, samples


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_series_move_with_traffic_and_hold_no_credential(fake_upstream: FakeUpstream, proxy: RunningProxy) -> None:
    _, before = await scrape(proxy)
    assert value(before, "streamproxy_ttfb_seconds_count") == 0 and value(before, "streamproxy_chunks_total") == 0

    events = chat_events(PIECES)
    fake_upstream.sse("/v1/chat/completions", events)
    for _ in range(2):
        assert (await raw_post(proxy.base_url + "/chat/completions", {**REQUEST, "stream": True}))[0] == 200
    fake_upstream.script("/v1/chat/completions", Script(steps=events[:2], cut=True), once=True)
    async with aiohttp.ClientSession() as s:
        async with s.post(proxy.base_url + "/chat/completions", json=REQUEST, headers={"Authorization": f"Bearer {API_KEY}"}) as r:
            try:
                await r.read()
            except aiohttp.ClientPayloadError:
                pass  # the cut reaches the client too
    await proxy.drain()

    text, after = await scrape(proxy)
    for name in SERIES:
        assert any(key[0] == name for key in after), f"{name} missing"
    assert value(after, "streamproxy_requests_total", outcome="complete") == 2
    assert value(after, "streamproxy_requests_total", outcome="upstream_closed") == 1
    assert value(after, "streamproxy_chunks_total") == 2 * len(events) + 2
    assert value(after, "streamproxy_bytes_total") == 2 * len(b"".join(events)) + len(b"".join(events[:2]))
    assert value(after, "streamproxy_ttfb_seconds_count") == 3
    assert value(after, "streamproxy_duration_seconds_count") == 3
    assert value(after, "streamproxy_ttfb_seconds_bucket", le="+Inf") == 3
    assert value(after, "streamproxy_recorder_queue_depth") == 0
    assert value(after, "streamproxy_spool_bytes") == 0
    assert API_KEY not in text and API_KEY.split("-")[-1] not in text


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # holds the SQLite file itself
async def test_queue_depth_counts_recordings_waiting_for_a_busy_database(
    fake_upstream: FakeUpstream, proxy_factory: ProxyFactory
) -> None:
    proxy = await proxy_factory(batch_size=1)
    fake_upstream.sse("/v1/chat/completions", chat_events(PIECES))
    db_file = sqlite_path(proxy.settings.db)
    assert db_file is not None
    blocker = sqlite3.connect(db_file, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # another writer holds the database
        for _ in range(3):
            assert (await raw_post(proxy.base_url + "/chat/completions", {**REQUEST, "stream": True}))[0] == 200
        _, busy = await scrape(proxy)
        assert value(busy, "streamproxy_recorder_queue_depth") >= 2  # one batch of 1 is stuck writing, the rest wait
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    await proxy.drain()
    _, done = await scrape(proxy)
    assert value(done, "streamproxy_recorder_queue_depth") == 0
    assert await proxy.store.count() == 3


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # holds the SQLite file itself
async def test_spool_bytes_grow_while_the_database_refuses_writes(
    fake_upstream: FakeUpstream, proxy_factory: ProxyFactory, tmp_path: Path
) -> None:
    proxy = await proxy_factory()
    fake_upstream.sse("/v1/chat/completions", chat_events(PIECES))
    db_file = sqlite_path(proxy.settings.db)
    assert db_file is not None
    with sqlite3.connect(db_file) as conn:
        conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON recordings BEGIN SELECT RAISE(ABORT, 'refused'); END")
    conn.close()
    assert (await raw_post(proxy.base_url + "/chat/completions", {**REQUEST, "stream": True}))[0] == 200
    await proxy.drain()
    text, samples = await scrape(proxy)
    assert value(samples, "streamproxy_spool_bytes") > 0
    assert API_KEY not in text


def test_a_histogram_exposes_what_prometheus_clients_own_would() -> None:
    """The per-request histograms are plain counts turned into a family at scrape time; what a
    scrape shows is what ``prometheus_client.Histogram`` shows for the same values."""
    import random

    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client import Histogram as ClientHistogram

    from proxy.metrics import Histogram

    bounds = (0.005, 0.01, 0.5, 1, 2.5, 600)
    ours = Histogram("h_seconds", "doc", bounds)
    registry = CollectorRegistry()
    theirs = ClientHistogram("h_seconds", "doc", buckets=bounds, registry=registry)
    rng = random.Random(7)
    for value in [0.0, 0.005, 0.01, 1.0, 600.0, 601.0, *(rng.uniform(0, 700) for _ in range(300))]:
        ours.observe(value)
        theirs.observe(value)
    ours_registry = CollectorRegistry()

    class One:
        def collect(self):  # type: ignore[no-untyped-def]
            yield ours.family()

    ours_registry.register(One())  # type: ignore[arg-type]
    expected = [line for line in generate_latest(registry).decode().splitlines() if "_created" not in line]
    assert generate_latest(ours_registry).decode().splitlines() == expected
