"""Shared fixtures: a fresh database per test, the fake upstream, the real proxy app on a real
port, and the real ``openai`` SDK pointed at it."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import openai
import pytest
from aiohttp import web

from proxy.app import create_app
from proxy.keys import RECORDER, STORE
from proxy.recorder import Recorder
from proxy.settings import Settings
from proxy.store import Store
from tests.fakes import FakeUpstream

API_KEY = "sk-test-streamproxy-SECRET-4242424242"


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'streamproxy.db'}"


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

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    @property
    def store(self) -> Store:
        return self.app[STORE]

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
        running = RunningProxy(app, runner, f"http://127.0.0.1:{port}", settings)
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
