"""Upstream faults, injected for real: a cut connection, a closed port, a connect that never
completes, silence before and after the headers, error statuses. Each ends with the right
recording and a proxy that keeps serving."""

from __future__ import annotations

import asyncio

import aiohttp
import openai
import orjson
import pytest

from tests.conftest import API_KEY, ProxyFactory, RunningProxy
from tests.faultkit import closed_port, recording, sdk_error, silent_server, still_serves, unaccepting_listener
from tests.fakes import FakeUpstream, Script
from tests.test_relay import PIECES, REQUEST, chat_events, raw_post


async def test_upstream_cut_mid_stream_reaches_the_sdk_as_an_error(
    fake_upstream: FakeUpstream, proxy: RunningProxy, openai_client: openai.AsyncOpenAI
) -> None:
    events = chat_events(PIECES)
    fake_upstream.script("/v1/chat/completions", Script(steps=events[:3], cut=True))
    raw = await openai_client.chat.completions.with_raw_response.create(**REQUEST, stream=True)
    got: list[str] = []

    async def consume() -> None:
        async for c in raw.parse():
            got.append(c.choices[0].delta.content or "")

    with pytest.raises(Exception) as caught:  # noqa: PT011 - whatever the SDK's HTTP layer raises
        await asyncio.wait_for(consume(), timeout=10)
    assert not isinstance(caught.value, TimeoutError), "the SDK hung instead of seeing the cut"
    assert "".join(got) == PIECES[0] + PIECES[1]

    rec = await recording(proxy, raw.headers["x-recording-id"])
    assert rec.outcome == "upstream_closed"
    assert rec.chunks == events[:3]
    assert rec.reply is not None and rec.reply["choices"][0]["message"]["content"] == PIECES[0] + PIECES[1]
    await still_serves(fake_upstream, proxy)


async def test_upstream_cut_leaves_the_raw_client_without_a_clean_end(fake_upstream: FakeUpstream, proxy: RunningProxy) -> None:
    events = chat_events(PIECES)
    fake_upstream.script("/v1/chat/completions", Script(steps=events[:2], cut=True))
    got = b""
    async with aiohttp.ClientSession() as s:
        async with s.post(proxy.base_url + "/chat/completions", json={**REQUEST, "stream": True}) as r:
            with pytest.raises(aiohttp.ClientPayloadError):
                async for data in r.content.iter_any():
                    got += data
            rec_id = r.headers["X-Recording-Id"]
    assert got == b"".join(events[:2])
    rec = await recording(proxy, rec_id)
    assert rec.outcome == "upstream_closed" and rec.body == got


async def test_upstream_unreachable_is_an_openai_shaped_502(proxy_factory: ProxyFactory, fake_upstream: FakeUpstream) -> None:
    proxy = await proxy_factory(upstream=f"http://127.0.0.1:{closed_port()}")
    err = await sdk_error(proxy.base_url, API_KEY, openai.InternalServerError)
    assert err.status_code == 502
    assert isinstance(err.body, dict) and err.body["code"] == "upstream_unreachable" and err.body["type"] == "upstream_error"
    rec = await recording(proxy, err.response.headers["x-recording-id"])
    assert rec.outcome == "upstream_error" and rec.status == 502 and rec.error


async def test_connect_timeout_is_an_openai_shaped_504(proxy_factory: ProxyFactory) -> None:
    with unaccepting_listener() as port:
        proxy = await proxy_factory(upstream=f"http://127.0.0.1:{port}", connect_timeout=0.3)
        status, headers, body = await asyncio.wait_for(raw_post(proxy.base_url + "/chat/completions", REQUEST), 10)
    assert status == 504
    err = orjson.loads(body)["error"]
    assert err["code"] == "upstream_timeout" and err["type"] == "upstream_error"
    rec = await recording(proxy, headers["X-Recording-Id"])
    assert rec.outcome == "upstream_error" and rec.status == 504


async def test_silence_before_headers_is_an_openai_shaped_504(proxy_factory: ProxyFactory) -> None:
    async with silent_server() as upstream:
        proxy = await proxy_factory(upstream=f"http://127.0.0.1:{upstream.port}", read_timeout=0.3)
        status, headers, body = await asyncio.wait_for(raw_post(proxy.base_url + "/chat/completions", REQUEST), 10)
        assert upstream.received, "the request never reached the silent upstream"
    assert status == 504 and orjson.loads(body)["error"]["code"] == "upstream_timeout"
    rec = await recording(proxy, headers["X-Recording-Id"])
    assert rec.outcome == "upstream_error" and rec.status == 504


async def test_silence_after_headers_closes_the_stream_as_upstream_error(
    proxy_factory: ProxyFactory, fake_upstream: FakeUpstream
) -> None:
    events = chat_events(PIECES)
    never = asyncio.Event()
    fake_upstream.script("/v1/chat/completions", Script(steps=[*events[:2], never, *events[2:]]))
    proxy = await proxy_factory(read_timeout=0.3)
    client = openai.AsyncOpenAI(base_url=proxy.base_url, api_key=API_KEY, max_retries=0)
    got: list[str] = []
    try:
        raw = await client.chat.completions.with_raw_response.create(**REQUEST, stream=True)

        async def consume() -> None:
            async for c in raw.parse():
                got.append(c.choices[0].delta.content or "")

        with pytest.raises(Exception) as caught:  # noqa: PT011
            await asyncio.wait_for(consume(), timeout=10)
        assert not isinstance(caught.value, TimeoutError), "the SDK hung on a stream the proxy gave up on"
    finally:
        await client.close()
        never.set()
    assert "".join(got) == PIECES[0]
    rec = await recording(proxy, raw.headers["x-recording-id"])
    assert rec.outcome == "upstream_error" and rec.chunks == events[:2]
    assert rec.error is not None and "no bytes from upstream" in rec.error
    await fake_upstream.disconnected.wait()
    await still_serves(fake_upstream, proxy)


