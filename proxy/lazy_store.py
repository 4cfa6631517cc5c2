"""The serving process's store, opened when something first needs it.

Recording, nothing on a stream's path reads the database: on a SQLite file the assembly worker
writes it, on PostgreSQL serve writes through asyncpg alone (``proxy/postgres_writer.py``). The
serving process then never loads SQLAlchemy, some 24 MB of its memory (README, "Performance"),
until a read comes (the audit API, replay by id) or, on SQLite, the recorder has to write a batch
itself (a worker that failed). Modes that replay, an in-memory database and SQLite with
``--assembly-workers 0`` open it at startup (``app._store_needed_at_start``).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from proxy.worker_frames import WriteTo
from proxy.errors import ConfigError, StoreError
from proxy.postgres_writer import PostgresWriter, is_postgres
from proxy.record import Record
from proxy.rows import sqlite_file, write_to

if TYPE_CHECKING:
    from proxy.store import Store

__all__ = ["LazyStore"]

log = logging.getLogger("streamproxy.store")


class LazyStore:
    """A :class:`~proxy.store.Store` on ``db_url``, opened (and migrated, if it has to be) on
    first use; and what the recorder needs from a store without opening one."""

    def __init__(self, db_url: str) -> None:
        self.db_url = db_url
        self._file = sqlite_file(db_url)
        self._postgres = PostgresWriter(db_url) if is_postgres(db_url) else None
        self._store: Store | None = None
        self._opening = asyncio.Lock()

    async def get(self) -> Store:
        """The store, opened now if it is not yet; raises ``StoreError`` if the database cannot
        be used (and tries again at the next call)."""
        if self._store is None:
            async with self._opening:
                if self._store is None:
                    from proxy.store import Store, open_store

                    self._store = Store(await open_store(self.db_url, create=True))
        return self._store

    async def prepare(self) -> None:
        """Connect and migrate to head as opening would, in a child process
        (``proxy.store.preflight``) that loads SQLAlchemy and Alembic so that this one does not.
        Raises ``StoreError`` (or ``ConfigError``, for the URL) with the child's one line.

        A process that has SQLAlchemy loaded already (one embedding the app, the tests) opens
        the store instead: there is nothing to keep out of it, and a child costs a second.

        On PostgreSQL it then opens serve's own recording connection (``PostgresWriter.warm``)."""
        if "sqlalchemy" in sys.modules:
            await self.get()
        else:
            level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
            check = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "proxy.store.preflight", level,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            )
            # On stdin, never in the arguments, which any user of the machine can read: the URL may hold a password.
            out, _ = await check.communicate(self.db_url.encode())
            if check.returncode:
                message = out.decode(errors="replace").strip() or f"the database check failed (exit {check.returncode})"
                raise (ConfigError if check.returncode == 2 else StoreError)(message)
        if self._postgres is not None:
            try:
                await self._postgres.warm()
            except Exception as exc:  # noqa: BLE001 - the database passed its check: the first batch connects again
                log.warning("could not open the recording connection yet (the first batch tries again): %s", exc)

    def direct_write(self, records: Sequence[Record]) -> WriteTo | None:
        """The rows of ``records`` for an assembly worker to write into the SQLite file itself;
        None on PostgreSQL or an in-memory database (``Store.direct_write``, without a store)."""
        return None if self._file is None else write_to(self._file, records)

    async def insert(self, records: Sequence[Record]) -> None:
        if self._postgres is not None:
            await self._postgres.insert(records)
        else:
            await (await self.get()).insert(records)

    async def close(self) -> None:
        if self._postgres is not None:
            await self._postgres.close()
        store, self._store = self._store, None
        if store is not None:
            await store.engine.dispose()
