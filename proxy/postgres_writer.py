"""Recordings into PostgreSQL from the serving process, with asyncpg alone.

The serving process records without loading SQLAlchemy (``proxy/lazy_store.py``): on PostgreSQL
it sends the statement ``proxy/rows.py`` makes for a batch (one, so one transaction) through one
asyncpg connection of its own, and reconnects after a connection is lost. SQLAlchemy's pool would check the
connection out, ping it and begin, each a round trip that waits for a turn of serve's busy loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from proxy.record import Record
from proxy.rows import postgres_statements

if TYPE_CHECKING:
    import asyncpg

__all__ = ["PostgresWriter", "asyncpg_dsn", "is_postgres"]

_CONNECT_TIMEOUT = 10.0


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
    connection opened when first needed. Errors are asyncpg's (or ``OSError``); the recorder
    tells an outage from a record the database refuses (``proxy/recorder.py``)."""

    def __init__(self, db_url: str) -> None:
        # The URL holds the password: kept here, handed to asyncpg, never logged.
        self._dsn = asyncpg_dsn(db_url)
        self._conn: asyncpg.Connection[Any] | None = None
        self._turn = asyncio.Lock()

    async def insert(self, records: Sequence[Record]) -> None:
        """Insert in one transaction; a recording whose id is already stored is left as it is."""
        if not records:
            return
        ((sql, params),) = postgres_statements(records)
        async with self._turn:
            conn = await self._connection()
            try:
                # One statement is one transaction: no BEGIN and COMMIT, each a round trip more.
                await conn.execute(sql, *params)
            except BaseException:
                if conn.is_closed():
                    self._conn = None  # lost: the next batch connects again
                raise

    async def _connection(self) -> asyncpg.Connection[Any]:
        if self._conn is None or self._conn.is_closed():
            import asyncpg  # here: a serving process on SQLite never needs it

            self._conn = await asyncpg.connect(self._dsn, timeout=_CONNECT_TIMEOUT)
        return self._conn

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            await conn.close()
