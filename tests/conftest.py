"""Shared fixtures: a fresh database per test, the fake upstream, the real proxy app on a real
port, and the real ``openai`` SDK pointed at it."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import openai
import pytest
from aiohttp import web

from proxy.app import create_app
from proxy.keys import RECORDER, STORE
from proxy.recorder import Recorder
from proxy.settings import Settings, mask_url
from proxy.store import Store
from tests.fakes import FakeUpstream
from tests.pgtest import PgDatabase

API_KEY = "sk-test-streamproxy-SECRET-4242424242"


@pytest.fixture(scope="session")
def pg_database() -> Iterator[PgDatabase]:
    """This run's own PostgreSQL database; skipped (failed with STREAMPROXY_REQUIRE_POSTGRES=1) without a server."""
    db = PgDatabase()
    try:
        db.create()
    except (OSError, asyncpg.PostgresError) as exc:
        reason = f"PostgreSQL not reachable at {mask_url(db.admin_dsn)}: {exc}"
        if os.environ.get("STREAMPROXY_REQUIRE_POSTGRES") == "1":
            pytest.fail(reason + " (STREAMPROXY_REQUIRE_POSTGRES=1)", pytrace=False)
        pytest.skip(reason)
    yield db
    db.drop()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database on each backend: a fresh SQLite file, or this run's PostgreSQL database emptied."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'streamproxy.db'}"
    pg: PgDatabase = request.getfixturevalue("pg_database")
    pg.reset()
    return pg.url


@pytest.fixture
def any_db_url(db_url: str, request: pytest.FixtureRequest) -> str:
    """``db_url`` with nothing in it, not even the migration history, for tests that migrate it themselves."""
    if db_url.startswith("postgresql"):
        request.getfixturevalue("pg_database").empty()
    return db_url


@pytest.fixture
async def fake_upstream() -> AsyncIterator[FakeUpstream]:
    fake = FakeUpstream()
    await fake.start()
    yield fake
    await fake.stop()


@dataclasses.dataclass
class RunningProxy:
    app: web.Application
    runner: web.AppRunner
    url: str
    settings: Settings
    # The app's store, opened for the test to read (serving alone, the app opens it on its first read).
    store: Store

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    @property
    def recorder(self) -> Recorder:
        return self.app[RECORDER]

    async def drain(self) -> None:
        await self.recorder.drain(timeout=10)

    async def stop(self) -> None:
        await self.runner.cleanup()


ProxyFactory = Callable[..., Awaitable[RunningProxy]]


@pytest.fixture
async def proxy_factory(db_url: str, fake_upstream: FakeUpstream, tmp_path: Path) -> AsyncIterator[ProxyFactory]:
    started: list[RunningProxy] = []

    async def start(**overrides: Any) -> RunningProxy:
        kw: dict[str, Any] = {"upstream": fake_upstream.url, "db": db_url, "port": 0, "spool_dir": tmp_path / "spool"}
        kw.update(overrides)
        settings = Settings(**kw)
        app = create_app(settings)
        runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=settings.shutdown_grace)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        running = RunningProxy(app, runner, f"http://127.0.0.1:{port}", settings, await app[STORE].get())
        started.append(running)
        return running

    yield start
    for p in started:
        await p.stop()


@pytest.fixture
async def proxy(proxy_factory: ProxyFactory) -> RunningProxy:
    return await proxy_factory()


@pytest.fixture
async def openai_client(proxy: RunningProxy) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=proxy.base_url, api_key=API_KEY, max_retries=0)
    yield client
    await client.close()
