"""Migration 0006: on SQLite a recording the assembly worker writes waits to join the search
index until the worker has a quiet moment (or the backlog passes its bound), and searches give
the same answers whether or not it has joined. A real SQLite file throughout, written as the
worker writes it (``run_job``), or by a real worker process."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from proxy import assembly_worker
from proxy.assembly_pool import AssemblyPool, _pack
from proxy.assembly_worker import index_while_quiet, run_job
from proxy.filters import Filters
from proxy.record import Record
from proxy.sqlite_batch import connect, index_backlog, index_some
from proxy.store import Store, open_store
from tests.recordings import T0, make_record
from tests.test_search import _migrate_to

CORPUS = [
    ("how do zebras sleep", "standing up, mostly"),
    ("what is a rate limit", "a cap on requests per minute"),
    ("name a striped animal", "the zebra"),
    ("tell me about otters", "they hold hands while asleep"),
    ("rate my haiku", "five seven five: zebras"),
    ("short one", "ok"),
]
SEARCHES = ["zebra", "rate", "sleep", "zebras standing", '"rate limit"', "otter hands", "ok", "nothing-like-it"]


def corpus(start: int = 0) -> list[Record]:
    """CORPUS as the relay hands it over: streamed, not yet assembled."""
    out = [make_record(q, a, at=T0 + timedelta(minutes=start + i)) for i, (q, a) in enumerate(CORPUS)]
    for rec in out:
        rec.reply, rec.assembled = None, False
    return out


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    engine = await open_store(f"sqlite+aiosqlite:///{tmp_path / 'r.db'}", create=True)
    try:
        yield Store(engine)
    finally:
        await engine.dispose()


@pytest.fixture
def db(store: Store) -> Iterator[sqlite3.Connection]:
    assert store.engine.url.database
    conn = connect(store.engine.url.database)
    try:
        yield conn
    finally:
        conn.close()


def write_as_worker(store: Store, records: list[Record], connections: dict[str, sqlite3.Connection]) -> None:
    write = store.direct_write(records)
    assert write is not None
    assert run_job(([_pack(r) for r in records], write), connections) == (None, None)


def zebra(rec: Record) -> bool:
    """Whether its question or answer mentions zebras (its chunks split words apart)."""
    return any(q in (rec.request_body or b"").decode() and "zebra" in q + a for q, a in CORPUS)


async def answers(store: Store) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for search in SEARCHES:
        records, _ = await store.list_recordings(Filters.from_mapping({"search": search}), limit=100)
        out[search] = sorted(r.id for r in records)
    return out


def indexed(db: sqlite3.Connection, trigram: str) -> set[str]:
    """The recordings the FTS table itself holds for one trigram (no LIKE, no pending ones)."""
    rows = db.execute(
        "SELECT s.id FROM recording_search s WHERE s.n IN"
        " (SELECT rowid FROM recording_search_fts WHERE recording_search_fts MATCH ?)",
        (f'"{trigram}"',),
    )
    return {r[0] for r in rows}


async def test_pending_recordings_are_found_before_and_after_they_join_the_index(
    store: Store, db: sqlite3.Connection
) -> None:
    recs = corpus()
    zebras = {r.id for r in recs if zebra(r)}
    connections: dict[str, sqlite3.Connection] = {}
    write_as_worker(store, recs, connections)

    assert index_backlog(db)[0] == len(recs)
    assert indexed(db, "zeb") == set(), "written by the worker: not indexed yet"
    pending = await answers(store)
    assert set(pending["zebra"]) == zebras and len(zebras) == 3
    assert pending["nothing-like-it"] == [] and len(pending["rate"]) == 2 and len(pending['"rate limit"']) == 1

    assert index_some(db, 4) == 4 and index_backlog(db)[0] == 2, "the oldest first, as many as asked"
    assert await answers(store) == pending
    assert index_some(db) == 2 and index_backlog(db) == (0, 0)
    assert indexed(db, "zeb") == zebras
    assert await answers(store) == pending
    for conn in connections.values():
        conn.close()


async def test_deleting_pending_and_indexed_recordings_keeps_the_index_true(store: Store, db: sqlite3.Connection) -> None:
    """A contentless FTS5 table must be told to forget exactly the rows it holds."""
    connections: dict[str, sqlite3.Connection] = {}
    old, new = corpus(0), corpus(10)
    write_as_worker(store, old, connections)
    index_some(db)
    write_as_worker(store, new, connections)  # pending
    assert index_backlog(db)[0] == len(new)

    # The three oldest (indexed) and two of the new ones (pending).
    doomed = old[:3] + new[:2]
    for rec in doomed:
        db.execute("DELETE FROM recordings WHERE id = ?", (rec.id,))
    assert index_backlog(db)[0] == len(new) - 2
    # Their numbers are free again: new recordings may take them, and must not inherit old entries.
    again = corpus(20)
    write_as_worker(store, again, connections)
    index_some(db)
    kept = [r for r in old + new + again if r not in doomed]
    assert indexed(db, "zeb") == {r.id for r in kept if zebra(r)}
    db.execute("INSERT INTO recording_search_fts (recording_search_fts) VALUES ('integrity-check')")  # raises if not
    # The index's own count of rows holding a trigram: a spurious 'delete' would take one off.
    db.execute("CREATE VIRTUAL TABLE temp.vocab USING fts5vocab(main, recording_search_fts, 'row')")
    assert db.execute("SELECT doc FROM vocab WHERE term = 'zeb'").fetchone() == (len([r for r in kept if zebra(r)]),)
    assert set((await answers(store))["zebra"]) == {r.id for r in kept if zebra(r)}
    for conn in connections.values():
        conn.close()


async def test_a_backlog_past_its_bound_is_indexed_with_the_batches(
    store: Store, db: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(assembly_worker, "BACKLOG_ROWS", 10)
    connections: dict[str, sqlite3.Connection] = {}
    seen: list[int] = []
    for batch in range(5):
        write_as_worker(store, corpus(batch * 10), connections)
        seen.append(index_backlog(db)[0])
    assert max(seen) <= 10 and seen[0] == 6, seen
    assert len(indexed(db, "zeb")) >= 3 * 4
    for conn in connections.values():
        conn.close()


async def test_a_quiet_worker_indexes_until_a_batch_comes(store: Store, db: sqlite3.Connection) -> None:
    connections: dict[str, sqlite3.Connection] = {}
    write_as_worker(store, corpus() + corpus(10) + corpus(20), connections)
    index_while_quiet(connections, lambda: True)
    assert index_backlog(db)[0] == 18, "a batch is waiting: nothing indexed"
    index_while_quiet(connections, lambda: False)
    assert index_backlog(db)[0] == 0
    for conn in connections.values():
        conn.close()


async def test_the_store_indexes_what_it_writes_and_what_is_pending(store: Store, db: sqlite3.Connection) -> None:
    """Assembly in the serving process (``--assembly-workers 0``, or after a worker failed)."""
    connections: dict[str, sqlite3.Connection] = {}
    write_as_worker(store, corpus(), connections)
    await store.insert([make_record(q, a, at=T0 + timedelta(minutes=10 + i)) for i, (q, a) in enumerate(CORPUS)])
    assert index_backlog(db)[0] == 0
    assert len(indexed(db, "zeb")) == 6
    for conn in connections.values():
        conn.close()


async def test_the_worker_process_catches_up_when_batches_stop(store: Store, db: sqlite3.Connection) -> None:
    pool = AssemblyPool(1)
    await pool.start()
    try:
        recs = corpus() + corpus(10)
        assert await pool.assemble(recs, store.direct_write(recs)) is True
        deadline = time.monotonic() + 30
        while index_backlog(db)[0] and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert index_backlog(db)[0] == 0
        assert len(indexed(db, "zeb")) == 6
        # And it still answers: the quiet loop gave the pipe back.
        more = corpus(30)
        assert await pool.assemble(more, store.direct_write(more)) is True
        assert (await store.get(more[0].id)) is not None
    finally:
        await pool.close()


async def test_migration_0006_down_indexes_what_is_pending_and_up_again(store: Store, db: sqlite3.Connection) -> None:
    connections: dict[str, sqlite3.Connection] = {}
    recs = corpus()
    write_as_worker(store, recs, connections)
    for conn in connections.values():
        conn.close()

    await _migrate_to(store.engine, "0005", down=True)
    assert db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'recording_search_pending'").fetchone() == (0,)
    assert indexed(db, "zeb") == {r.id for r in recs if zebra(r)}, "what was pending went into the index"
    # 0002's triggers again: the index forgets a deleted recording at once.
    db.execute("DELETE FROM recordings WHERE id = ?", (recs[0].id,))
    assert indexed(db, "zeb") == {r.id for r in recs[1:] if zebra(r)}

    await _migrate_to(store.engine, "head")
    assert index_backlog(db) == (0, 0)
    assert (await answers(store))["zebra"] == sorted(r.id for r in recs[1:] if zebra(r))
