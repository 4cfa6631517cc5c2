"""Helpers for the replay tests: record every stream shape through a real proxy, and fetch
raw responses (a cut body included) the way a client sees them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from tests.conftest import API_KEY, RunningProxy
from tests.fakes import FakeUpstream, Script
from tests.test_relay import PIECES, chat_events


@dataclass(frozen=True)
class Shape:
    name: str
    path: str
    script: Script
    request: dict[str, Any]


def _chat(name: str, script: Script, stream: bool = True) -> Shape:
    req = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"shape {name}"}], "stream": stream}
    return Shape(name, "/v1/chat/completions", script, req)


def _sse(events: list[bytes], **kw: Any) -> Script:
    return Script(steps=list(events), **kw)


def _responses_events() -> list[bytes]:
    resp = {"id": "resp_1", "object": "response", "status": "in_progress", "model": "gpt-4o-mini", "output": []}
    done = {**resp, "status": "completed"}
    delta = {"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": "Hi"}
    return [
        b"event: response.created\ndata: " + orjson.dumps({"type": "response.created", "response": resp}) + b"\n\n",
        b"event: response.output_text.delta\ndata: " + orjson.dumps(delta) + b"\n\n",
        b"event: response.completed\ndata: " + orjson.dumps({"type": "response.completed", "response": done}) + b"\n\n",
    ]


SHAPES: list[Shape] = [
    _chat("chat", _sse(chat_events(PIECES))),
    _chat("paced", Script(steps=[e for ev in chat_events(["a", "b"]) for e in (ev, 0.05)])),
    _chat("crlf", _sse([e.replace(b"\n", b"\r\n") for e in chat_events(["x"])])),
    _chat("comment", _sse([b": keep-alive\n\n", *chat_events(["y"])])),
    _chat("not-utf8", _sse([b"data: \xff\xfe\n\n", *chat_events(["z"])])),
    _chat("error-event", _sse([*chat_events(["half"])[:2], b'data: {"error": {"message": "overloaded", "type": "server_error", "code": null}}\n\n'])),
    _chat("cut", _sse(chat_events(["cut", "short"])[:3], cut=True)),
    _chat(
        "json",
        Script(
            steps=[orjson.dumps({"id": "chatcmpl-9", "object": "chat.completion", "choices": []})],
            headers={"Content-Type": "application/json"},
            content_length=True,
        ),
        stream=False,
    ),
    _chat(
        "429",
        Script(
            steps=[orjson.dumps({"error": {"message": "Rate limit", "type": "rate_limit", "code": None}})],
            status=429,
            headers={"Content-Type": "application/json", "Retry-After": "1"},
            content_length=True,
        ),
        stream=False,
    ),
    Shape(
        "completions",
        "/v1/completions",
        _sse([b'data: {"id":"cmpl-1","object":"text_completion","choices":[{"index":0,"text":"Hi","finish_reason":null}],"model":"m"}\n\n', b"data: [DONE]\n\n"]),
        {"model": "m", "prompt": "shape completions", "stream": True},
    ),
    Shape("responses", "/v1/responses", _sse(_responses_events()), {"model": "gpt-4o-mini", "input": "shape responses", "stream": True}),
]


@dataclass(frozen=True)
class Fetched:
    status: int
    headers: dict[str, str]
    body: bytes
    cut: bool

    @property
    def recording_id(self) -> str:
        return self.headers["X-Recording-Id"]


async def fetch(method: str, url: str, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> Fetched:
    """One request; the whole body as received, and whether it broke off before a clean end."""
    hdrs = {"Authorization": f"Bearer {API_KEY}", **(headers or {})}
    async with aiohttp.ClientSession() as s:
        async with s.request(method, url, json=body, headers=hdrs) as r:
            got = bytearray()
            cut = False
            try:
                async for data in r.content.iter_any():
                    got += data
            except aiohttp.ClientPayloadError:
                cut = True
            return Fetched(r.status, dict(r.headers), bytes(got), cut)


async def record_shapes(proxy: RunningProxy, fake: FakeUpstream, shapes: list[Shape] = SHAPES) -> dict[str, Fetched]:
    """Send each shape's request once through ``proxy``; what the client received, by shape name."""
    out: dict[str, Fetched] = {}
    for shape in shapes:
        fake.script(shape.path, shape.script, once=True)
        out[shape.name] = await fetch("POST", proxy.url + shape.path, shape.request)
    await proxy.drain()
    return out
