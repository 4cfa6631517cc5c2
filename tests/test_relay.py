"""The core: relay byte for byte as it arrives, and record beside the stream."""

from __future__ import annotations

import asyncio
import gc

import aiohttp
import openai
import orjson
import pytest

from proxy.credentials import fingerprint
from proxy.reads import BLOCK
from tests.conftest import API_KEY, RunningProxy
from tests.fakes import FakeUpstream, Script, Step
from tests.pgtest import stored_bytes


def chat_events(pieces: list[str], *, model: str = "gpt-4o-mini", usage: bool = True) -> list[bytes]:
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1700000000, "model": model}
    out = [
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
    ]
    out += [{**base, "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]} for p in pieces]
    out.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    if usage:
        out.append({**base, "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": len(pieces), "total_tokens": 5 + len(pieces)}})
    return [b"data: " + orjson.dumps(o) + b"\n\n" for o in out] + [b"data: [DONE]\n\n"]


PIECES = ["Hello", ", ", "wörld", "! ", "✓"]
REQUEST = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}]}


def resplit(data: bytes, sizes: list[int]) -> list[bytes]:
    """Cut ``data`` into writes of the given sizes, cycling."""
    out, pos, i = [], 0, 0
    while pos < len(data):
        n = sizes[i % len(sizes)]
        out.append(data[pos : pos + n])
        pos += n
        i += 1
    return out


async def raw_post(url: str, body: dict[str, object]) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as s:
        async with s.post(url, json=body, headers={"Authorization": f"Bearer {API_KEY}"}) as r:
            return r.status, dict(r.headers), await r.read()


async def test_sdk_stream_content_equals_direct(
    fake_upstream: FakeUpstream, proxy: RunningProxy, openai_client: openai.AsyncOpenAI
) -> None:
    fake_upstream.sse("/v1/chat/completions", chat_events(PIECES))
    direct = openai.AsyncOpenAI(base_url=fake_upstream.url + "/v1", api_key=API_KEY, max_retries=0)
    try:
        expected = [c async for c in await direct.chat.completions.create(**REQUEST, stream=True)]
    finally:
        await direct.close()
    got = [c async for c in await openai_client.chat.completions.create(**REQUEST, stream=True)]
    assert [c.model_dump() for c in got] == [c.model_dump() for c in expected]
    text = "".join(c.choices[0].delta.content or "" for c in got if c.choices)
    assert text == "".join(PIECES)


@pytest.mark.parametrize("sizes", [[1], [7, 3], [1000], [50, 1, 200]], ids=["bytewise", "split", "packed", "mixed"])
async def test_raw_bytes_identical_to_direct(fake_upstream: FakeUpstream, proxy: RunningProxy, sizes: list[int]) -> None:
    body = b"".join(chat_events(PIECES * 4))
    fake_upstream.sse("/v1/chat/completions", resplit(body, sizes))
    d_status, d_headers, direct = await raw_post(fake_upstream.url + "/v1/chat/completions", {**REQUEST, "stream": True})
    p_status, p_headers, proxied = await raw_post(proxy.base_url + "/chat/completions", {**REQUEST, "stream": True})
    assert proxied == direct == body
    assert p_status == d_status == 200
    assert p_headers["Content-Type"] == d_headers["Content-Type"]
    await proxy.drain()
    rec = await proxy.store.get(p_headers["X-Recording-Id"])
    assert rec is not None
    assert b"".join(rec.chunks) == body
    assert rec.chunks == chat_events(PIECES * 4)  # one chunk per SSE event, however it was split
    assert rec.offsets_ms == sorted(rec.offsets_ms)


async def test_a_long_stream_is_recorded_exactly_with_each_event_timed_by_its_read(
    fake_upstream: FakeUpstream, proxy: RunningProxy
) -> None:
    """Several times ``proxy.reads.BLOCK``, so the relay folds what it read into compressed
    blocks while the stream goes on; pauses cut it into reads whose times differ."""
    events = chat_events([f"piece {i} " * 8 for i in range(600)])
    body = b"".join(events)
    assert len(body) > 5 * BLOCK
    third = len(events) // 3
    first, middle, last = b"".join(events[:third]), b"".join(events[third : 2 * third]), b"".join(events[2 * third :])
    # The middle third ends mid-event before the second pause: that event is completed by the last read.
    steps: list[Step] = [*resplit(first, [4096]), 0.3, *resplit(middle[:-7], [777, 5000]), 0.3, middle[-7:], *resplit(last, [9000])]
    fake_upstream.script("/v1/chat/completions", Script(steps=steps))
    status, headers, proxied = await raw_post(proxy.base_url + "/chat/completions", {**REQUEST, "stream": True})
    assert status == 200 and proxied == body
    await proxy.drain()
    rec = await proxy.store.get(headers["X-Recording-Id"])
    assert rec is not None and rec.chunks == events
    assert rec.offsets_ms == sorted(rec.offsets_ms)
    first_pause = rec.offsets_ms[third] - rec.offsets_ms[third - 1]
    second_pause = rec.offsets_ms[2 * third - 1] - rec.offsets_ms[2 * third - 2]
    assert first_pause >= 250 and second_pause >= 250, (first_pause, second_pause)
    assert rec.offsets_ms[third - 1] - rec.offsets_ms[0] < 250 and rec.offsets_ms[-1] - rec.offsets_ms[2 * third - 1] < 250
    assert rec.reply is not None and rec.reply["choices"][0]["message"]["content"] == "".join(f"piece {i} " * 8 for i in range(600))


