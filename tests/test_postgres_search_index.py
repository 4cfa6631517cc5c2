"""Migration 0008: on PostgreSQL a recording serve writes waits to join the search index until serve
has a quiet moment (or the backlog passes its bound), and searches give the same answers whether
or not it has joined. The real server throughout, written as serve writes it (``PostgresWriter``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from proxy.filters import Filters
from proxy.postgres_writer import LIGHT_BATCH, SLICE, PostgresWriter
from proxy.record import Record
from proxy.store import Store, open_store
from tests.faultkit import wait_until
from tests.pgtest import PgDatabase
from tests.test_search import _migrate_to
from tests.recordings import T0, make_record
from tests.test_search_backlog import CORPUS, SEARCHES, answers, zebra

pytestmark = [pytest.mark.postgres, pytest.mark.parametrize("db_url", ["postgres"], indirect=True)]

# Long enough that no test sees serve's quiet-time upkeep unless it waits for it.
NEVER = 3600.0


def assembled(start: int = 0) -> list[Record]:
    """The corpus as the recorder hands a batch to serve's writer: assembled (by the worker)."""
    return [make_record(q, a, at=T0 + timedelta(minutes=start + i)) for i, (q, a) in enumerate(CORPUS)]


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    engine = await open_store(db_url, create=True)
    try:
        yield Store(engine)
    finally:
        await engine.dispose()


@pytest.fixture
async def sql(store: Store, pg_database: PgDatabase) -> AsyncIterator[asyncpg.Connection[Any]]:
    conn = await asyncpg.connect(pg_database.dsn)
    try:
        yield conn
    finally:
        await conn.close()


async def pending(sql: asyncpg.Connection[Any]) -> int:
    return int(await sql.fetchval("SELECT count(*) FROM recording_search_pending"))


async def drained(sql: asyncpg.Connection[Any]) -> bool:
    """Nothing waits to join the index."""
    return await pending(sql) == 0


async def indexed(sql: asyncpg.Connection[Any], term: str) -> set[str]:
    """What the index table finds for a term through its trigram index (no pending ones)."""
    await sql.execute("SET enable_seqscan = off")  # the GIN index answers, even on a small table
    rows = await sql.fetch("SELECT id FROM recording_search_index WHERE search_text LIKE $1", f"%{term}%")
    return {r["id"] for r in rows}


async def test_pending_recordings_are_found_before_and_after_they_join_the_index(
    store: Store, db_url: str, sql: asyncpg.Connection[Any]
) -> None:
    recs = assembled()
    zebras = {r.id for r in recs if zebra(r)}
    writer = PostgresWriter(db_url, quiet=NEVER)
    try:
        await writer.insert(recs)
        assert await pending(sql) == len(recs)
        assert await indexed(sql, "zeb") == set(), "written by serve: not indexed yet"
        before = await answers(store)
        assert set(before["zebra"]) == zebras and len(zebras) == 3
        assert before["nothing-like-it"] == [] and len(before["rate"]) == 2 and len(before['"rate limit"']) == 1

        async with writer._turn:
            assert await writer._index(await writer._connection(), 4) == 4, "as many as asked"
        assert await pending(sql) == 2
        assert await answers(store) == before
        async with writer._turn:
            assert await writer._index(await writer._connection(), 100) == 2
        assert await pending(sql) == 0 and await indexed(sql, "zeb") == zebras
        assert await answers(store) == before
    finally:
        await writer.close()


async def test_serve_indexes_once_batches_stop_and_not_before(store: Store, db_url: str, sql: asyncpg.Connection[Any]) -> None:
    writer = PostgresWriter(db_url, quiet=0.3)
    try:
        for start in range(0, 50, 10):  # a burst: a batch every 0.1 s
            await writer.insert(assembled(start))
            await asyncio.sleep(0.1)
        assert await pending(sql) == 30, "batches kept coming: nothing indexed"
        await wait_until(lambda: drained(sql), timeout=10, what="the quiet writer to index its backlog")
        assert len(await indexed(sql, "zeb")) == 15
        await writer.insert(assembled(100))  # and it still writes after indexing
        assert await pending(sql) == 6
    finally:
        await writer.close()
    assert writer._indexing is None and writer._timer is None, "closing stops the upkeep"


