"""``stats``: counts, outcomes, token sums and timing percentiles — the same numbers on SQLite and
PostgreSQL, from the store, the CLI and ``GET /recordings/stats``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import aiohttp
import orjson
import pytest

from proxy.filters import Filters
from proxy.record import Outcome
from proxy.store import Store, open_store
from proxy.store.stats import GroupBy, compute_stats, percentile
from tests.conftest import RunningProxy
from tests.fakes import FakeUpstream
from tests.recorded import cli
from tests.recordings import T0, make_record
from tests.test_relay import PIECES, REQUEST, chat_events, raw_post

# (model, key, outcome, ttfb, duration, usage, minutes after T0)
ROWS = [
    ("gpt-4o", "aaaaaaaaaaaa", Outcome.COMPLETE, 10.0, 100.0, (10, 1), 0),
    ("gpt-4o", "aaaaaaaaaaaa", Outcome.COMPLETE, 20.0, 200.0, (20, 2), 1),
    ("gpt-4o", "bbbbbbbbbbbb", Outcome.CLIENT_CLOSED, 30.0, 300.0, None, 2),
    ("gpt-4o", "bbbbbbbbbbbb", Outcome.COMPLETE, 40.0, 400.0, (40, 4), 3),
    ("gpt-4o-mini", "aaaaaaaaaaaa", Outcome.UPSTREAM_ERROR, None, 50.0, None, 4),
    ("gpt-4o-mini", None, Outcome.COMPLETE, 5.0, 80.0, (1, 1), 5),
]


@pytest.fixture
async def store(any_db_url: str) -> AsyncIterator[Store]:
    engine = await open_store(any_db_url, create=True)
    s = Store(engine)
    await s.insert(
        [
            make_record(model=m, key=k, outcome=o, ttfb_ms=t, duration_ms=d, usage=u, at=T0 + timedelta(minutes=mins))
            for m, k, o, t, d, u, mins in ROWS
        ]
    )
    yield s
    await engine.dispose()


def test_percentile_interpolates_like_percentile_cont() -> None:
    assert percentile([], 0.5) is None
    assert percentile([7.0], 0.95) == 7.0
    assert percentile([10.0, 20.0, 30.0, 40.0], 0.5) == 25.0
    assert percentile([10.0, 20.0, 30.0, 40.0], 0.95) == pytest.approx(38.5)


async def test_totals(store: Store) -> None:
    report = (await compute_stats(store, Filters())).to_json()
    assert report["by"] is None and "groups" not in report
    assert report["total"] == {
        "requests": 6,
        "outcomes": {"complete": 4, "client_closed": 1, "upstream_error": 1},
        "prompt_tokens": 71,
        "completion_tokens": 8,
        "ttfb_ms": {"p50": 20.0, "p95": 38.0},  # the missing ttfb is left out, not counted as 0
        "duration_ms": {"p50": 150.0, "p95": 375.0},
    }


async def test_grouped_by_model_key_and_path(store: Store) -> None:
    by_model = (await compute_stats(store, Filters(), GroupBy.MODEL)).to_json()
    assert [(g["model"], g["requests"]) for g in by_model["groups"]] == [("gpt-4o", 4), ("gpt-4o-mini", 2)]
    gpt4o = by_model["groups"][0]
    assert gpt4o["ttfb_ms"] == {"p50": 25.0, "p95": 38.5}
    assert gpt4o["duration_ms"] == {"p50": 250.0, "p95": 385.0}
    assert gpt4o["prompt_tokens"] == 70 and gpt4o["completion_tokens"] == 7
    assert by_model["total"]["requests"] == 6

    by_key = (await compute_stats(store, Filters(), GroupBy.KEY)).to_json()
    assert {g["key"]: g["requests"] for g in by_key["groups"]} == {"aaaaaaaaaaaa": 3, "bbbbbbbbbbbb": 2, None: 1}
    by_path = (await compute_stats(store, Filters(), GroupBy.PATH)).to_json()
    assert [(g["path"], g["requests"]) for g in by_path["groups"]] == [("/v1/chat/completions", 6)]


async def test_filters_apply(store: Store) -> None:
    since = Filters.from_mapping({"since": (T0 + timedelta(minutes=2)).isoformat(), "until": (T0 + timedelta(minutes=4)).isoformat()})
    report = (await compute_stats(store, since)).to_json()
    assert report["total"]["requests"] == 2 and report["since"].startswith("2026-11-01T12:02:00")
    assert (await compute_stats(store, Filters(model="gpt-4o-mini"))).total.outcomes == {"upstream_error": 1, "complete": 1}
    empty = (await compute_stats(store, Filters(model="nope"), GroupBy.MODEL)).to_json()
    assert empty["total"]["requests"] == 0 and empty["total"]["ttfb_ms"] == {"p50": None, "p95": None}
    assert empty["groups"] == []


async def test_cli_stats(tmp_path: Path) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    engine = await open_store(db, create=True)
    await Store(engine).insert([make_record(model=m, ttfb_ms=t, duration_ms=d, at=T0 + timedelta(minutes=i)) for i, (m, _, _, t, d, _, _) in enumerate(ROWS)])
    await engine.dispose()

    as_json = await cli("stats", "--by", "model", "--json", "--db", db)
    assert as_json.returncode == 0, as_json.stderr
    assert [g["requests"] for g in orjson.loads(as_json.stdout)["groups"]] == [4, 2]

    table = await cli("stats", "--by", "model", "--db", db)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.decode().splitlines()
    assert lines[0].startswith("MODEL") and "TTFB p50/p95" in lines[0]
    assert lines[1].split()[:2] == ["gpt-4o", "4"] and "25/38" in lines[1]

    assert orjson.loads((await cli("stats", "--since", "2026-11-01T12:03:00Z", "--json", "--db", db)).stdout)["total"]["requests"] == 3
    bad = await cli("stats", "--by", "colour", "--db", db)
    assert bad.returncode != 0 and "colour" in bad.stderr
    missing = await cli("stats", "--db", f"sqlite+aiosqlite:///{tmp_path / 'none.db'}")
    assert missing.returncode != 0 and "no database" in missing.stderr
    assert not (tmp_path / "none.db").exists()


async def test_http_stats_after_real_traffic(fake_upstream: FakeUpstream, proxy: RunningProxy) -> None:
    fake_upstream.sse("/v1/chat/completions", chat_events(PIECES))
    for _ in range(3):
        status, _, _ = await raw_post(proxy.base_url + "/chat/completions", {**REQUEST, "stream": True})
        assert status == 200
    await proxy.drain()
    async with aiohttp.ClientSession() as s:
        async with s.get(proxy.url + "/recordings/stats", params={"by": "model", "since": "1h"}) as r:
            assert r.status == 200
            body = await r.json()
        async with s.get(proxy.url + "/recordings/stats", params={"by": "colour"}) as r:
            assert r.status == 400 and "colour" in (await r.json())["error"]["message"]
    (group,) = body["groups"]
    assert group["model"] == "gpt-4o-mini" and group["requests"] == 3
    assert group["outcomes"] == {"complete": 3}
    assert group["prompt_tokens"] == 15 and group["completion_tokens"] == 3 * len(PIECES)
    assert group["ttfb_ms"]["p50"] is not None and group["ttfb_ms"]["p50"] <= group["duration_ms"]["p50"]
