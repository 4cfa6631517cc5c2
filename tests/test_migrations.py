"""Alembic migrations on both backends: empty to head matches the models, ``serve`` migrates by itself,
and recordings written before a migration read back the same after it (and after its downgrade)."""

from __future__ import annotations

import asyncio
from array import array
from datetime import timedelta
from itertools import accumulate
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.prepare import pack_body
from proxy.store import Store
from proxy.store.engine import (
    MIGRATIONS_DIR,
    _alembic_config,
    _head_from_files,
    create_engine,
    current_revision,
    head_revision,
    migrate,
)
from proxy.store.models import Base
from tests.fakes import FakeUpstream
from tests.processes import ServeProcess
from tests.recordings import T0, insert_as_before_0003, make_record


def _older_revisions() -> list[str | None]:
    """Every revision a database can be at short of head; None is an empty database."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    script = ScriptDirectory.from_config(cfg)
    revs = [r.revision for r in reversed(list(script.walk_revisions()))]
    return [None, *revs[:-1]]


def _only_in_database(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    return reflected and compare_to is None


def _diff(conn: Connection) -> list[object]:
    """Where the database differs from the models. Objects a migration adds beyond the models
    (search indexes, FTS tables) are the migration's business and not compared."""
    ctx = MigrationContext.configure(conn, opts={"include_object": lambda *a: not _only_in_database(*a)})
    return list(compare_metadata(ctx, Base.metadata))


def _tables(conn: Connection) -> set[str]:
    return set(inspect(conn).get_table_names())


async def test_migrations_run_from_empty_to_head_and_match_the_models(any_db_url: str) -> None:
    engine = create_engine(any_db_url)
    try:
        assert await current_revision(engine) is None
        await migrate(engine)
        assert await current_revision(engine) == head_revision()
        async with engine.connect() as conn:
            assert await conn.run_sync(_diff) == []
        await migrate(engine)  # idempotent at head
        async with engine.begin() as conn:
            await conn.run_sync(lambda c: command.downgrade(_alembic_config(c), "base"))
        async with engine.connect() as conn:
            assert await conn.run_sync(_tables) <= {"alembic_version"}
        await migrate(engine)
        assert await current_revision(engine) == head_revision()
    finally:
        await engine.dispose()


def test_the_head_read_without_alembic_is_alembics_head() -> None:
    # serve skips Alembic when the database is stamped with this revision: a wrong one would
    # leave a database short of the last migration.
    assert _head_from_files() == head_revision()


