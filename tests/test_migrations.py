"""Alembic migrations on both backends: empty to head matches the models, and ``serve`` migrates by itself."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

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
