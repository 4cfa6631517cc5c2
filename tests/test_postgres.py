"""PostgreSQL as the scale path: an outage that costs nothing, no password in any log."""

from __future__ import annotations

import asyncio
from pathlib import Path

import openai
import pytest

from proxy.filters import Filters
from proxy.store import Store, create_engine
from tests.conftest import API_KEY, ProxyFactory
from tests.fakes import FakeUpstream, Script
from tests.pgtest import PgDatabase
from tests.tcprelay import TcpRelay
from tests.test_relay import PIECES, REQUEST, chat_events

postgres_only = pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
CHAT = "/v1/chat/completions"


async def _text(stream: openai.AsyncStream[object]) -> str:
    return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])  # type: ignore[attr-defined]


@postgres_only
async def test_database_outage_mid_stream_loses_nothing(
    db_url: str, pg_database: PgDatabase, fake_upstream: FakeUpstream, proxy_factory: ProxyFactory
) -> None:
    relay = await TcpRelay(*pg_database.address).start()
    direct = Store(create_engine(db_url))
    client: openai.AsyncOpenAI | None = None
    try:
        proxy = await proxy_factory(db=pg_database.url_via("127.0.0.1", relay.port))
        client = openai.AsyncOpenAI(base_url=proxy.base_url, api_key=API_KEY, max_retries=0)
        events = chat_events(PIECES)
        fake_upstream.sse(CHAT, events)
        first = await client.chat.completions.with_raw_response.create(**REQUEST, stream=True)
        assert await _text(first.parse()) == "".join(PIECES)
        await proxy.drain()
        assert await direct.count() == 1

        gate = asyncio.Event()
        for _ in range(6):
            fake_upstream.script(CHAT, Script(steps=[*events[:2], gate, *events[2:]]), once=True)
        # Headers are back once upstream has sent its first events: every stream is now mid-body.
        midway = await asyncio.gather(
            *(client.chat.completions.with_raw_response.create(**REQUEST, stream=True) for _ in range(6))
        )
        await relay.cut()
        gate.set()
        texts = await asyncio.gather(*(_text(r.parse()) for r in midway))
        assert texts == ["".join(PIECES)] * 6  # the outage did not touch a stream
        await proxy.drain()
        assert proxy.recorder.stats.spooled == 6 and proxy.recorder.spool.size() > 0
        assert await direct.count() == 1

        await relay.restore()
        await proxy.drain()
        ids = {first.headers["x-recording-id"], *(r.headers["x-recording-id"] for r in midway)}
        stored, _ = await direct.list(Filters(), limit=100)
        assert {r.id for r in stored} == ids and len(stored) == 7
        for rec_id in ids:
            rec = await direct.get(rec_id)
            assert rec is not None and rec.chunks == events
        assert proxy.recorder.spool.size() == 0
    finally:
        if client is not None:
            await client.close()
        await relay.close()
        await direct.engine.dispose()
