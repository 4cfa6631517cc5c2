"""Engines and migrations. Alembic runs inside the event loop through ``run_sync``.

Alembic is imported only when a migration has to run or a revision has to be named: a server
starting on a database already at head never loads it (some 11 MB of memory).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import event, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from proxy.errors import StoreError
from proxy.prepare import json_text
from proxy.settings import mask_url, sqlite_path
from proxy.sqlite_batch import BUSY_TIMEOUT, SESSION_PRAGMAS

__all__ = ["MIGRATIONS_DIR", "create_engine", "current_revision", "head_revision", "migrate", "open_store"]

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent.parent / "migrations"


def create_engine(db_url: str, *, pool_size: int = 5) -> AsyncEngine:
    """An async engine with orjson for JSON columns; SQLite in WAL mode with a busy timeout, new files
    with 16 KB pages."""
    kwargs: dict[str, Any] = {"json_serializer": json_text, "json_deserializer": orjson.loads}
    if db_url.startswith("sqlite"):
        engine = create_async_engine(db_url, connect_args={"timeout": BUSY_TIMEOUT}, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            # Only a new, empty file takes a page size, and only before its first table and before
            # WAL mode; on any other it is a no-op. A chat stream's two rows (reply and search
            # text; packed chunk positions) each come near or past 4 KB and spill into overflow
            # pages; 16 KB pages hold them, and an insert costs less CPU (README, "Performance").
            cur.execute("PRAGMA page_size=16384")
            cur.execute("PRAGMA journal_mode=WAL")
            for pragma in SESSION_PRAGMAS:
                cur.execute(pragma)
            cur.close()

        return engine
    return create_async_engine(
        db_url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True, pool_recycle=1800, **kwargs
    )


def _alembic_config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def _current(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


_REVISION = re.compile(r"""^revision\s*(?::[^=]*)?=\s*["']([^"']+)["']\s*$""", re.MULTILINE)
_PARENT = re.compile(r"""^down_revision\s*(?::[^=]*)?=\s*(?:None|["']([^"']+)["'])\s*$""", re.MULTILINE)


def _head_from_files() -> str | None:
    """The head revision as the migration files state it, read without Alembic; None (ask
    Alembic) unless every file is the plain linear ``revision = "…"`` / ``down_revision = …`` kind."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (MIGRATIONS_DIR / "versions").glob("*.py"):
        if path.name.startswith("_"):
            continue
        source = path.read_text("utf-8")
        revision, parent = _REVISION.search(source), _PARENT.search(source)
        if revision is None or parent is None:
            return None
        revisions.add(revision[1])
        if parent[1]:
            parents.add(parent[1])
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def _stamped(connection: Connection) -> list[str] | None:
    if not inspect(connection).has_table("alembic_version"):
        return None
    return list(connection.execute(text("SELECT version_num FROM alembic_version")).scalars())


async def _at_head(engine: AsyncEngine) -> bool:
    head = _head_from_files()
    if head is None:
        return False
    async with engine.connect() as conn:
        return await conn.run_sync(_stamped) == [head]


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(_current)


# Any constant will do; every streamproxy instance takes the same one.
_MIGRATION_LOCK = 0x5354_5250_5859


async def migrate(engine: AsyncEngine) -> None:
    """Bring the database to head (idempotent).

    On PostgreSQL, instances starting together on one database take turns: a transaction-scoped
    advisory lock makes the second wait for the first, then find the database at head.
    """
    if await _at_head(engine):
        return
    from alembic import command

    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        await conn.run_sync(lambda c: command.upgrade(_alembic_config(c), "head"))


async def open_store(db_url: str, *, create: bool) -> AsyncEngine:
    """Connect (and with ``create`` migrate to head). A missing or unreachable database is a StoreError.

    Read-only commands pass ``create=False``: they never create a database file.
    """
    path = sqlite_path(db_url)
    if path is not None and not create and not path.exists():
        raise StoreError(f"no database at {path} (record something first, or pass --db)")
    if path is not None and create:
        path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(db_url)
    try:
        if create:
            await migrate(engine)
        elif await current_revision(engine) is None:
            raise StoreError(f"database {mask_url(db_url)} has no streamproxy tables (run: streamproxy db upgrade)")
    except (SQLAlchemyError, OSError) as exc:
        await engine.dispose()
        raise StoreError(f"cannot use database {mask_url(db_url)}: {_first_line(exc)}") from exc
    except BaseException:
        await engine.dispose()
        raise
    return engine


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc) or type(exc).__name__
    return text.strip().splitlines()[0]
