"""The store on both backends: every chunk comes back byte for byte however its body is stored,
and new SQLite files get 16 KB pages."""

from __future__ import annotations

import contextlib
import random
import sqlite3
import zlib
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from sqlalchemy import func, select

from proxy import prepare
from proxy.ids import new_id
from proxy.record import Record, to_json
from proxy.store import Store, open_store
from proxy.store.models import RecordingBodyRow, RecordingRow
from tests.recorded import cli
from tests.recordings import make_record
from tests.shapes import SHAPES


def _chat_events(n: int) -> list[bytes]:
    base = {"id": "chatcmpl-7", "object": "chat.completion.chunk", "created": 1700000000, "model": "gpt-4o-mini"}
    return [
        b"data: " + orjson.dumps({**base, "choices": [{"index": 0, "delta": {"content": f"Grüße {i} "}}]}) + b"\n\n"
        for i in range(n)
    ] + [b"data: [DONE]\n\n"]


def _random_chunks(size: int) -> list[bytes]:
    """Random bytes (NULs, invalid UTF-8) cut at random points, an empty chunk among them."""
    rng = random.Random(size)
    data = rng.randbytes(size)
    cuts = sorted(rng.sample(range(1, size), 40))
    chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, size], strict=True)]
    return [*chunks[:20], b"", *chunks[20:]]


# (chunks, how the body is stored: "zlib" compressed, "" raw)
BODIES = {
    # The body's codec, then "/e" where the chunk ends are compressed (8 chunks or more; the
    # offsets too only when the reads they came in are known to be few: tests/test_reads.py).
    "chat stream": (_chat_events(200), "zlib/e"),
    "long chat stream": (_chat_events(30_000), "zlib/e"),
    "random bytes": (_random_chunks(50_000), "/e"),
    "random megabyte": (_random_chunks(1 << 20), "/e"),
    "no chunks": ([], ""),
    "one empty chunk": ([b""], ""),
    "one tiny chunk": ([b"data: [DONE]\n\n"], ""),
}


def _with_chunks(chunks: list[bytes]) -> Record:
    rec = make_record()
    rec.chunks = chunks
    rec.offsets_ms = [40.0 + i * 0.123456789 for i in range(len(chunks))]
    return rec


@pytest.mark.parametrize("name", BODIES)
async def test_chunks_come_back_byte_for_byte(db_url: str, name: str) -> None:
    chunks, encoding = BODIES[name]
    rec = _with_chunks(chunks)
    engine = await open_store(db_url, create=True)
    try:
        store = Store(engine)
        await store.insert([rec])
        got = await store.get(rec.id)
        assert got is not None
        assert got.chunks == chunks and got.offsets_ms == rec.offsets_ms
        async with store.sessions() as s:
            stored = (
                await s.execute(
                    select(RecordingBodyRow.encoding, func.length(RecordingBodyRow.body), RecordingRow.body_bytes).join(
                        RecordingRow, RecordingRow.id == RecordingBodyRow.id
                    )
                )
            ).one()
        body = b"".join(chunks)
        assert stored.encoding == encoding and stored.body_bytes == len(body)
        if encoding.startswith("zlib"):
            assert stored[1] < len(body) // 10
        else:
            assert stored[1] == len(body)
    finally:
        await engine.dispose()


@pytest.mark.parametrize("name", ["chat stream", "random bytes", "one tiny chunk"])
def test_bodies_compress_alike_with_isal_and_with_stdlib_zlib(name: str) -> None:
    """ISA-L packs when it is installed, stdlib zlib where it has no build: both write zlib's
    format, which either reads back, and both leave alone what does not shrink."""
    body = b"".join(BODIES[name][0])
    for fast in (prepare._FAST_DEFLATE, None):
        packed = prepare.shrink(body, fast)
        if BODIES[name][1].startswith("zlib"):
            assert packed is not None and zlib.decompress(packed) == body
        else:
            assert packed is None
    assert prepare._FAST_DEFLATE is not None, "isal is a dependency: packing should use it here"


def _sqlite_pragmas(db: Path) -> tuple[int, str]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return conn.execute("PRAGMA page_size").fetchone()[0], conn.execute("PRAGMA journal_mode").fetchone()[0]


async def test_a_new_sqlite_database_has_16k_pages(tmp_path: Path) -> None:
    db = tmp_path / "new.db"
    out = await cli("db", "upgrade", "--db", f"sqlite+aiosqlite:///{db}")
    assert out.returncode == 0, out.stderr
    assert _sqlite_pragmas(db) == (16384, "wal")


