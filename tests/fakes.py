"""A fake OpenAI-compatible upstream: a real aiohttp server on a loopback port, scripted per path.

A script is a list of steps: ``bytes`` are written at once, a ``float`` sleeps that many
seconds, an ``asyncio.Event`` waits until the test sets it. ``cut=True`` drops the connection
after the last step instead of ending the body cleanly.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

Step = bytes | float | asyncio.Event


@dataclass
class Script:
    steps: list[Step]
    status: int = 200
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "text/event-stream"})
    cut: bool = False
    content_length: bool = False


@dataclass
class Received:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)


class FakeUpstream:
    def __init__(self) -> None:
        self.scripts: dict[str, deque[Script]] = defaultdict(deque)
        self.defaults: dict[str, Script] = {}
        self.received: list[Received] = []
        self.disconnected = asyncio.Event()
        self.url = ""
        self._runner: web.AppRunner | None = None

    def script(self, path: str, script: Script, *, once: bool = False) -> None:
        """Answer ``path`` with ``script`` (every time, or just the next time with ``once``)."""
        if once:
            self.scripts[path].append(script)
        else:
            self.defaults[path] = script

    def sse(self, path: str, events: list[bytes], **kw: Any) -> None:
        self.script(path, Script(steps=list(events), **kw))

    def json(self, path: str, obj: Any, status: int = 200) -> None:
        self.script(path, Script(steps=[orjson.dumps(obj)], status=status, headers={"Content-Type": "application/json"}, content_length=True))

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.received.append(
            Received(request.method, request.path, request.query_string, dict(request.headers), body)
        )
        queue = self.scripts.get(request.path)
        script = queue.popleft() if queue else self.defaults.get(request.path)
        if script is None:
            return web.json_response({"error": {"message": "no script", "type": "fake", "code": None}}, status=404)
        resp = web.StreamResponse(status=script.status, headers=script.headers)
        if script.content_length:
            resp.content_length = sum(len(s) for s in script.steps if isinstance(s, bytes))
        await resp.prepare(request)
        try:
            for step in script.steps:
                if isinstance(step, bytes):
                    await resp.write(step)
                elif isinstance(step, asyncio.Event):
                    await step.wait()
                else:
                    await asyncio.sleep(step)
        except (ConnectionError, asyncio.CancelledError):
            self.disconnected.set()
            raise
        if script.cut:
            assert request.transport is not None
            request.transport.close()
            return resp
        await resp.write_eof()
        return resp

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
