"""Every query streamproxy runs, behind one small class."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import Select, delete, func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker

from proxy.worker_frames import WriteTo
from proxy.filters import Filters
from proxy.postgres_index import DEFERS_INDEX, PENDING_TABLE, index_statement
from proxy.prepare import unpack_chunks
from proxy.record import Outcome, Record
from proxy.rows import postgres_statements, sqlite_file, sqlite_statements, utc, write_to
from proxy.sqlite_batch import ALL, Statements, index_statements, write_batch
from proxy.store.models import RecordingBodyRow, RecordingRow
from proxy.store.search import newest_matching, search_clause

__all__ = ["Store", "apply_filters"]


def apply_filters(stmt: Select[Any], f: Filters) -> Select[Any]:
    r = RecordingRow
    if f.model:
        stmt = stmt.where(r.model == f.model)
    if f.outcome:
        stmt = stmt.where(r.outcome == f.outcome)
    if f.path:
        stmt = stmt.where(r.path == f.path)
    if f.key:
        stmt = stmt.where(r.key_fingerprint == f.key)
    if f.since:
        stmt = stmt.where(r.started_at >= utc(f.since))
    if f.until:
        stmt = stmt.where(r.started_at < utc(f.until))
    if f.search:
        stmt = stmt.where(search_clause(f.search))
    return stmt


def _to_record(row: RecordingRow, body: RecordingBodyRow | None) -> Record:
    chunks: list[bytes] = []
    offsets: list[float] = []
    if body is not None:
        chunks, offsets = unpack_chunks(body.body, body.encoding, body.chunk_ends, body.chunk_offsets)
    return Record(
        id=row.id,
        started_at=utc(row.started_at),
        ended_at=utc(row.ended_at) if row.ended_at else None,
        method=row.method,
        path=row.path,
        query=row.query,
        model=row.model,
        stream=row.stream,
        key_fingerprint=row.key_fingerprint,
        match_key=row.match_key,
        request_headers=row.request_headers or {},
        request_body=row.request_body,
        status=row.status,
        response_headers=row.response_headers or {},
        chunks=chunks,
        offsets_ms=offsets,
        ttfb_ms=row.ttfb_ms,
        duration_ms=row.duration_ms,
        outcome=Outcome(row.outcome),
        error=row.error,
        reply=row.reply,
        notes=list(row.notes or []),
        assembled=True,
    )


class Store:
    """Reads and writes recordings. One per process, built on one engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._dialect = engine.dialect.name
        self._pending_table: bool | None = None
        # From the URL's parts: SQLAlchemy's rendering of it quotes a name like ``:memory:``.
        url = engine.url
        plain = self._dialect == "sqlite" and not url.query
        self._file = sqlite_file(f"sqlite:///{url.database or ''}") if plain else None

    def direct_write(self, records: Sequence[Record]) -> WriteTo | None:
        """The rows of ``records`` (none assembled yet) for an assembly worker to fill in and write
        into the SQLite file itself; None on PostgreSQL or an in-memory database."""
        return None if self._file is None else write_to(self._file, records)

    def _statements(self, records: Sequence[Record]) -> Statements:
        return sqlite_statements(records) if self._dialect == "sqlite" else postgres_statements(records)

    async def insert(self, records: Sequence[Record]) -> None:
        """Insert in one transaction; a recording whose id is already stored is left as it is."""
        if not records:
            return
        statements = self._statements(records)
        async with self.engine.connect() as conn:
            if await self._defers_search_index(conn):
                # Written here, recordings join the search index at once, with any an assembly
                # worker or serve left pending (migrations 0006, 0008): this process has no quiet
                # moments to wait for.
                statements += index_statements(ALL) if self._dialect == "sqlite" else [index_statement(None)]
            driver = (await conn.get_raw_connection()).driver_connection
            # aiosqlite runs each statement in its thread and hands the result back through the
            # event loop: under load every hand-over waits for a busy loop, and a batch took a
            # second. Its (private) ``_execute`` runs the whole batch there in one hand-over.
            # Private names: if a later aiosqlite moves them, this falls back to the public way below.
            in_thread = getattr(driver, "_execute", None)
            db = getattr(driver, "_connection", None)
            if self._dialect == "sqlite" and callable(in_thread) and isinstance(db, sqlite3.Connection):
                try:
                    await in_thread(write_batch, db, statements)
                except sqlite3.Error as exc:
                    raise DBAPIError.instance(statements[0][0], None, exc, sqlite3.Error) from exc
                return
            async with conn.begin():
                for sql, params in statements:
                    await conn.exec_driver_sql(sql, params)

    async def _defers_search_index(self, conn: AsyncConnection) -> bool:
        """Whether the database is at migration 0006 (SQLite) or 0008 (PostgreSQL) or later
        (tests write at earlier ones)."""
        if self._pending_table is None:
            if self._dialect == "sqlite":
                found = await conn.exec_driver_sql(f"SELECT 1 FROM sqlite_master WHERE name = '{PENDING_TABLE}'")
                self._pending_table = found.first() is not None
            else:
                found = await conn.exec_driver_sql(DEFERS_INDEX)
                self._pending_table = bool(found.scalar())
            await conn.commit()  # ends the transaction the check began: the write begins its own
        return self._pending_table

    async def get(self, rec_id: str, *, chunks: bool = True) -> Record | None:
        async with self.sessions() as s:
            row = await s.get(RecordingRow, rec_id)
            if row is None:
                return None
            body = await s.get(RecordingBodyRow, rec_id) if chunks else None
            return _to_record(row, body)

    async def list_recordings(self, filters: Filters, *, limit: int = 50, cursor: str | None = None) -> tuple[list[Record], str | None]:
        """Newest first. The cursor is the last id of the previous page."""

        def newest(searched: bool) -> Select[Any]:
            stmt = apply_filters(select(RecordingRow), filters if searched else replace(filters, search=None))
            if cursor:
                stmt = stmt.where(RecordingRow.id < cursor)
            return stmt.order_by(RecordingRow.id.desc())

        async with self.sessions() as s:
            rows = list(await newest_matching(s, self._dialect, filters.search, newest, limit + 1))
        more = len(rows) > limit
        rows = rows[:limit]
        return [_to_record(r, None) for r in rows], (rows[-1].id if more and rows else None)

    async def ids_for_match_key(self, key: str) -> list[str]:
        """Ids of the recordings with this match key, oldest first (the n-th request gets the n-th)."""
        stmt = select(RecordingRow.id).where(RecordingRow.match_key == key).order_by(RecordingRow.id)
        async with self.sessions() as s:
            return list((await s.scalars(stmt)).all())

    async def candidates(self, method: str, path: str, limit: int = 200) -> list[Record]:
        """Recent recordings of the same method and path, newest first (for naming the nearest on a miss)."""
        stmt = (
            select(RecordingRow)
            .where(RecordingRow.method == method, RecordingRow.path == path)
            .order_by(RecordingRow.id.desc())
            .limit(limit)
        )
        async with self.sessions() as s:
            return [_to_record(r, None) for r in (await s.scalars(stmt)).all()]

    async def count(self) -> int:
        async with self.sessions() as s:
            return int(await s.scalar(select(func.count()).select_from(RecordingRow)) or 0)

    async def count_before(self, cutoff: datetime) -> int:
        """How many recordings started before ``cutoff``."""
        stmt = select(func.count()).select_from(RecordingRow).where(RecordingRow.started_at < utc(cutoff))
        async with self.sessions() as s:
            return int(await s.scalar(stmt) or 0)

    async def delete_before(
        self, cutoff: datetime, *, batch_size: int = 1000, progress: Callable[[int], None] | None = None
    ) -> int:
        """Delete recordings started before ``cutoff``, oldest first; returns how many.

        One short transaction per batch, so writers (other instances too) wait at most one
        batch for their locks, and an interrupted prune keeps what it already deleted.
        ``progress`` is called with each batch's count.
        """
        cutoff = utc(cutoff)
        total = 0
        while True:
            async with self.engine.begin() as conn:
                ids = list(
                    (
                        await conn.scalars(
                            select(RecordingRow.id)
                            .where(RecordingRow.started_at < cutoff)
                            .order_by(RecordingRow.started_at)
                            .limit(batch_size)
                        )
                    ).all()
                )
                if not ids:
                    return total
                await conn.execute(delete(RecordingBodyRow).where(RecordingBodyRow.id.in_(ids)))
                result = await conn.execute(delete(RecordingRow).where(RecordingRow.id.in_(ids)))
            deleted = int(result.rowcount or 0)
            total += deleted
            if progress is not None:
                progress(deleted)