async def test_a_client_slower_than_the_read_timeout_is_not_upstream_silence(
    proxy_factory: ProxyFactory, fake_upstream: FakeUpstream
) -> None:
    """Upstream sends more than the sockets hold; the client stops reading for longer than the read
    timeout. The relay then waits on the client, not on upstream: the stream must go on whole."""
    filler = "x" * 8000
    events = [b"data: " + orjson.dumps({"choices": [{"index": 0, "delta": {"content": filler}}]}) + b"\n\n"] * 2000
    fake_upstream.sse("/v1/chat/completions", events)
    proxy = await proxy_factory(read_timeout=0.3)
    async with aiohttp.ClientSession() as s:
        async with s.post(proxy.base_url + "/chat/completions", json=REQUEST) as r:
            first = await r.content.read(1000)
            await asyncio.sleep(1.5)  # some 16 MB wait upstream of the proxy: its writes to us block
            body = first + await asyncio.wait_for(r.content.read(), 30)
            rec_id = r.headers["X-Recording-Id"]
    assert body == b"".join(events)
    rec = await recording(proxy, rec_id)
    assert rec.outcome == "complete" and rec.error is None and len(rec.chunks) == len(events)


@pytest.mark.parametrize(
    ("status", "sdk_error"),
    [(400, openai.BadRequestError), (401, openai.AuthenticationError), (429, openai.RateLimitError), (503, openai.InternalServerError)],
)
async def test_upstream_error_status_is_relayed_unchanged_and_complete(
    fake_upstream: FakeUpstream, proxy: RunningProxy, openai_client: openai.AsyncOpenAI, status: int, sdk_error: type[openai.APIStatusError]
) -> None:
    err = {"error": {"message": f"upstream says {status}", "type": "upstream_type", "param": None, "code": "x"}}
    fake_upstream.json("/v1/chat/completions", err, status=status)
    d_status, _, direct = await raw_post(fake_upstream.url + "/v1/chat/completions", REQUEST)
    p_status, headers, proxied = await raw_post(proxy.base_url + "/chat/completions", REQUEST)
    assert (p_status, proxied) == (d_status, direct) == (status, orjson.dumps(err))
    with pytest.raises(sdk_error) as caught:
        await openai_client.chat.completions.create(**REQUEST, stream=True)
    assert caught.value.status_code == status and caught.value.body == err["error"]
    rec = await recording(proxy, headers["X-Recording-Id"])
    assert rec.outcome == "complete" and rec.status == status and rec.body == direct


async def test_error_status_with_an_sse_body_is_relayed_unchanged(fake_upstream: FakeUpstream, proxy: RunningProxy) -> None:
    events = [b'data: {"error": {"message": "overloaded", "type": "server_error", "code": null}}\n\n']
    fake_upstream.sse("/v1/chat/completions", events, status=500)
    status, headers, body = await raw_post(proxy.base_url + "/chat/completions", {**REQUEST, "stream": True})
    assert status == 500 and body == events[0]
    rec = await recording(proxy, headers["X-Recording-Id"])
    assert rec.outcome == "complete" and rec.status == 500 and rec.chunks == events


async def test_upstream_hanging_up_before_answering_is_a_502(proxy_factory: ProxyFactory) -> None:
    async with silent_server(hang_up=True) as upstream:
        proxy = await proxy_factory(upstream=f"http://127.0.0.1:{upstream.port}")
        status, headers, body = await asyncio.wait_for(raw_post(proxy.base_url + "/chat/completions", REQUEST), 10)
    assert status == 502 and orjson.loads(body)["error"]["code"] == "upstream_unreachable"
    rec = await recording(proxy, headers["X-Recording-Id"])
    assert rec.outcome == "upstream_error" and rec.status == 502


async def test_fixed_length_body_cut_short_stays_visible(fake_upstream: FakeUpstream, proxy: RunningProxy) -> None:
    whole = orjson.dumps({"object": "list", "data": [{"embedding": [0.5] * 200}]})
    headers = {"Content-Type": "application/json", "Content-Length": str(len(whole))}
    fake_upstream.script("/v1/embeddings", Script(steps=[whole[:100]], headers=headers, cut=True))
    got = b""
    async with aiohttp.ClientSession() as s:
        async with s.post(proxy.base_url + "/embeddings", json=REQUEST) as r:
            assert r.headers["Content-Length"] == str(len(whole))  # announced in full, delivered in part
            with pytest.raises(aiohttp.ClientPayloadError):
                async for data in r.content.iter_any():
                    got += data
            rec_id = r.headers["X-Recording-Id"]
    assert got == whole[:100]
    rec = await recording(proxy, rec_id)
    assert rec.outcome == "upstream_closed" and rec.chunks == [whole[:100]]
    await still_serves(fake_upstream, proxy)
