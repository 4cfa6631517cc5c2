"""Alembic environment. Runs on a connection handed in by streamproxy (``config.attributes["connection"]``),
or, for the plain ``alembic`` command, on an engine built from ``STREAMPROXY_DB``."""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection

from proxy.store.models import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def _standalone() -> None:
    from proxy.settings import DEFAULT_DB, normalize_db_url
    from proxy.store.engine import create_engine

    async def go() -> None:
        engine = create_engine(normalize_db_url(os.environ.get("STREAMPROXY_DB", DEFAULT_DB)))
        async with engine.begin() as conn:
            await conn.run_sync(_run)
        await engine.dispose()

    asyncio.run(go())


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    _standalone()
