"""A PostgreSQL database of its own for each test run.

Several test runs share one server, so each run creates a database with a random name,
empties it before every test and drops it at the end. The server comes from
``STREAMPROXY_TEST_POSTGRES`` (default: the ``test`` database at 127.0.0.1:5432, user postgres).
The admin work runs on a private event loop in a thread, so sync fixtures can do it
without touching the test's own loop.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
from yarl import URL

__all__ = ["ADMIN_DSN", "PgDatabase", "run_in_thread", "run_sql", "stored_bytes"]

ADMIN_DSN = os.environ.get("STREAMPROXY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")

T = TypeVar("T")


def run_in_thread(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion on a fresh event loop in another thread."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(make())
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller below
            box["error"] = exc

    thread = threading.Thread(target=target, name="pgtest")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


async def run_sql(dsn: str, *sql: str) -> None:
    """Run the statements in order, on one connection opened for them."""
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        for statement in sql:
            await conn.execute(statement)
    finally:
        await conn.close()


class PgDatabase:
    """One database on the test server, named so that concurrent runs never collide."""

    def __init__(self, admin_dsn: str = ADMIN_DSN) -> None:
        self.admin_dsn = admin_dsn
        self.name = f"streamproxy_test_{os.getpid()}_{secrets.token_hex(6)}"
        self.dsn = str(URL(admin_dsn).with_path("/" + self.name))

    @property
    def address(self) -> tuple[str, int]:
        """The server's host and port."""
        url = URL(self.dsn)
        return url.host or "127.0.0.1", url.port or 5432

    @property
    def url(self) -> str:
        """The SQLAlchemy URL streamproxy takes."""
        return "postgresql+asyncpg://" + self.dsn.split("://", 1)[1]

    def url_via(self, host: str, port: int) -> str:
        """The same database reached through another address (e.g. a TCP relay)."""
        return "postgresql+asyncpg://" + str(URL(self.dsn).with_host(host).with_port(port)).split("://", 1)[1]

    def create(self) -> None:
        run_in_thread(lambda: run_sql(self.admin_dsn, f'CREATE DATABASE "{self.name}"'))

    def drop(self) -> None:
        run_in_thread(lambda: run_sql(self.admin_dsn, f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))

    def reset(self) -> None:
        """Empty every table but keep the schema (fast; the first test of a run starts from nothing)."""
        run_in_thread(self._truncate)

    def empty(self) -> None:
        """Drop every table, the migration history too: an empty database."""
        run_in_thread(
            lambda: run_sql(self.dsn, "SET lock_timeout = '10s'", "DROP SCHEMA public CASCADE", "CREATE SCHEMA public")
        )

    async def _truncate(self) -> None:
        conn = await asyncpg.connect(self.dsn, timeout=5)
        try:
            await conn.execute("SET lock_timeout = '10s'")
            tables = await conn.fetch(
                "SELECT quote_ident(tablename) AS t FROM pg_tables "
                "WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
            )
            if tables:
                await conn.execute(f"TRUNCATE {', '.join(r['t'] for r in tables)} CASCADE")
        finally:
            await conn.close()


async def stored_bytes(db_url: str) -> dict[str, bytes]:
    """Everything a database holds, as raw bytes per file (SQLite) or per table (PostgreSQL).

    For checking that a secret never reached storage, whatever the backend.
    """
    if db_url.startswith("sqlite"):
        db_file = Path(db_url.split(":///", 1)[1])
        return {p.name: p.read_bytes() for p in db_file.parent.iterdir() if p.name.startswith(db_file.name)}
    conn = await asyncpg.connect("postgresql://" + db_url.split("://", 1)[1], timeout=5)
    try:
        out: dict[str, bytes] = {}
        for t in await conn.fetch("SELECT quote_ident(tablename) AS t FROM pg_tables WHERE schemaname = 'public'"):
            rows = await conn.fetch(f"SELECT * FROM {t['t']}")
            out[t["t"]] = b"\n".join(
                v if isinstance(v, bytes) else str(v).encode() for row in rows for v in row.values()
            )
        return out
    finally:
        await conn.close()
