"""Serving in record mode on a SQLite file, the serving process never loads SQLAlchemy (its
assembly worker writes the file): some 24 MB less memory. The first read loads it, and reads what
the worker wrote. A database that cannot be used still stops the start with one line."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import aiohttp
import asyncpg
import openai

from proxy.lazy_store import LazyStore
from proxy.recorder import Recorder
from proxy.spool import Spool
from tests.conftest import API_KEY
from tests.fakes import FakeUpstream
from tests.pgtest import run_in_thread
from tests.processes import ServeProcess
from tests.recordings import make_record
from tests.test_cli import cli
from tests.test_relay import PIECES, REQUEST, chat_events


def _loaded(pid: int, package: str) -> bool:
    """Whether the process has mapped one of the package's compiled modules (SQLAlchemy's
    ``cyextension``): it is imported, as seen from outside."""
    return f"/{package}/" in Path(f"/proc/{pid}/maps").read_text()


async def _stored(db_url: str, rec_id: str) -> str | None:
    """The recording's stored reply, once it is written, read without streamproxy (sqlite3, asyncpg)."""
    for _ in range(200):
        if db_url.startswith("sqlite"):
            with contextlib.closing(sqlite3.connect(db_url.split("///", 1)[1])) as conn:
                row = conn.execute("SELECT reply FROM recordings WHERE id = ?", (rec_id,)).fetchone()
            reply = None if row is None else str(row[0])
        else:
            reply = run_in_thread(lambda: _pg_reply(db_url, rec_id))
        if reply is not None:
            return reply
        await asyncio.sleep(0.05)
    return None


async def _pg_reply(db_url: str, rec_id: str) -> str | None:
    conn = await asyncpg.connect(db_url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        value = await conn.fetchval("SELECT reply::text FROM recordings WHERE id = $1", rec_id)
        return None if value is None else str(value)
    finally:
        await conn.close()


async def test_serving_records_without_sqlalchemy_and_the_first_read_loads_it(
    fake_upstream: FakeUpstream, tmp_path: Path, db_url: str
) -> None:
    """On a SQLite file the worker writes, on PostgreSQL serve through asyncpg alone."""
    fake_upstream.sse("/v1/chat/completions", chat_events(PIECES))
    server = ServeProcess("--upstream", fake_upstream.url, "--db", db_url, log_path=tmp_path / "serve.log")
    await server.start()
    try:
        assert server.proc is not None
        pid = server.proc.pid
        async with openai.AsyncOpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0) as client:
            resp = await client.chat.completions.with_raw_response.create(**REQUEST, stream=True)
            rec_id = resp.headers["x-recording-id"]
            assert "".join([c.choices[0].delta.content or "" async for c in resp.parse() if c.choices]) == "".join(PIECES)
        stored = await _stored(db_url, rec_id)
        assert stored is not None and "".join(PIECES) in stored  # written, and assembled
        assert _loaded(pid, "sqlalchemy") is False
        # Nor the SQLite driver: on a SQLite file the worker writes what serve hands it.
        assert "/_sqlite3." not in Path(f"/proc/{pid}/maps").read_text()

        async with aiohttp.ClientSession() as s, s.get(f"{server.url}/recordings/{rec_id}") as r:
            assert r.status == 200
            got = await r.json()
        assert got["id"] == rec_id and got["reply"]["choices"][0]["message"]["content"] == "".join(PIECES)
        assert _loaded(pid, "sqlalchemy") is True
    finally:
        assert await server.stop() == 0
    assert API_KEY not in (tmp_path / "serve.log").read_text()


def test_a_sqlite_file_that_is_not_a_database_stops_the_start_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "junk.db").write_bytes(b"this is not a database file, not even close" * 100)
    r = cli("serve", "--db", f"sqlite+aiosqlite:///{tmp_path / 'junk.db'}", "--port", "0", cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "streamproxy: error: cannot use database" in r.stderr, r.stderr


async def test_a_store_that_cannot_be_opened_on_first_use_sends_the_batch_to_the_spool_whole(tmp_path: Path) -> None:
    """The worker gone, the recorder writes itself, opening the store then: if that fails, the
    batch is an outage (spooled at once, tried again later), not a record the database refused."""
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database" * 1000)
    spool = Spool(tmp_path / "spool")
    recorder = Recorder(LazyStore(f"sqlite+aiosqlite:///{junk}"), spool, batch_size=10)
    await recorder.start()
    try:
        for _ in range(5):
            recorder.submit(make_record())
        await recorder.drain(timeout=10)
        assert recorder.stats.spooled == 5 and recorder.stats.rejected == 0
        assert recorder.stats.db_failures == 1  # the batch once, not each of its records on its own
    finally:
        await recorder.close()
    assert len([r for path in spool.claim() for batch in Spool.read(path, 10) for r in batch]) == 5
