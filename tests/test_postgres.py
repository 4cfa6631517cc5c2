"""PostgreSQL as the scale path: several instances on one database, an outage that costs nothing,
no password in any log."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import openai
import orjson
import pytest

from proxy.filters import Filters
from proxy.settings import Settings, mask_url
from proxy.store import Store, create_engine
from tests.conftest import API_KEY, ProxyFactory
from tests.fakes import FakeUpstream, Script
from tests.faultkit import wait_until
from tests.pgtest import PgDatabase, run_in_thread, run_sql
from tests.processes import ServeProcess
from tests.recorded import cli
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
        stored, _ = await direct.list_recordings(Filters(), limit=100)
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


async def _get_json(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def _chat(base_url: str) -> tuple[str, str]:
    async with openai.AsyncOpenAI(base_url=base_url, api_key=API_KEY, max_retries=0) as client:
        resp = await client.chat.completions.with_raw_response.create(**REQUEST, stream=True)
        return resp.headers["x-recording-id"], await _text(resp.parse())


def _two_instances(db: str, upstream: str, tmp_path: Path, generation: str, *args: str) -> list[ServeProcess]:
    return [
        ServeProcess(
            "--upstream", upstream, "--db", db, "--spool-dir", str(tmp_path / f"spool-{name}"), *args,
            log_path=tmp_path / f"{name}-{generation}.log",
        )
        for name in ("a", "b")
    ]


@postgres_only
async def test_two_instances_share_one_database(
    db_url: str, pg_database: PgDatabase, fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    pg_database.empty()  # both start together on an empty database: they must not race to migrate
    fake_upstream.sse(CHAT, chat_events(PIECES))
    servers = _two_instances(db_url, fake_upstream.url, tmp_path, "first")
    try:
        await asyncio.gather(*(s.start() for s in servers))
        results = await asyncio.gather(*(_chat(servers[i % 2].base_url) for i in range(16)))
    finally:
        # SIGTERM flushes every buffered recording before exit: no waiting on the recorders.
        codes = await asyncio.gather(*(s.stop() for s in servers))
    assert codes == [0, 0]
    assert [text for _, text in results] == ["".join(PIECES)] * 16
    ids = [rec_id for rec_id, _ in results]
    assert len(set(ids)) == 16

    direct = Store(create_engine(db_url))
    try:
        stored, _ = await direct.list_recordings(Filters(), limit=100)
    finally:
        await direct.engine.dispose()
    assert sorted(r.id for r in stored) == sorted(ids)  # every recording once, none twice

    # Again, in replay mode: each instance reads what both recorded, and replays any of it.
    asked_upstream = len(fake_upstream.received)
    servers = _two_instances(db_url, fake_upstream.url, tmp_path, "second", "--mode", "replay", "--replay-speed", "0")
    body = b"".join(chat_events(PIECES))
    try:
        await asyncio.gather(*(s.start() for s in servers))
        async with aiohttp.ClientSession() as http:
            for server in servers:
                listed = await _get_json(http, server.url + "/recordings?limit=100")
                assert sorted(r["id"] for r in listed["recordings"]) == sorted(ids)
                for rec_id in ids:
                    rec = await _get_json(http, f"{server.url}/recordings/{rec_id}?chunks=1")
                    assert rec["id"] == rec_id
                    assert rec["reply"]["choices"][0]["message"]["content"] == "".join(PIECES)
                    assert "".join(c["data"] for c in rec["chunks"]) == body.decode()
                    async with http.get(f"{server.url}/recordings/{rec_id}/replay?speed=0") as r:
                        assert (r.status, r.content_type, await r.read()) == (200, "text/event-stream", body)
                replayed_id, text = await _chat(server.base_url)
                assert replayed_id in ids and text == "".join(PIECES)
    finally:
        assert await asyncio.gather(*(s.stop() for s in servers)) == [0, 0]
    assert len(fake_upstream.received) == asked_upstream


SECRET = "s3cr3t/Pa55:w0rd"


def test_mask_url_hides_every_form_of_password() -> None:
    assert mask_url(f"postgresql+asyncpg://postgres:{SECRET}@db:5432/x") == "postgresql+asyncpg://postgres:***@db:5432/x"
    assert mask_url(f"postgresql+asyncpg://postgres@db/x?password={SECRET}&ssl=require") == (
        "postgresql+asyncpg://postgres@db/x?password=***&ssl=require"
    )
    assert mask_url("postgresql+asyncpg://postgres@db:5432/x") == "postgresql+asyncpg://postgres@db:5432/x"
    assert SECRET not in repr(Settings(db=f"postgresql+asyncpg://postgres:{SECRET}@db/x"))


@postgres_only
async def test_database_password_is_never_printed(
    db_url: str, pg_database: PgDatabase, fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    """serve at debug level through a database outage, db upgrade, prune: no output holds the password."""
    relay = await TcpRelay(*pg_database.address).start()
    secret_url = pg_database.url_via("127.0.0.1", relay.port).replace("://postgres@", f"://postgres:{SECRET}@")
    fake_upstream.sse(CHAT, chat_events(PIECES))
    server = ServeProcess(
        "--upstream", fake_upstream.url, "--db", secret_url, "--log-level", "debug", "--access-log",
        "--spool-dir", str(tmp_path / "spool"), log_path=tmp_path / "serve.log",
    )
    try:
        await server.start()
        await _chat(server.base_url)
        await relay.cut()
        await _chat(server.base_url)  # its recording fails to reach the database: a warning is logged

        async def spooled() -> bool:
            async with aiohttp.ClientSession() as s, s.get(server.url + "/metrics") as r:
                return "streamproxy_spool_bytes 0.0" not in await r.text()

        # The recorder lets a batch fill for a moment before it writes: restore only after it tried.
        await wait_until(spooled, what="the recording to go to the spool")
        await relay.restore()
    finally:
        assert await server.stop() == 0
        await relay.close()
    log = (tmp_path / "serve.log").read_bytes()
    assert b"database write failed" in log and b"postgres:***@" in log
    outputs = [log]
    direct_secret_url = secret_url.replace(f":{relay.port}/", f":{pg_database.address[1]}/")
    for args in (["db", "upgrade"], ["prune", "--older-than", "30d", "--dry-run"]):
        done = await cli(*args, "--db", direct_secret_url)
        assert done.returncode == 0
        outputs += [done.stdout, done.stderr.encode()]
    unreachable = await cli("list", "--db", secret_url)  # the relay is gone
    assert unreachable.returncode != 0 and "postgres:***@" in unreachable.stderr
    outputs += [unreachable.stdout, unreachable.stderr.encode()]
    for out in outputs:
        assert SECRET.encode() not in out and quote(SECRET, safe="").encode() not in out


def test_a_postgresql_url_is_handed_to_asyncpg_as_it_reads_urls() -> None:
    from proxy.postgres_writer import asyncpg_dsn

    assert asyncpg_dsn("postgresql+asyncpg://u:p%40ss@db.example:5433/rec") == "postgresql://u:p%40ss@db.example:5433/rec"
    assert asyncpg_dsn("postgresql+asyncpg://u@h/d?ssl=require&application_name=sp") == "postgresql://u@h/d?sslmode=require&application_name=sp"
    assert asyncpg_dsn("postgresql+asyncpg://u@h/d?sslmode=verify-full") == "postgresql://u@h/d?sslmode=verify-full"


@postgres_only
async def test_a_record_postgresql_refuses_is_set_aside_and_the_batch_goes_in(
    db_url: str, pg_database: PgDatabase, fake_upstream: FakeUpstream, proxy_factory: ProxyFactory, tmp_path: Path
) -> None:
    """serve's own asyncpg writes: a record the database refuses (a trigger raising) is found by
    writing the batch one at a time and goes aside; the others of its batch are stored."""
    proxy = await proxy_factory()
    await asyncio.to_thread(run_in_thread, lambda: run_sql(
        pg_database.dsn,
        "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN IF NEW.path = '/v1/poison' THEN RAISE EXCEPTION 'refused by the test'; END IF; RETURN NEW; END $$",
        "CREATE TRIGGER refuse BEFORE INSERT ON recordings FOR EACH ROW EXECUTE FUNCTION refuse_poison()",
    ))
    try:
        fake_upstream.sse(CHAT, chat_events(PIECES))
        fake_upstream.json("/v1/poison", {"ok": True})
        async def post_poison() -> str:
            async with aiohttp.ClientSession() as s, s.post(proxy.base_url + "/poison", json=REQUEST) as r:
                return r.headers["X-Recording-Id"]

        # Together, so that they end close enough to share a batch.
        refused = asyncio.ensure_future(post_poison())
        ids = [rec_id for rec_id, _ in await asyncio.gather(*(_chat(proxy.base_url) for _ in range(3)))]
        poison = await refused
        await proxy.drain()
        assert proxy.recorder.stats.rejected == 1 and proxy.recorder.stats.db_failures == 0
        for rec_id in ids:
            assert await proxy.store.get(rec_id) is not None
        assert await proxy.store.get(poison) is None
        rejected = [orjson.loads(line)["id"] for p in (tmp_path / "spool").glob("rejected-*") for line in p.read_bytes().splitlines()]
        assert rejected == [poison]
    finally:
        await asyncio.to_thread(
            run_in_thread, lambda: run_sql(pg_database.dsn, "DROP TRIGGER IF EXISTS refuse ON recordings", "DROP FUNCTION IF EXISTS refuse_poison()")
        )