async def test_an_existing_sqlite_database_keeps_its_pages_and_works(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("PRAGMA page_size=4096")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE earlier (x)")
    rec = _with_chunks(_chat_events(200))
    engine = await open_store(f"sqlite+aiosqlite:///{db}", create=True)
    try:
        store = Store(engine)
        await store.insert([rec])
        got = await store.get(rec.id)
        assert got is not None and got.chunks == rec.chunks
    finally:
        await engine.dispose()
    assert _sqlite_pragmas(db) == (4096, "wal")


@pytest.mark.parametrize("events", [SHAPES["chat_tools"].events, [b"\x00\xff" * 3000, b"", b"tail"], []], ids=["chat", "binary", "empty"])
def test_a_sealed_recording_reads_and_exports_as_before(events: list[bytes]) -> None:
    """The recorder seals what it is handed (packs and compresses it): nothing a reader sees changes."""
    rec = Record(
        id=new_id(), started_at=datetime.now(UTC), method="POST", path="/v1/chat/completions",
        response_headers={"content-type": "text/event-stream"}, chunks=list(events),
        offsets_ms=[float(i) * 1.5 for i in range(len(events))],
    )
    before = to_json(rec, export=True)
    rec.seal()
    assert rec.chunks == [] and rec.packed is not None, "the chunks are let go"
    assert rec.chunk_list() == (list(events), [float(i) * 1.5 for i in range(len(events))])
    assert rec.body == b"".join(events)
    assert to_json(rec, export=True) == before


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_sqlite_batch_is_written_in_one_hand_over_to_the_driver(db_url: str) -> None:
    """The insert relies on two private names of aiosqlite to run a whole batch in its thread; if a
    new aiosqlite drops them, the store falls back to a slower path, and this says so."""
    engine = await open_store(db_url, create=True)
    try:
        async with engine.connect() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            assert callable(getattr(driver, "_execute", None))
            assert isinstance(getattr(driver, "_connection", None), sqlite3.Connection)
        store = Store(engine)
        recs = [make_record() for _ in range(300)]  # more rows than one statement takes
        await store.insert(recs)
        assert await store.count() == 300
        got = await store.get(recs[-1].id)
        assert got is not None and got.chunks == recs[-1].chunk_list()[0]
    finally:
        await engine.dispose()


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
async def test_a_batch_of_any_size_lands_whole_many_rows_to_a_statement(db_url: str) -> None:
    """Both backends insert many rows per statement, in power-of-two parts (PostgreSQL's
    placeholders numbered on through every row): every row of an odd-sized batch lands with its
    own values, a recording already stored is left as it is, even twice in one batch."""
    engine = await open_store(db_url, create=True)
    try:
        store = Store(engine)
        first = make_record("first question", "already here")
        await store.insert([first])
        recs = [make_record(f"question {i}", f"answer number {i}") for i in range(1037)]  # 1024 + 8 + 4 + 1
        again = make_record("first question", "a second answer")
        again.id = first.id
        await store.insert([*recs[:500], again, *recs[500:], again])
        assert await store.count() == 1038
        for rec in (recs[0], recs[511], recs[1023], recs[1024], recs[-1]):
            got = await store.get(rec.id)
            assert got is not None and got.request_body == rec.request_body and got.chunks == rec.chunk_list()[0]
        kept = await store.get(first.id)
        assert kept is not None and kept.chunks == first.chunk_list()[0]
    finally:
        await engine.dispose()


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_postgresql_compresses_the_large_columns_with_lz4(db_url: str) -> None:
    """Migration 0005: TOAST compresses a recording's large columns with lz4, not pglz (half the
    server's CPU a recording went to pglz), and they read back as they were written."""
    from sqlalchemy import text

    engine = await open_store(db_url, create=True)
    try:
        async with engine.connect() as conn:
            try:
                await conn.execute(text("SET default_toast_compression = lz4"))
            except Exception:  # noqa: BLE001 - a server built without lz4: the migration kept pglz
                pytest.skip("this PostgreSQL has no lz4")
        store = Store(engine)
        answer = " ".join(f"word{i:04d}" for i in range(400))  # a reply and search text TOAST compresses
        rec = make_record("a question", answer)
        rec.chunks = [b"data: " + orjson.dumps({"n": i, "text": "same text again"}) + b"\n\n" for i in range(300)]
        rec.offsets_ms = [float(i) for i in range(300)]
        await store.insert([rec])
        async with engine.connect() as conn:
            methods = (
                await conn.execute(
                    text(
                        "SELECT pg_column_compression(r.search_text), pg_column_compression(r.reply)"
                        " FROM recordings r WHERE r.id = :id"
                    ),
                    {"id": rec.id},
                )
            ).one()
            # The chunk arrays arrive compressed already (migration 0007), too small to TOAST: their setting, then.
            arrays = (
                await conn.execute(
                    text(
                        "SELECT attname, attcompression FROM pg_attribute WHERE attrelid = 'recording_bodies'::regclass"
                        " AND attname IN ('body', 'chunk_ends', 'chunk_offsets')"
                    )
                )
            ).all()
        assert tuple(methods) == ("lz4", "lz4")
        assert {name: bytes(method) for name, method in arrays} == {"body": b"l", "chunk_ends": b"l", "chunk_offsets": b"l"}
        got = await store.get(rec.id)
        assert got is not None and got.chunks == rec.chunks and got.offsets_ms == rec.offsets_ms
        assert got.reply == rec.reply
    finally:
        await engine.dispose()
