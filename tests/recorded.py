"""Helpers for the replay tests: record every stream shape (``tests/shapes.py``) and a few
wire-level oddities through a real proxy, and fetch
raw responses (a cut body included) the way a client sees them."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from click.testing import CliRunner

from proxy.cli import main

from tests import shapes
from tests.conftest import API_KEY, RunningProxy
from tests.fakes import FakeUpstream, Script
from tests.test_relay import resplit


@dataclass(frozen=True)
class Case:
    """A request and the scripted upstream answer to record for it."""

    name: str
    path: str
    script: Script
    request: dict[str, Any]


def _tagged(name: str, request: dict[str, Any]) -> dict[str, Any]:
    # Edges reuse their shape's request; a tag keeps every case's match key apart.
    return {**request, "user": f"case-{name}"}


def _json(obj: Any, status: int = 200, **headers: str) -> Script:
    return Script(steps=[orjson.dumps(obj)], status=status, headers={"Content-Type": "application/json", **headers}, content_length=True)


def _cases() -> list[Case]:
    cases: list[Case] = []
    for shape in shapes.SHAPES.values():
        cases.append(Case(shape.name, shape.path, Script(steps=list(shape.events)), _tagged(shape.name, shape.request)))
        whole = shape.name + "_whole"
        cases.append(Case(whole, shape.path, _json(shape.full), _tagged(whole, shapes.plain_request(shape))))
    for edge in shapes.EDGES.values():
        upstream_died = edge.name in ("chat_truncated", "responses_cut")
        cases.append(Case(edge.name, edge.path, Script(steps=list(edge.events), cut=upstream_died), _tagged(edge.name, edge.request)))
    chat = shapes.SHAPES["chat_simple"]
    extras = {
        "paced": Script(steps=[e for ev in chat.events for e in (ev, 0.02)]),
        "split_reads": Script(steps=resplit(b"".join(chat.events), [7, 1, 30])),
        "crlf": Script(steps=[e.replace(b"\n", b"\r\n") for e in chat.events]),
        "comment": Script(steps=[b": keep-alive\n\n", *chat.events]),
        "not_utf8": Script(steps=[b"data: \xff\xfe\n\n", *chat.events]),
        "status_429": _json({"error": {"message": "Rate limit", "type": "rate_limit", "code": None}}, 429, **{"Retry-After": "1"}),
    }
    cases += [Case(name, chat.path, script, _tagged(name, chat.request)) for name, script in extras.items()]
    return cases


CASES = _cases()


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


async def record_cases(proxy: RunningProxy, fake: FakeUpstream, names: list[str] | None = None) -> dict[str, Fetched]:
    """Send each case's request once through ``proxy``; what the client received, by case name."""
    out: dict[str, Fetched] = {}
    for case in CASES:
        if names is not None and case.name not in names:
            continue
        fake.script(case.path, case.script, once=True)
        out[case.name] = await fetch("POST", proxy.url + case.path, case.request)
    await proxy.drain()
    return out


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: bytes
    stderr: str


async def cli(*args: str) -> Ran:
    """``streamproxy ARGS`` in this process (click's runner), off the event loop: each command
    runs its own loop, as it does from a shell."""
    result = await asyncio.to_thread(CliRunner().invoke, main, list(args), catch_exceptions=False)
    return Ran(result.exit_code, result.stdout_bytes, result.stderr)
