"""Recordings into PostgreSQL from the serving process, with asyncpg alone.

The serving process records without loading SQLAlchemy (``proxy/lazy_store.py``): on PostgreSQL
it sends the statement ``proxy/rows.py`` makes for a batch (one, so one transaction) through one
asyncpg connection of its own, and reconnects after a connection is lost. SQLAlchemy's pool would check the
connection out, ping it and begin, each a round trip that waits for a turn of serve's busy loop.

It also keeps the search index up (migration 0008, ``proxy.postgres_index``): what it writes is
only listed as pending, and it moves pending recordings into the index once no batch has come
for ``QUIET_SECONDS``, a slice at a time until a batch comes, or with each batch once it has
left more than ``BACKLOG_ROWS`` waiting. A burst of streams thus costs the database no trigram
index upkeep while it is relayed.

A small batch (``LIGHT_BATCH`` or fewer: it waited out the recorder's linger, so the load is light)
goes in as statements of ``SLICE`` recordings, pausing after each as long as it took. The server
inserts ~45 recordings in one burst of some 4 ms on one of the two cores the relay, its client and
upstream share, and at one stream that burst set the p99 of time to first byte (as the assembly
worker's did, ``proxy.assembly_worker``). Under load batches are full and go in whole: a statement
a batch is what keeps the database's CPU a recording low (slices of 8 cost it 50-60 % more).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from proxy.postgres_index import BACKLOG_ROWS, DEFERS_INDEX, INDEX_SLICE, QUIET_SECONDS, index_statement
from proxy.record import Record
from proxy.rows import postgres_statements

if TYPE_CHECKING:
    import asyncpg

__all__ = ["PostgresWriter", "asyncpg_dsn", "is_postgres"]

log = logging.getLogger("streamproxy.store")

_CONNECT_TIMEOUT = 10.0
# Alternating pairs at one stream (bench, batches of ~45), against whole batches: slices of 8 took
# the p99 of time to first byte 25 % down and of chunk latency 26 % (5 pairs), at 50-60 % more of
# the database server's CPU a recording (~40 µs); slices of 16: 22 % down, +32 % (6 pairs).
LIGHT_BATCH = 48
SLICE = 8


def is_postgres(db_url: str) -> bool:
    return db_url.startswith(("postgresql://", "postgresql+asyncpg://", "postgres://"))


def asyncpg_dsn(db_url: str) -> str:
    """The SQLAlchemy URL (``postgresql+asyncpg://…``) as asyncpg takes it. SQLAlchemy's
    ``?ssl=require`` is asyncpg's ``sslmode`` (asyncpg would send a query parameter it does not
    know to the server as a setting)."""
    scheme, sep, rest = db_url.partition("://")
    if not scheme.startswith("postgres"):
        return db_url
    base, mark, query = rest.partition("?")
    params = ["sslmode" + p[3:] if p.startswith("ssl=") else p for p in query.split("&") if p]
    return f"postgresql{sep}{base}" + (mark + "&".join(params) if params else "")


class PostgresWriter:
    """Inserts batches of recordings, one statement each (``rows.postgres_statements``), on a
    connection opened when first needed, and adds them to the search index later. Errors are
    asyncpg's (or ``OSError``); the recorder tells an outage from a record the database refuses
    (``proxy/recorder.py``). The index's upkeep never fails a batch: it logs and tries again later."""

    def __init__(self, db_url: str, *, quiet: float = QUIET_SECONDS, backlog: int = BACKLOG_ROWS) -> None:
        # The URL holds the password: kept here, handed to asyncpg, never logged.
        self._dsn = asyncpg_dsn(db_url)
        self._conn: asyncpg.Connection[Any] | None = None
        self._turn = asyncio.Lock()
        self._quiet = quiet
        self._backlog = backlog
        self._waiting = 0  # recordings this writer has left pending (other instances add theirs)
        self._last_batch = 0.0  # the loop's time when the latest batch came, or went in
        self._inserting = 0  # batches being inserted, or waiting for the connection to be
        self._deferred: bool | None = None  # whether the database is at migration 0008 or later
        self._timer: asyncio.TimerHandle | None = None
        self._indexing: asyncio.Task[None] | None = None

    async def warm(self) -> None:
        """Connect, and send the insert once with no rows, so that the server has parsed it and
        asyncpg knows its parameters' types before the first batch. Under load a round trip
        waits for a turn of serve's loop (~0.15 s at 500 streams): the first batch, connecting
        and preparing on its own (some eight round trips), took 2.4 s, and recordings piled up
        behind it for the rest of the burst. Raises what connecting raises."""
        ((sql, params),) = postgres_statements([])
        async with self._turn:
            conn = await self._connection()
            await conn.execute(sql, *params)

    async def insert(self, records: Sequence[Record]) -> None:
        """Insert in one transaction, or a small batch in slices, a transaction each (the
        module's docstring); a recording whose id is already stored is left as it is, so a batch
        that failed half-way can be inserted again whole."""
        if len(records) <= SLICE or len(records) > LIGHT_BATCH:
            await self._insert(records)
            return
        loop = asyncio.get_running_loop()
        took = 0.0
        for i in range(0, len(records), SLICE):
            if took:  # none before the first
                await asyncio.sleep(took)
            started = loop.time()
            await self._insert(records[i : i + SLICE])
            took = loop.time() - started

    async def _insert(self, records: Sequence[Record]) -> None:
        if not records:
            return
        ((sql, params),) = postgres_statements(records)
        loop = asyncio.get_running_loop()
        self._last_batch = loop.time()
        self._inserting += 1
        try:
            async with self._turn:
                conn = await self._connection()
                try:
                    # One statement is one transaction: no BEGIN and COMMIT, each a round trip more.
                    await conn.execute(sql, *params)
                except BaseException:
                    if conn.is_closed():
                        self._conn = None  # lost: the next batch connects again
                    raise
                self._waiting += len(records)
                if self._waiting > self._backlog:
                    # Twice what came in, until the backlog is back under its bound.
                    await self._index(conn, 2 * len(records))
        finally:
            self._inserting -= 1
            # Quiet is counted from when the batch is in: an insert slower than ``quiet`` is not a pause.
            self._last_batch = loop.time()
        if self._timer is None and self._indexing is None:
            self._arm()

    def _arm(self) -> None:
        """Look again once ``quiet`` seconds have passed since the latest batch."""
        self._timer = asyncio.get_running_loop().call_at(self._last_batch + self._quiet, self._when_quiet)

    def _when_quiet(self) -> None:
        if self._inserting:  # not quiet: the insert re-arms this when it is done
            self._timer = None
            return
        if asyncio.get_running_loop().time() < self._last_batch + self._quiet:  # a batch came meanwhile
            self._arm()
            return
        self._timer = None
        self._indexing = asyncio.create_task(self._index_while_quiet())

    async def _index_while_quiet(self) -> None:
        """Slices of pending recordings into the index until none is left or a batch comes."""
        since = self._last_batch
        try:
            while self._last_batch == since:
                async with self._turn:
                    if self._inserting:  # a batch came while this waited for the connection: it goes first
                        return
                    moved = await self._index(await self._connection(), INDEX_SLICE)
                if moved < INDEX_SLICE:
                    return
        except Exception as exc:  # noqa: BLE001 - connecting failed; a background task logs, the next batch tries again
            log.warning("search index upkeep: cannot reach the database: %s", exc)
        finally:
            self._indexing = None
            if self._last_batch != since and self._timer is None:
                self._arm()

    async def _index(self, conn: asyncpg.Connection[Any], most: int) -> int:
        """Move up to ``most`` pending recordings into the search index: how many it moved."""
        import asyncpg

        try:
            if self._deferred is None:
                self._deferred = bool(await conn.fetchval(DEFERS_INDEX))
            if not self._deferred:  # a database before 0008: its index on recordings keeps up by itself
                return 0
            sql, params = index_statement(most)
            moved = int(await conn.fetchval(sql, *params))
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            if conn.is_closed():
                self._conn = None
            log.warning("search index upkeep failed (recordings wait for the next try): %s", exc)
            return 0
        self._waiting = 0 if moved < most else max(0, self._waiting - moved)
        return moved

    async def _connection(self) -> asyncpg.Connection[Any]:
        if self._conn is None or self._conn.is_closed():
            import asyncpg  # here: a serving process on SQLite never needs it

            self._conn = await asyncpg.connect(self._dsn, timeout=_CONNECT_TIMEOUT)
        return self._conn

    async def close(self) -> None:
        """Stop the index upkeep (what is pending waits for the next writer) and disconnect."""
        task = self._indexing
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._timer is not None:  # after the task: it re-arms if a batch came meanwhile
            self._timer.cancel()
            self._timer = None
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            await conn.close()
