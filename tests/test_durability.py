"""Never lose a recording: a database that is locked or read-only while streams run, SIGTERM with
streams in flight, SIGKILL with recordings in the spool."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import openai
import orjson
import pytest

from proxy.record import Record
from proxy.recorder import _size
from proxy.store import Store, open_store
from tests.conftest import API_KEY, ProxyFactory, RunningProxy
from tests.faultkit import db_file_of, spool_files, sqlite_files, sqlite_write_lock, wait_until
from tests.fakes import FakeUpstream, Script
from tests.processes import ServeProcess
from tests.test_relay import PIECES, REQUEST, chat_events


@pytest.fixture(params=[0, 1], ids=["serve-writes", "worker-writes"])
async def proxy(proxy_factory: ProxyFactory, request: pytest.FixtureRequest) -> RunningProxy:
    """The proxy writing its recordings itself, and with an assembly worker, which writes the
    batches it assembles into the SQLite file itself: every fault below must cost neither any."""
    return await proxy_factory(assembly_workers=request.param)


@contextlib.asynccontextmanager
async def store_at(db_url: str) -> AsyncIterator[Store]:
    engine = await open_store(db_url, create=False)
    try:
        yield Store(engine)
    finally:
        await engine.dispose()


async def stream_text(client: openai.AsyncOpenAI) -> tuple[str, str]:
    """(recording id, streamed text) of one chat stream through the proxy."""
    raw = await client.chat.completions.with_raw_response.create(**REQUEST, stream=True)
    text = "".join([c.choices[0].delta.content or "" async for c in raw.parse() if c.choices])
    return raw.headers["x-recording-id"], text


async def assert_all_stored(store: Store, ids: list[str], outcome: str = "complete") -> list[Record]:
    recs = [await store.get(i) for i in ids]
    missing = [i for i, r in zip(ids, recs, strict=True) if r is None]
    assert not missing, f"lost recordings: {missing}"
    stored = [r for r in recs if r is not None]
    assert {r.outcome for r in stored} == {outcome}
    return stored


@pytest.mark.parametrize("then", ["keeps-running", "stops"])
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # faults injected into the SQLite file itself
async def test_locked_database_spools_then_catches_up(
    fake_upstream: FakeUpstream, proxy: RunningProxy, openai_client: openai.AsyncOpenAI, db_url: str, tmp_path: Path, then: str
) -> None:
    fake_upstream.sse("/v1/chat/completions", chat_events(PIECES))
    before = await proxy.store.count()
    with sqlite_write_lock(db_file_of(db_url)):
        results = await asyncio.gather(*(stream_text(openai_client) for _ in range(5)))
        assert [t for _, t in results] == ["".join(PIECES)] * 5  # streams unaffected by the lock
        await proxy.drain()  # everything is now in the database or the spool: here, the spool
        assert spool_files(tmp_path / "spool")
        assert proxy.recorder.stats.spooled == 5 and proxy.recorder.stats.written == 0
    ids = [i for i, _ in results]
    if then == "stops":  # stopped right after the outage: the spool is written before exit, not left for later
        await proxy.stop()
        async with store_at(db_url) as store:
            stored = await assert_all_stored(store, ids)
    else:

        async def all_written() -> bool:
            return await proxy.store.count() == before + 5

        await wait_until(all_written, what="spooled recordings to reach the database")
        stored = await assert_all_stored(proxy.store, ids)
    assert all(r.chunks == chat_events(PIECES) for r in stored)
    assert not spool_files(tmp_path / "spool")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # faults injected into the SQLite file itself
async def test_buffer_is_bounded_while_the_database_stalls(
    fake_upstream: FakeUpstream, proxy_factory: ProxyFactory, db_url: str, tmp_path: Path
) -> None:
    fake_upstream.sse("/v1/chat/completions", chat_events(PIECES))
    proxy = await proxy_factory(buffer_bytes=8 * 1024)
    client = openai.AsyncOpenAI(base_url=proxy.base_url, api_key=API_KEY, max_retries=0)
    depths: list[int] = []
    try:
        with sqlite_write_lock(db_file_of(db_url)):
            ids = []
            for _ in range(12):
                ids.append((await stream_text(client))[0])
                depths.append(proxy.recorder.depth)
            await proxy.drain()
            assert spool_files(tmp_path / "spool")
    finally:
        await client.close()

    async def all_written() -> bool:
        return await proxy.store.count() >= 12

    await wait_until(all_written, what="the spooled recordings to reach the database")
    stored = await assert_all_stored(proxy.store, ids)
    # What a waiting recording weighs (sealed: packed and compressed); the buffer holds 8 KiB of
    # them plus a quarter for the overflow on its way to the spool, and the rest went there at once.
    stored[0].seal()
    assert max(depths) * _size(stored[0]) <= 8 * 1024 * 5 // 4 and max(depths) < 12, depths


@contextlib.contextmanager
def immutable(paths: list[Path]) -> Iterator[None]:
    """Files even root cannot write (``chattr +i``): a database gone read-only under the proxy."""
    done: list[Path] = []
    try:
        for p in paths:
            r = subprocess.run(["chattr", "+i", str(p)], capture_output=True, text=True, check=False)
            if r.returncode != 0:
                pytest.skip(f"cannot make the database read-only here: {r.stderr.strip()}")
            done.append(p)
        yield
    finally:
        for p in done:
            subprocess.run(["chattr", "-i", str(p)], check=True)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # faults injected into the SQLite file itself
async def test_read_only_database_spools_then_catches_up(
    fake_upstream: FakeUpstream, proxy: RunningProxy, openai_client: openai.AsyncOpenAI, db_url: str, tmp_path: Path
) -> None:
    fake_upstream.sse("/v1/chat/completions", chat_events(PIECES))
    first, _ = await stream_text(openai_client)  # the database is in use, its WAL file open
    await proxy.drain()
    before = await proxy.store.count()
    with immutable(sqlite_files(db_file_of(db_url))):
        results = await asyncio.gather(*(stream_text(openai_client) for _ in range(3)))
        assert [t for _, t in results] == ["".join(PIECES)] * 3
        await proxy.drain()
        assert spool_files(tmp_path / "spool") and proxy.recorder.stats.db_failures > 0
    ids = [i for i, _ in results]

    async def all_written() -> bool:
        return await proxy.store.count() == before + 3

    await wait_until(all_written, what="spooled recordings to reach the database")
    await assert_all_stored(proxy.store, [first, *ids])
    assert not spool_files(tmp_path / "spool")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # faults injected into the SQLite file itself
async def test_database_and_spool_both_refusing_keeps_recordings_in_memory(
    fake_upstream: FakeUpstream, proxy: RunningProxy, openai_client: openai.AsyncOpenAI, db_url: str, tmp_path: Path
) -> None:
    fake_upstream.sse("/v1/chat/completions", chat_events(PIECES))
    spool = tmp_path / "spool"
    spool.mkdir()
    before = await proxy.store.count()
    stats = proxy.recorder.stats
    with sqlite_write_lock(db_file_of(db_url)), immutable([spool]):
        first = await asyncio.gather(*(stream_text(openai_client) for _ in range(3)))
        await wait_until(lambda: stats.db_failures >= 2, what="a second failed database attempt")
        later = [await stream_text(openai_client) for _ in range(3)]  # streams still flow meanwhile
        assert [t for _, t in first + later] == ["".join(PIECES)] * 6
        # Nowhere to put them: they wait in memory, retried at the database's pace, not in a busy loop.
        assert stats.spool_failures <= 2 * stats.db_failures + 2, (stats.spool_failures, stats.db_failures)
        assert not spool_files(spool)

    async def all_written() -> bool:
        return await proxy.store.count() == before + 6

    await wait_until(all_written, what="the held recordings to reach the database")
    await assert_all_stored(proxy.store, [i for i, _ in first + later])


@contextlib.contextmanager
def database_refuses(db_file: Path, path: str) -> Iterator[None]:
    """A trigger that makes SQLite refuse every recording of ``path``: a record the database will not take."""
    conn = sqlite3.connect(db_file, timeout=5, isolation_level=None)
    try:
        conn.execute(
            f"CREATE TRIGGER refuse BEFORE INSERT ON recordings WHEN NEW.path = '{path}' "
            "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        )
        yield
    finally:
        conn.execute("DROP TRIGGER IF EXISTS refuse")
        conn.close()


def rejected_ids(directory: Path) -> list[str]:
    return [orjson.loads(line)["id"] for p in directory.glob("rejected-*") for line in p.read_bytes().splitlines()]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # faults injected into the SQLite file itself
async def test_a_record_the_database_refuses_does_not_block_the_others(
    fake_upstream: FakeUpstream, proxy: RunningProxy, openai_client: openai.AsyncOpenAI, db_url: str, tmp_path: Path
) -> None:
    fake_upstream.sse("/v1/chat/completions", chat_events(PIECES))
    fake_upstream.json("/v1/poison", {"ok": True})
    spool = tmp_path / "spool"
    with database_refuses(db_file_of(db_url), "/v1/poison"):
        with sqlite_write_lock(db_file_of(db_url)):  # all of them wait in one spool file, the refused one first
            async with aiohttp.ClientSession() as s:
                async with s.post(proxy.base_url + "/poison", json=REQUEST) as r:
                    poison = r.headers["X-Recording-Id"]
            ids = [(await stream_text(openai_client))[0] for _ in range(3)]
            await proxy.drain()

        async def others_written() -> bool:
            return all([await proxy.store.get(i, chunks=False) for i in ids])

        await wait_until(others_written, what="the other recordings to get past the refused one")
        await assert_all_stored(proxy.store, ids)
        assert rejected_ids(spool) == [poison] and await proxy.store.get(poison) is None
        assert not spool_files(spool)

        # Alone in its batch, a refused record looks like an outage at first; it goes aside once
        # the database has gone on taking others around it.
        async with aiohttp.ClientSession() as s:
            async with s.post(proxy.base_url + "/poison", json=REQUEST) as r:
                second = r.headers["X-Recording-Id"]
        later: list[str] = []

        async def set_aside() -> bool:
            later.append((await stream_text(openai_client))[0])
            return second in rejected_ids(spool)

        await wait_until(set_aside, what="the lone refused recording to be set aside")
        await proxy.drain()

    async def later_written() -> bool:
        return all([await proxy.store.get(i, chunks=False) for i in later])

    await wait_until(later_written, what="the recordings made around it")
    assert proxy.recorder.stats.rejected == 2 and not spool_files(spool)


async def open_stream(session: aiohttp.ClientSession, url: str) -> tuple[aiohttp.ClientResponse, bytes]:
    r = await session.post(url, json={**REQUEST, "stream": True}, headers={"Authorization": f"Bearer {API_KEY}"})
    assert r.status == 200
    first = await r.content.readuntil(b"\n\n")
    return r, first


async def refuses_connections(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        return True
    writer.close()
    await writer.wait_closed()
    return False


async def serve_gated_stream(
    fake: FakeUpstream, gate: asyncio.Event, grace: str, tmp_path: Path, db_url: str
) -> tuple[ServeProcess, list[bytes]]:
    """A serve process whose upstream sends one event, then waits for ``gate`` before the rest."""
    events = chat_events(PIECES)
    fake.script("/v1/chat/completions", Script(steps=[events[0], gate, *events[1:]]))
    server = ServeProcess("--upstream", fake.url, "--db", db_url, "--shutdown-grace", grace, log_path=tmp_path / "serve.log")
    await server.start()
    return server, events


async def test_sigterm_lets_in_flight_streams_finish_then_exits_0(
    fake_upstream: FakeUpstream, tmp_path: Path, db_url: str
) -> None:
    gate = asyncio.Event()
    server, events = await serve_gated_stream(fake_upstream, gate, "20", tmp_path, db_url)
    async with aiohttp.ClientSession() as s:
        opened = [await open_stream(s, server.base_url + "/chat/completions") for _ in range(2)]
        server.signal(signal.SIGTERM)
        await wait_until(lambda: refuses_connections(server.port), what="the listener to close")
        gate.set()
        bodies = [first + await r.read() for r, first in opened]
        ids = [r.headers["X-Recording-Id"] for r, _ in opened]
        for r, _ in opened:
            r.release()
    assert bodies == [b"".join(events)] * 2
    assert await server.wait(timeout=30) == 0
    async with store_at(db_url) as store:
        stored = await assert_all_stored(store, ids)
    assert all(r.chunks == events for r in stored)


async def test_a_second_signal_does_not_cut_the_shutdown_short(
    fake_upstream: FakeUpstream, tmp_path: Path, db_url: str
) -> None:
    """An impatient second Ctrl-C (or a supervisor's repeated SIGTERM) while streams finish must
    not abandon the recordings: the shutdown goes on as the first signal began it."""
    gate = asyncio.Event()
    server, events = await serve_gated_stream(fake_upstream, gate, "20", tmp_path, db_url)
    async with aiohttp.ClientSession() as s:
        r, first = await open_stream(s, server.base_url + "/chat/completions")
        server.signal(signal.SIGTERM)
        await wait_until(lambda: refuses_connections(server.port), what="the listener to close")
        server.signal(signal.SIGINT)
        server.signal(signal.SIGTERM)
        await asyncio.sleep(0.2)
        gate.set()
        body = first + await r.read()
        rec_id = r.headers["X-Recording-Id"]
        r.release()
    assert body == b"".join(events)
    assert await server.wait(timeout=30) == 0
    async with store_at(db_url) as store:
        (stored,) = await assert_all_stored(store, [rec_id])
    assert stored.chunks == events and stored.reply is not None
    assert "already stopping" in server.log_path.read_text()


async def test_sigterm_grace_runs_out_records_proxy_error(fake_upstream: FakeUpstream, tmp_path: Path, db_url: str) -> None:
    never = asyncio.Event()
    server, _ = await serve_gated_stream(fake_upstream, never, "1", tmp_path, db_url)
    async with aiohttp.ClientSession() as s:
        r, first = await open_stream(s, server.base_url + "/chat/completions")
        server.signal(signal.SIGTERM)
        with pytest.raises(aiohttp.ClientPayloadError):
            await asyncio.wait_for(r.read(), timeout=20)  # cut, not ended cleanly
        rec_id = r.headers["X-Recording-Id"]
        r.release()
    assert await server.wait(timeout=30) == 0
    never.set()
    async with store_at(db_url) as store:
        (rec,) = await assert_all_stored(store, [rec_id], outcome="proxy_error")
    assert rec.chunks == [first] and rec.error is not None and "grace" in rec.error


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # faults injected into the SQLite file itself
async def test_stop_during_a_database_outage_leaves_a_spool_the_next_start_writes(
    fake_upstream: FakeUpstream, tmp_path: Path, db_url: str, sig: signal.Signals
) -> None:
    fake_upstream.sse("/v1/chat/completions", chat_events(PIECES))
    spool = db_file_of(db_url).parent / (db_file_of(db_url).name + "-spool")  # the default: beside the database
    server = ServeProcess("--upstream", fake_upstream.url, "--db", db_url, "--shutdown-grace", "2", log_path=tmp_path / "serve.log")
    await server.start()
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0)
    try:
        with sqlite_write_lock(db_file_of(db_url)):
            ids = [(await stream_text(client))[0] for _ in range(3)]
            if sig == signal.SIGKILL:  # nothing gets flushed on SIGKILL: wait until all of it is on disk
                async with aiohttp.ClientSession() as s:

                    async def all_spooled() -> bool:
                        async with s.get(server.url + "/metrics") as r:
                            text = await r.text()
                        return bool(spool_files(spool)) and "streamproxy_recorder_queue_depth 0.0" in text

                    await wait_until(all_spooled, what="the in-memory buffer to empty into the spool")
            server.signal(sig)
            assert await server.wait() == (0 if sig == signal.SIGTERM else -signal.SIGKILL)
    finally:
        await client.close()
    assert all(any(i.encode() in p.read_bytes() for p in spool_files(spool)) for i in ids)

    again = ServeProcess("--upstream", fake_upstream.url, "--db", db_url, log_path=tmp_path / "serve2.log")
    await again.start()
    try:
        await wait_until(lambda: not spool_files(spool), what="the next start to ingest the spool")
    finally:
        assert await again.stop() == 0
    async with store_at(db_url) as store:
        await assert_all_stored(store, ids)