async def test_an_insert_held_up_past_the_quiet_time_is_not_taken_for_a_pause(
    store: Store, db_url: str, sql: asyncpg.Connection[Any]
) -> None:
    """Under load an insert can wait longer than the quiet time (at 500 streams a turn of serve's
    loop takes ~0.15 s): the upkeep must not slip in behind it and hold up the batches after it."""
    quiet = 1.0
    writer = PostgresWriter(db_url, quiet=quiet)
    try:
        await writer.insert(assembled(0))
        async with sql.transaction():
            await sql.execute("LOCK TABLE recordings IN SHARE ROW EXCLUSIVE MODE")  # holds inserts back
            held = asyncio.create_task(writer.insert(assembled(10)))
            await asyncio.sleep(2 * quiet)
            assert not held.done()
        await held
        await asyncio.sleep(quiet / 10)
        assert await pending(sql) == 12, "the held insert ended just now: no pause yet, nothing indexed"
        await wait_until(lambda: drained(sql), timeout=10, what="the upkeep once the writer is really quiet")
    finally:
        await writer.close()


async def transactions(sql: asyncpg.Connection[Any], records: list[Record]) -> int:
    """How many transactions wrote these recordings (rows one transaction wrote share its xmin)."""
    ids = [r.id for r in records]
    assert await sql.fetchval("SELECT count(*) FROM recordings WHERE id = ANY($1)", ids) == len(ids)
    assert await sql.fetchval("SELECT count(*) FROM recording_bodies WHERE id = ANY($1)", ids) == len(ids)
    return int(await sql.fetchval("SELECT count(DISTINCT xmin::text) FROM recordings WHERE id = ANY($1)", ids))