@pytest.mark.parametrize("start", _older_revisions(), ids=lambda r: f"from-{r or 'empty'}")
async def test_serve_brings_an_empty_or_older_database_to_head(
    any_db_url: str, start: str | None, fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    engine = create_engine(any_db_url)
    try:
        if start is not None:
            async with engine.begin() as conn:
                await conn.run_sync(lambda c: command.upgrade(_alembic_config(c), start))
        assert await current_revision(engine) == start
        server = ServeProcess("--upstream", fake_upstream.url, "--db", any_db_url, log_path=tmp_path / "serve.log")
        await server.start()
        assert await server.stop() == 0
        assert await current_revision(engine) == head_revision()
    finally:
        await engine.dispose()


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
async def test_instances_migrating_one_database_at_once_take_turns(any_db_url: str) -> None:
    engines = [create_engine(any_db_url) for _ in range(3)]
    try:
        await asyncio.wait_for(asyncio.gather(*(migrate(e) for e in engines)), 60)
        assert await current_revision(engines[0]) == head_revision()
    finally:
        await asyncio.gather(*(e.dispose() for e in engines))


async def _to(engine: AsyncEngine, revision: str, *, down: bool = False) -> None:
    op = command.downgrade if down else command.upgrade
    async with engine.begin() as conn:
        await conn.run_sync(lambda c: op(_alembic_config(c), revision))


async def _stored_bodies(engine: AsyncEngine) -> dict[str, bytes]:
    async with engine.connect() as conn:
        return {r.id: r.body for r in await conn.execute(text("SELECT id, body FROM recording_bodies"))}


async def test_0003_reads_bodies_stored_before_it_and_goes_down_to_raw_bodies(any_db_url: str) -> None:
    story = " ".join(f"word{i}" for i in range(300))
    old = make_record("written by 0002", story)
    # More than the downgrade decompresses in one round trip.
    new = [make_record("written by 0003", story, at=T0 + timedelta(seconds=i)) for i in range(250)]
    engine = create_engine(any_db_url)
    try:
        await _to(engine, "0002")
        await insert_as_before_0003(engine, old)
        await _to(engine, "0003")
        store = Store(engine)
        got = await store.get(old.id)
        assert got is not None and got.chunks == old.chunks and got.offsets_ms == old.offsets_ms
        await _to(engine, "head")  # this code writes rows as head's schema expects them
        await store.insert(new)
        stored = await _stored_bodies(engine)
        assert len(stored[old.id]) == len(old.body)
        assert all(len(stored[r.id]) < len(r.body) // 4 for r in new)

        await _to(engine, "0002", down=True)
        assert await _stored_bodies(engine) == {r.id: r.body for r in [old, *new]}

        await _to(engine, "head")
        for rec in [old, new[0], new[-1]]:
            got = await store.get(rec.id)
            assert got is not None and got.chunks == rec.chunks
    finally:
        await engine.dispose()


async def _stored_arrays(engine: AsyncEngine) -> dict[str, tuple[str, bytes, bytes]]:
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT id, encoding, chunk_ends, chunk_offsets FROM recording_bodies"))
        return {r.id: (r.encoding, r.chunk_ends, r.chunk_offsets) for r in rows}


async def test_0007_reads_chunk_arrays_stored_before_it_and_goes_down_to_raw_arrays(any_db_url: str) -> None:
    """Recordings written at head store their arrays compressed; going down to 0006 stores every
    array raw, as 0006's code reads them; and those read back at head as before."""
    story = " ".join(f"word{i}" for i in range(300))
    # More than the downgrade rewrites in one round trip; one too short to have its arrays compressed.
    new = [make_record("written by 0007", story, at=T0 + timedelta(seconds=i)) for i in range(250)]
    for rec in new[::2]:  # as the relay packs a burst: few reads, so the offsets are compressed too
        rec.packed = pack_body(rec.body, accumulate(map(len, rec.chunks)), rec.offsets_ms, reads=2)
    short = make_record("short", "hi", at=T0 + timedelta(seconds=300))
    short.chunks, short.offsets_ms = [b"data: [DONE]\n\n"], [1.5]
    engine = create_engine(any_db_url)
    try:
        await _to(engine, "head")
        store = Store(engine)
        await store.insert([*new, short])
        stored = await _stored_arrays(engine)
        assert {stored[r.id][0] for r in new[::2]} == {"zlib/z"} and {stored[r.id][0] for r in new[1::2]} == {"zlib/e"}
        assert all(len(stored[r.id][1]) < 8 * len(r.chunks) // 2 for r in new)
        assert stored[short.id] == ("", raw_ends(short.chunks), raw_offsets(short.offsets_ms))
        for rec in [new[0], new[-1], short]:
            got = await store.get(rec.id)
            assert got is not None and got.chunks == rec.chunks and got.offsets_ms == rec.offsets_ms

        await _to(engine, "0006", down=True)
        stored = await _stored_arrays(engine)
        assert {i: e for i, (e, _, _) in stored.items()} == {**{r.id: "zlib" for r in new}, short.id: ""}
        assert all(stored[r.id][1:] == (raw_ends(r.chunks), raw_offsets(r.offsets_ms)) for r in [*new, short])

        await _to(engine, "head")
        for rec in [new[0], new[-1], short]:
            got = await store.get(rec.id)
            assert got is not None and got.chunks == rec.chunks and got.offsets_ms == rec.offsets_ms
    finally:
        await engine.dispose()


def raw_ends(chunks: list[bytes]) -> bytes:
    return array("Q", accumulate(map(len, chunks))).tobytes()


def raw_offsets(offsets: list[float]) -> bytes:
    return array("d", offsets).tobytes()
