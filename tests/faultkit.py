"""Tools for injecting faults for real: raw sockets, listeners that never answer, a held SQLite lock,
and waiting on a condition (never on a fixed sleep)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import socket
import sqlite3
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import aiohttp
import openai
import orjson
import pytest

from proxy.record import Record
from tests.conftest import RunningProxy
from tests.fakes import FakeUpstream
from tests.test_relay import REQUEST, chat_events

SIOCGIFADDR = 0x8915


async def wait_until(predicate: Callable[[], bool | Awaitable[bool]], timeout: float = 20.0, what: str = "condition") -> None:
    """Poll ``predicate`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


E = TypeVar("E", bound=openai.APIStatusError)


async def sdk_error(base_url: str, api_key: str, expected: type[E]) -> E:
    """The error the real SDK raises for a chat stream through ``base_url``."""
    client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0)
    try:
        with pytest.raises(expected) as caught:
            await client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True)
    finally:
        await client.close()
    return caught.value


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def unaccepting_listener() -> Iterator[int]:
    """A loopback listener whose accept queue is full, so a new connect's SYN is dropped and the
    connect hangs: a connect timeout, reproduced without leaving loopback."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = int(listener.getsockname()[1])
    fillers: list[socket.socket] = []
    try:
        for _ in range(16):  # fill the accept queue until a connect no longer completes
            s = socket.socket()
            fillers.append(s)
            s.settimeout(0.2)
            try:
                s.connect(("127.0.0.1", port))
            except TimeoutError:
                break
        else:
            raise RuntimeError("the accept queue never filled up; cannot reproduce a connect timeout here")
        yield port
    finally:
        for s in fillers:
            s.close()
        listener.close()


@dataclass
class SilentUpstream:
    """What a silent upstream saw: the bytes it read, and whether the caller went away."""

    port: int
    received: list[bytes] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)


@contextlib.asynccontextmanager
async def silent_server(*, hang_up: bool = False) -> AsyncIterator[SilentUpstream]:
    """A loopback server that reads a request and never answers (or, with ``hang_up``, closes
    the connection as soon as the request has arrived)."""
    writers: list[asyncio.StreamWriter] = []
    state = SilentUpstream(port=0)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                state.received.append(data)
                if hang_up:
                    writer.close()
                    return
        state.closed.set()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    state.port = int(server.sockets[0].getsockname()[1])
    try:
        yield state
    finally:
        server.close()
        for w in writers:
            w.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def trap_server() -> AsyncIterator[tuple[int, list[str]]]:
    """A loopback listener that notes every connection made to it: where the proxy must never go."""
    contacts: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        contacts.append(str(writer.get_extra_info("peername")))
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1]), contacts
    finally:
        server.close()
        await server.wait_closed()


async def raw_request(port: int, data: bytes, *, host: str = "127.0.0.1", timeout: float = 10.0) -> bytes:
    """Write ``data`` on a fresh socket and read until the server closes or goes quiet."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(data)
        await writer.drain()
        out = b""
        with contextlib.suppress(TimeoutError, ConnectionError):
            while chunk := await asyncio.wait_for(reader.read(65536), timeout):
                out += chunk
                if _complete(out):
                    break
        return out
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def _complete(resp: bytes) -> bool:
    head, sep, body = resp.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    return body.endswith(b"0\r\n\r\n")


def status_of(resp: bytes) -> int:
    return int(resp.split(b" ", 2)[1])


def json_body(resp: bytes) -> dict[str, object]:
    body = resp.partition(b"\r\n\r\n")[2]
    obj = orjson.loads(body)
    assert isinstance(obj, dict)
    return obj


@contextlib.contextmanager
def sqlite_write_lock(db_file: Path) -> Iterator[sqlite3.Connection]:
    """Another connection holding SQLite's write lock: every other writer waits, then fails."""
    conn = sqlite3.connect(db_file, timeout=5, isolation_level=None)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        yield conn
        conn.execute("ROLLBACK")
    finally:
        conn.close()


def sqlite_files(db_file: Path) -> list[Path]:
    """The database file and its WAL and shared-memory companions."""
    return [p for p in db_file.parent.iterdir() if p.name.startswith(db_file.name) and p.is_file()]


def non_loopback_address() -> str | None:
    """An IPv4 address of this machine that is not loopback, or None."""
    for _index, name in socket.if_nameindex():
        if name == "lo":
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                packed = fcntl.ioctl(s.fileno(), SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
            except OSError:
                continue
        addr = socket.inet_ntoa(packed[20:24])
        if not addr.startswith("127."):
            return addr
    return None


def rss_kib(pid: int) -> tuple[int, int]:
    """(current, peak) resident set size of a process, in KiB, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def db_file_of(db_url: str) -> Path:
    """The file behind a SQLite URL."""
    return Path(db_url.split(":///", 1)[1])


def spool_files(directory: Path) -> list[Path]:
    """Spool files with recordings waiting in them."""
    return [p for p in directory.glob("spool-*") if p.stat().st_size] if directory.is_dir() else []


async def still_serves(fake: FakeUpstream, proxy: RunningProxy) -> None:
    """After a fault the same proxy relays the next stream in full."""
    fake.sse("/v1/healthcheck-stream", chat_events(["ok"]))
    async with aiohttp.ClientSession() as s:
        async with s.post(proxy.base_url + "/healthcheck-stream", json=REQUEST) as r:
            assert r.status == 200
            assert await r.read() == b"".join(chat_events(["ok"]))


async def recording(proxy: RunningProxy, rec_id: str) -> Record:
    """The stored recording, once the recorder has written everything submitted so far."""
    await proxy.drain()
    rec = await proxy.store.get(rec_id)
    assert rec is not None, f"recording {rec_id} was lost"
    return rec
