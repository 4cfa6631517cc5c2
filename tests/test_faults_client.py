"""Client faults, injected for real: a client that hangs up mid-stream and one that reads too slowly."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

import aiohttp
import openai
import orjson

from proxy.filters import Filters
from tests.conftest import API_KEY, ProxyFactory, RunningProxy
from tests.faultkit import recording, rss_kib, silent_server, still_serves, wait_until
from tests.fakes import FakeUpstream, Script
from tests.processes import ServeProcess
from tests.test_relay import PIECES, REQUEST, chat_events


async def test_client_hangup_cancels_upstream_and_keeps_what_was_relayed(
    fake_upstream: FakeUpstream, proxy: RunningProxy, openai_client: openai.AsyncOpenAI
) -> None:
    events = chat_events(PIECES)
    never = asyncio.Event()
    fake_upstream.script("/v1/chat/completions", Script(steps=[*events[:3], never, *events[3:]]))
    raw = await openai_client.chat.completions.with_raw_response.create(**REQUEST, stream=True)
    stream = raw.parse()
    got = [(await anext(stream)).choices[0].delta.content for _ in range(3)]
    assert got == ["", PIECES[0], PIECES[1]]
    await stream.close()  # the client hangs up while upstream is still thinking

    await asyncio.wait_for(fake_upstream.disconnected.wait(), timeout=5)
    assert not never.is_set()
    rec = await recording(proxy, raw.headers["x-recording-id"])
    assert rec.outcome == "client_closed"
    assert rec.chunks == events[:3]
    assert rec.reply is not None and rec.reply["choices"][0]["message"]["content"] == PIECES[0] + PIECES[1]
    never.set()
    await still_serves(fake_upstream, proxy)


async def test_client_hangup_while_upstream_keeps_sending(fake_upstream: FakeUpstream, proxy: RunningProxy) -> None:
    # Upstream streams on at its own pace; the proxy finds out when a write fails or the handler is cancelled.
    events = chat_events([f"piece {i} " for i in range(400)])
    steps: list[bytes | float] = []
    for e in events:
        steps += [e, 0.005]
    fake_upstream.script("/v1/chat/completions", Script(steps=steps))
    received = b""
    async with aiohttp.ClientSession() as s:
        r = await s.post(proxy.base_url + "/chat/completions", json={**REQUEST, "stream": True})
        rec_id = r.headers["X-Recording-Id"]
        while received.count(b"\n\n") < 5:
            received += await r.content.readany()
        r.close()
    await asyncio.wait_for(fake_upstream.disconnected.wait(), timeout=5)
    rec = await recording(proxy, rec_id)
    assert rec.outcome == "client_closed"
    full = b"".join(events)
    assert rec.body.startswith(received) and full.startswith(rec.body)
    assert len(rec.chunks) < len(events)
    await still_serves(fake_upstream, proxy)


async def test_client_hangup_before_upstream_answers_closes_the_upstream_request(proxy_factory: ProxyFactory) -> None:
    async with silent_server() as upstream:
        proxy = await proxy_factory(upstream=f"http://127.0.0.1:{upstream.port}")
        async with aiohttp.ClientSession() as s:
            pending = asyncio.create_task(s.post(proxy.base_url + "/chat/completions", json={**REQUEST, "stream": True}))
            await wait_until(lambda: bool(upstream.received), what="the request to reach upstream")
            pending.cancel()  # the client gives up before any answer
            with contextlib.suppress(asyncio.CancelledError):
                await pending
        await asyncio.wait_for(upstream.closed.wait(), timeout=5)
        await proxy.drain()
    (rec,) = (await proxy.store.list_recordings(Filters(), limit=10))[0]
    assert rec.outcome == "client_closed" and rec.status is None and rec.chunks == []


async def test_slow_reader_gets_backpressure_and_memory_stays_flat(
    fake_upstream: FakeUpstream, tmp_path: Path, db_url: str
) -> None:
    event = b"data: " + b"x" * (256 * 1024 - 8) + b"\n\n"
    total_events = 512  # 128 MiB upstream would send if nobody pushed back
    fake_upstream.script("/v1/chat/completions", Script(steps=[event] * total_events))
    fake_upstream.sse("/v1/warmup", chat_events(PIECES))
    server = ServeProcess("--upstream", fake_upstream.url, "--db", db_url, log_path=tmp_path / "serve.log")
    await server.start()
    assert server.proc is not None
    pid = server.proc.pid
    try:
        async with aiohttp.ClientSession() as s:
            async with s.post(server.base_url + "/warmup", json=REQUEST) as r:
                await r.read()
        baseline, _ = rss_kib(pid)

        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.connect(("127.0.0.1", server.port))
        sock.setblocking(False)
        reader, writer = await asyncio.open_connection(sock=sock, limit=64 * 1024)
        body = orjson.dumps({**REQUEST, "stream": True})
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {API_KEY}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        head = await reader.readuntil(b"\r\n\r\n")
        rec_id = next(
            line.split(b":", 1)[1].strip().decode()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"x-recording-id:")
        )
        read = 0
        while read < 1024 * 1024:
            read += len(await reader.read(65536))

        # The client stops reading. Upstream has 127 MiB more to give; the proxy must not take it.
        peak_growth = 0
        for _ in range(15):
            await asyncio.sleep(0.1)
            current, _ = rss_kib(pid)
            peak_growth = max(peak_growth, current - baseline)
        writer.close()
        await asyncio.wait_for(fake_upstream.disconnected.wait(), timeout=10)

        async with aiohttp.ClientSession() as s:

            async def stored() -> bool:
                async with s.get(f"{server.url}/recordings/{rec_id}?chunks=1") as r:
                    return r.status == 200

            await wait_until(stored, what="the slow reader's recording")
            async with s.get(f"{server.url}/recordings/{rec_id}?chunks=1") as r:
                rec = await r.json()
    finally:
        assert await server.stop() == 0

    relayed = sum(len(c["data"]) for c in rec["chunks"])
    assert rec["outcome"] == "client_closed"
    # Everything read from upstream was relayed and recorded; socket buffers hold a few MiB at most.
    assert read <= relayed < 24 * 1024 * 1024, relayed
    assert peak_growth < 48 * 1024, f"proxy RSS grew {peak_growth} KiB while the client was not reading"