async def test_a_relayed_stream_leaves_nothing_for_the_cycle_collector(fake_upstream: FakeUpstream, proxy: RunningProxy) -> None:
    """Each upstream response is freed when its stream ends. One left in a reference cycle waits,
    with its buffers, for the collector's oldest generation: at 500 streams that was 12 MB."""
    fake_upstream.sse("/v1/chat/completions", chat_events(PIECES))
    fake_upstream.defaults["/v1/chat/completions"] = Script(steps=chat_events(PIECES))
    await raw_post(proxy.base_url + "/chat/completions", {**REQUEST, "stream": True})  # warm: lazy imports, pools
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for _ in range(5):
            status, _, body = await raw_post(proxy.base_url + "/chat/completions", {**REQUEST, "stream": True})
            assert status == 200 and body == b"".join(chat_events(PIECES))
        gc.collect()
        upstream = [
            o for o in gc.garbage
            if isinstance(o, aiohttp.ClientResponse) and str(o.url).startswith(fake_upstream.url)
        ]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert upstream == []


async def test_first_chunk_reaches_client_before_second_is_sent(fake_upstream: FakeUpstream, proxy: RunningProxy) -> None:
    events = chat_events(["first", "second"])
    gate = asyncio.Event()
    fake_upstream.script("/v1/chat/completions", Script(steps=[events[0], events[1], gate, *events[2:]]))
    async with aiohttp.ClientSession() as s:
        async with s.post(proxy.base_url + "/chat/completions", json={**REQUEST, "stream": True}) as r:
            got = b""
            while len(got) < len(events[0] + events[1]):
                got += await asyncio.wait_for(r.content.readany(), timeout=5)
            assert got == events[0] + events[1]
            assert not gate.is_set()
            gate.set()
            got += await r.read()
    assert got == b"".join(events)


async def test_recording_holds_request_chunks_and_assembled_reply(
    fake_upstream: FakeUpstream, proxy: RunningProxy, openai_client: openai.AsyncOpenAI
) -> None:
    fake_upstream.sse("/v1/chat/completions", chat_events(PIECES))
    stream = await openai_client.chat.completions.with_raw_response.create(
        **REQUEST, stream=True, stream_options={"include_usage": True}
    )
    rec_id = stream.headers["x-recording-id"]
    async for _ in stream.parse():
        pass
    await proxy.drain()
    rec = await proxy.store.get(rec_id)
    assert rec is not None
    assert rec.outcome == "complete" and rec.status == 200
    assert rec.model == "gpt-4o-mini" and rec.stream is True
    assert rec.method == "POST" and rec.path == "/v1/chat/completions"
    assert rec.request_headers["authorization"] == "[redacted]"
    assert rec.key_fingerprint == fingerprint(API_KEY)
    assert orjson.loads(rec.request_body)["messages"] == REQUEST["messages"]
    assert rec.reply == {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(PIECES), "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10},
    }
    assert rec.ttfb_ms is not None and rec.duration_ms is not None and rec.ttfb_ms <= rec.duration_ms
    assert len(rec.chunks) == len(chat_events(PIECES))


async def test_api_key_never_reaches_the_database_file(
    fake_upstream: FakeUpstream, proxy: RunningProxy, openai_client: openai.AsyncOpenAI, db_url: str
) -> None:
    fake_upstream.sse("/v1/chat/completions", chat_events(PIECES))
    for _ in range(3):
        async for _c in await openai_client.chat.completions.create(**REQUEST, stream=True):
            pass
    await proxy.drain()
    assert fake_upstream.received[-1].headers["Authorization"] == f"Bearer {API_KEY}"
    await proxy.stop()  # checkpoint and close the database files
    stored = await stored_bytes(db_url)
    assert stored
    for name, data in stored.items():
        assert API_KEY.encode() not in data, name
    assert any(fingerprint(API_KEY).encode() in data for data in stored.values())


