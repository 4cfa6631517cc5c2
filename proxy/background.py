"""The proxy in a background thread with its own event loop, on a free loopback port.

For callers that are not async themselves — the pytest plugin, where a synchronous ``openai``
client in the test's thread must reach the proxy while the test blocks on it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from aiohttp import web

from proxy.app import create_app
from proxy.settings import Settings

__all__ = ["BackgroundProxy"]

T = TypeVar("T")


class BackgroundProxy:
    """``start()`` serves ``settings`` on 127.0.0.1 and a free port; ``call()`` runs a coroutine on
    the proxy's loop (to reach its store or recorder); ``stop()`` shuts it down as serve would."""

    def __init__(self, settings: Settings, *, timeout: float = 30.0) -> None:
        self.settings = settings
        self.timeout = timeout
        self.port = 0
        self._app: web.Application | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """For an OpenAI client's ``base_url``."""
        return self.url + "/v1"

    @property
    def app(self) -> web.Application:
        assert self._app is not None, "not started"
        return self._app

    def start(self) -> BackgroundProxy:
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._main, args=(ready,), name="streamproxy", daemon=True)
        self._thread.start()
        ready.result(self.timeout)
        return self

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the proxy's loop and wait for its result."""
        assert self._loop is not None, "not started"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(self.timeout)

    def stop(self) -> None:
        if self._loop is None or self._stopping is None or self._thread is None:
            return
        self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(self.timeout + self.settings.shutdown_grace)

    def _main(self, ready: concurrent.futures.Future[None]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve(ready))
        except BaseException as exc:  # reported to start() through ready; this thread just ends
            if not ready.done():
                ready.set_exception(exc)
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    async def _serve(self, ready: concurrent.futures.Future[None]) -> None:
        self._stopping = asyncio.Event()
        app = create_app(self.settings)
        runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=self.settings.shutdown_grace)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", self.settings.port).start()
            self.port = runner.addresses[0][1]
            self._app = app
            ready.set_result(None)
            await self._stopping.wait()
        finally:
            await runner.cleanup()
