"""A throwaway PostgreSQL database per test, on the local server (127.0.0.1:5432, user postgres).

Without a server the test skips with a reason; with ``STREAMPROXY_REQUIRE_POSTGRES=1`` (CI) it fails.
The fixtures are synchronous (their own short event loop) so parametrized fixtures can pick them
with ``request.getfixturevalue``.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


async def _admin(statement: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN, timeout=5)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """``postgresql+asyncpg://…`` of a new, empty database, dropped after the test."""
    name = "sp_test_" + secrets.token_hex(6)
    try:
        asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        if os.environ.get("STREAMPROXY_REQUIRE_POSTGRES"):  # CI: these tests must run
            pytest.fail(f"no PostgreSQL at 127.0.0.1:5432: {exc}")
        pytest.skip(f"no PostgreSQL at 127.0.0.1:5432: {exc}")
    yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgres"])
def any_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using it runs twice: on a SQLite file and on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'any.db'}"
    return str(request.getfixturevalue("pg_url"))