async def test_non_streaming_json_and_headers(fake_upstream: FakeUpstream, proxy: RunningProxy) -> None:
    full = {"id": "chatcmpl-2", "object": "chat.completion", "choices": []}
    fake_upstream.json("/v1/chat/completions", full)
    status, headers, body = await raw_post(proxy.base_url + "/chat/completions?api-version=2024", REQUEST)
    assert status == 200 and orjson.loads(body) == full
    assert headers["Content-Length"] == str(len(body))
    up = fake_upstream.received[-1]
    assert up.query == "api-version=2024"
    assert up.headers["Accept-Encoding"] == "identity"
    assert up.headers["Authorization"] == f"Bearer {API_KEY}"
    assert orjson.loads(up.body) == REQUEST
    await proxy.drain()
    rec = await proxy.store.get(headers["X-Recording-Id"])
    assert rec is not None and rec.reply == full and rec.chunks == [body] and rec.query == "api-version=2024"


async def test_request_body_goes_up_unchanged(fake_upstream: FakeUpstream, proxy: RunningProxy) -> None:
    fake_upstream.json("/v1/embeddings", {"data": []})
    raw = b'{ "model" : "x",\n  "input": ["a"] }'
    async with aiohttp.ClientSession() as s:
        async with s.put(proxy.base_url + "/embeddings", data=raw, headers={"Content-Type": "application/json", "Connection": "keep-alive", "X-Custom": "1"}) as r:
            assert r.status == 200
    up = fake_upstream.received[-1]
    assert up.method == "PUT" and up.body == raw and up.headers["X-Custom"] == "1"


async def test_upstream_error_status_relayed_and_complete(fake_upstream: FakeUpstream, proxy: RunningProxy) -> None:
    err = {"error": {"message": "Rate limit", "type": "rate_limit", "code": None}}
    fake_upstream.json("/v1/chat/completions", err, status=429)
    status, headers, body = await raw_post(proxy.base_url + "/chat/completions", REQUEST)
    assert status == 429 and orjson.loads(body) == err
    await proxy.drain()
    rec = await proxy.store.get(headers["X-Recording-Id"])
    assert rec is not None and rec.outcome == "complete" and rec.status == 429


async def test_path_outside_v1_is_an_openai_shaped_404(proxy: RunningProxy) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(proxy.url + "/admin") as r:
            assert r.status == 404
            assert (await r.json())["error"]["code"] == "not_found"


async def test_recordings_api(fake_upstream: FakeUpstream, proxy: RunningProxy, openai_client: openai.AsyncOpenAI) -> None:
    fake_upstream.sse("/v1/chat/completions", chat_events(PIECES))
    for _ in range(3):
        async for _c in await openai_client.chat.completions.create(**REQUEST, stream=True):
            pass
    await proxy.drain()
    async with aiohttp.ClientSession() as s:
        async with s.get(proxy.url + "/recordings?limit=2") as r:
            page = await r.json()
        assert len(page["recordings"]) == 2 and page["next_cursor"]
        assert "chunks" not in page["recordings"][0]
        async with s.get(proxy.url + "/recordings", params={"limit": "2", "cursor": page["next_cursor"]}) as r:
            page2 = await r.json()
        assert len(page2["recordings"]) == 1 and page2["next_cursor"] is None
        ids = [x["id"] for x in page["recordings"] + page2["recordings"]]
        assert ids == sorted(ids, reverse=True)
        async with s.get(proxy.url + f"/recordings/{ids[0]}?chunks=1") as r:
            one = await r.json()
        async with s.get(proxy.url + "/healthz") as r:
            assert (await r.json())["status"] == "ok"
    assert one["request"]["headers"]["authorization"] == "[redacted]"
    assert one["request"]["body"]["messages"] == REQUEST["messages"]
    assert one["response"]["status"] == 200
    assert one["response"]["headers"]["content-type"] == "text/event-stream"
    assert "".join(c["data"] for c in one["chunks"]) == b"".join(chat_events(PIECES)).decode()
    assert [c["seq"] for c in one["chunks"]] == list(range(len(one["chunks"])))
    assert one["started_at"].endswith("Z") and one["outcome"] == "complete"


async def test_nul_characters_in_prompt_and_reply_are_recorded(fake_upstream: FakeUpstream, proxy: RunningProxy) -> None:
    fake_upstream.sse("/v1/chat/completions", chat_events(["nul\u0000here"]))
    body = {**REQUEST, "model": "m\u0000", "messages": [{"role": "user", "content": "a\u0000b"}], "stream": True}
    status, headers, _ = await raw_post(proxy.base_url + "/chat/completions", body)
    assert status == 200
    await proxy.drain()
    rec = await proxy.store.get(headers["X-Recording-Id"])
    assert rec is not None, "the database took the recording"
    assert orjson.loads(rec.request_body)["messages"][0]["content"] == "a\u0000b"
    assert rec.reply is not None and rec.reply["choices"][0]["message"]["content"] == "nul\u0000here"