async def test_a_small_batch_goes_in_as_slices_and_a_full_one_whole(
    store: Store, db_url: str, sql: asyncpg.Connection[Any]
) -> None:
    """A batch of ``LIGHT_BATCH`` or fewer comes from a light load: the writer spreads the
    database's work over slices. A bigger one is one statement, one transaction."""

    def batch(n: int, start: int) -> list[Record]:
        return [make_record(f"q{i}", "a", at=T0 + timedelta(seconds=start + i)) for i in range(n)]

    small, full, few = batch(LIGHT_BATCH, 0), batch(LIGHT_BATCH + 1, 1000), batch(SLICE, 2000)
    writer = PostgresWriter(db_url, quiet=NEVER)
    try:
        for records in (small, full, few):
            await writer.insert(records)
        assert await transactions(sql, small) == -(-LIGHT_BATCH // SLICE)
        assert await transactions(sql, full) == 1
        assert await transactions(sql, few) == 1
        await writer.insert(small)  # again, as after a failure half-way: nothing doubled
        assert await transactions(sql, small) == -(-LIGHT_BATCH // SLICE)
        assert await sql.fetchval("SELECT count(*) FROM recordings") == len(small) + len(full) + len(few)
    finally:
        await writer.close()


async def test_warming_up_connects_and_writes_nothing(store: Store, db_url: str, sql: asyncpg.Connection[Any]) -> None:
    """Serve connects and prepares its insert at startup, so that the first batch of a burst is one round trip."""
    async def sessions() -> int:
        return int(await sql.fetchval("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"))

    before = await sessions()
    writer = PostgresWriter(db_url, quiet=NEVER)
    try:
        await writer.warm()
        assert await sessions() == before + 1
        assert await sql.fetchval("SELECT count(*) FROM recordings") == 0
        assert await pending(sql) == 0
        await writer.insert(assembled(0))
        assert await sessions() == before + 1, "the batch went on the warm connection"
        assert await sql.fetchval("SELECT count(*) FROM recordings") == 6
    finally:
        await writer.close()


async def test_a_backlog_past_its_bound_is_indexed_with_the_batches(
    store: Store, db_url: str, sql: asyncpg.Connection[Any]
) -> None:
    writer = PostgresWriter(db_url, quiet=NEVER, backlog=10)
    seen: list[int] = []
    try:
        for batch in range(5):
            await writer.insert(assembled(batch * 10))
            seen.append(await pending(sql))
    finally:
        await writer.close()
    assert max(seen) <= 10 and seen[0] == 6, seen
    assert len(await indexed(sql, "zeb")) >= 3 * 4


async def test_the_store_indexes_what_it_writes_and_what_is_pending(
    store: Store, db_url: str, sql: asyncpg.Connection[Any]
) -> None:
    """The in-process store (imports, tests, a serve whose writer failed): no quiet moments to wait for."""
    writer = PostgresWriter(db_url, quiet=NEVER)
    try:
        await writer.insert(assembled())
    finally:
        await writer.close()
    await store.insert(assembled(10))
    assert await pending(sql) == 0
    assert len(await indexed(sql, "zeb")) == 6


async def test_deleted_and_changed_recordings_keep_the_index_true(
    store: Store, db_url: str, sql: asyncpg.Connection[Any]
) -> None:
    old, new = assembled(0), assembled(10)
    await store.insert(old)  # indexed
    writer = PostgresWriter(db_url, quiet=NEVER)
    try:
        await writer.insert(new)  # pending
    finally:
        await writer.close()
    doomed = [old[0], old[2], new[0]]  # two zebras indexed, one pending
    await sql.execute("DELETE FROM recordings WHERE id = ANY($1)", [r.id for r in doomed])
    assert await pending(sql) == len(new) - 1
    assert await sql.fetchval("SELECT count(*) FROM recording_search_index") == len(old) - 2
    # A search text that changes waits to be indexed again, and is found by its new words at once.
    changed = old[1]
    await sql.execute("UPDATE recordings SET search_text = 'now about quokkas' WHERE id = $1", changed.id)
    assert await pending(sql) == len(new)
    found = await answers(store)
    kept = [r for r in old + new if r not in doomed and r is not changed]
    assert set(found["zebra"]) == {r.id for r in kept if zebra(r)}
    records, _ = await store.list_recordings(Filters.from_mapping({"search": "quokkas"}), limit=10)
    assert [r.id for r in records] == [changed.id]
    await store.insert(assembled(20))  # the store indexes everything pending
    assert await pending(sql) == 0 and await indexed(sql, "quokka") == {changed.id}


async def test_two_writers_index_one_backlog_without_waiting_for_each_other(
    store: Store, db_url: str, sql: asyncpg.Connection[Any], pg_database: PgDatabase
) -> None:
    """Two instances on one database: each takes rows the other has not locked."""
    first, second = PostgresWriter(db_url, quiet=NEVER), PostgresWriter(db_url, quiet=NEVER)
    try:
        for start in range(0, 300, 10):
            await first.insert(assembled(start))
        assert await pending(sql) == 180
        expected = await answers(store)
        lock = await asyncpg.connect(pg_database.dsn)
        try:
            async with lock.transaction():
                held = await lock.fetch("SELECT id FROM recording_search_pending ORDER BY id LIMIT 50 FOR UPDATE")
                async with second._turn:
                    moved = await asyncio.wait_for(second._index(await second._connection(), 1000), 10)
                assert moved == 130, "the rows another writer holds are skipped, not waited for"
            assert await pending(sql) == len(held)
        finally:
            await lock.close()
        async with first._turn:
            assert await first._index(await first._connection(), 1000) == 50
    finally:
        await first.close()
        await second.close()
    assert await pending(sql) == 0
    assert await answers(store) == expected


async def test_migration_0008_indexes_what_is_there_and_goes_down(
    store: Store, db_url: str, sql: asyncpg.Connection[Any]
) -> None:
    recs = assembled()
    writer = PostgresWriter(db_url, quiet=NEVER)
    try:
        await writer.insert(recs)  # pending
    finally:
        await writer.close()
    expected = await answers(store)

    await _migrate_to(store.engine, "0007", down=True)
    tables = {r["t"] for r in await sql.fetch("SELECT tablename AS t FROM pg_tables WHERE schemaname = 'public'")}
    assert not tables & {"recording_search_index", "recording_search_pending"}
    assert await sql.fetchval("SELECT to_regclass('ix_recordings_search_trgm') IS NOT NULL"), "0002's index is back"
    before = await store.list_recordings(Filters.from_mapping({}), limit=100)
    assert len(before[0]) == len(recs)

    await _migrate_to(store.engine, "head")
    assert await pending(sql) == 0, "upgrade indexes every recording"
    assert await indexed(sql, "zeb") == {r.id for r in recs if zebra(r)}
    assert await sql.fetchval("SELECT to_regclass('ix_recordings_search_trgm') IS NULL")
    assert await answers(store) == expected
    assert set(SEARCHES) == set(expected)
