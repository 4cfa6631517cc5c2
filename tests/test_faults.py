"""Fault injection: a real recording, broken on purpose, makes the real ``openai`` SDK fail
the way it fails against a real broken server — an exception, never a hang."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import aiohttp
import httpx2
import openai
import orjson
import pytest

from proxy.faults import FaultError, Faults, error_event, parse_faults, plan
from tests.conftest import ProxyFactory, RunningProxy
from tests.fakes import FakeUpstream
from tests.recorded import CASES, fetch, record_cases
from tests.test_relay import REQUEST, chat_events

WORDS = ["one", "two", "three", "four"]
EVENTS = chat_events(WORDS)  # seq 0 role, 1-4 words, 5 finish, 6 usage, 7 [DONE]


@pytest.fixture
async def replayer(fake_upstream: FakeUpstream, proxy_factory: ProxyFactory) -> RunningProxy:
    recorder = await proxy_factory()
    fake_upstream.sse("/v1/chat/completions", EVENTS)
    await fetch("POST", recorder.base_url + "/chat/completions", {**REQUEST, "stream": True})
    await recorder.drain()
    return await proxy_factory(mode="replay", replay_speed=0)


@pytest.fixture
async def sdk(replayer: RunningProxy) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=replayer.base_url, api_key="sk-dummy", max_retries=0, timeout=10)
    yield client
    await client.close()


async def _read(client: openai.AsyncOpenAI, fault: str, seen: list[str]) -> None:
    stream = await client.chat.completions.create(**REQUEST, stream=True, extra_headers={"X-Streamproxy-Fault": fault})
    async for chunk in stream:
        if chunk.choices:
            seen.append(chunk.choices[0].delta.content or "")


async def test_cut_breaks_the_stream_off_and_the_sdk_raises(sdk: openai.AsyncOpenAI) -> None:
    seen: list[str] = []
    with pytest.raises(openai.APIConnectionError):
        await _read(sdk, "cut=2", seen)
    assert "".join(seen) == "onetwo"


async def test_error_sends_an_openai_error_event_and_the_sdk_raises(sdk: openai.AsyncOpenAI) -> None:
    seen: list[str] = []
    with pytest.raises(openai.APIError) as info:
        await _read(sdk, "error=1", seen)
    assert "".join(seen) == "one"
    assert "error after chunk 1" in info.value.message
    assert isinstance(info.value.body, dict) and info.value.body["code"] == "injected_fault"


async def test_stall_outlasts_the_sdk_read_timeout_and_the_sdk_raises(replayer: RunningProxy) -> None:
    client = openai.AsyncOpenAI(
        base_url=replayer.base_url, api_key="sk-dummy", max_retries=0, timeout=httpx2.Timeout(5, read=0.3)
    )
    seen: list[str] = []
    try:
        with pytest.raises(openai.APITimeoutError):
            await _read(client, "stall=3:3000", seen)
    finally:
        await client.close()
    assert "".join(seen) == "onetwo"


async def test_stall_keeps_silent_before_the_chunk(replayer: RunningProxy) -> None:
    """Lower bound only: the bytes of chunk 3 came no sooner than the stall allows."""
    loop = asyncio.get_running_loop()
    got = b""
    before_stall = len(b"".join(EVENTS[:3]))
    async with aiohttp.ClientSession() as s:
        async with s.post(replayer.base_url + "/chat/completions", json={**REQUEST, "stream": True}, headers={"X-Streamproxy-Fault": "stall=3:250"}) as r:
            start = loop.time()
            async for data in r.content.iter_any():
                got += data
                if len(got) <= before_stall:
                    start = loop.time()
            end = loop.time()
    assert got == b"".join(EVENTS)
    assert end - start >= 0.24


async def test_no_done_ends_cleanly_without_the_terminator(replayer: RunningProxy, sdk: openai.AsyncOpenAI) -> None:
    raw = await fetch("POST", replayer.base_url + "/chat/completions", {**REQUEST, "stream": True}, {"X-Streamproxy-Fault": "no-done"})
    assert raw.status == 200 and not raw.cut
    assert raw.body == b"".join(EVENTS[:-1]) and b"[DONE]" not in raw.body
    # The openai SDK itself takes a clean end without [DONE] as the end of the stream: it
    # finishes (no hang) with every delta, so clients that wait for [DONE] are the ones to test.
    seen: list[str] = []
    await _read(sdk, "no-done", seen)
    assert "".join(seen) == "".join(WORDS)


async def test_faults_combine(replayer: RunningProxy) -> None:
    raw = await fetch(
        "POST", replayer.base_url + "/chat/completions", {**REQUEST, "stream": True},
        {"X-Streamproxy-Fault": "stall=1:10, cut=2"},
    )
    assert raw.cut and raw.body == b"".join(EVENTS[:3])


async def test_bad_fault_is_an_openai_shaped_400(replayer: RunningProxy, sdk: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await _read(sdk, "cut=two", [])
    assert "cut='two'" in str(info.value)
    with pytest.raises(openai.BadRequestError) as info:
        await _read(sdk, "cut=99", [])
    assert "8 chunk(s), seq 0 to 7" in str(info.value)
    async with aiohttp.ClientSession() as s:
        async with s.post(replayer.base_url + "/chat/completions", json={**REQUEST, "stream": True}) as r:
            assert r.status == 200  # and the proxy keeps serving


async def test_fault_query_parameter_on_replay_by_id(fake_upstream: FakeUpstream, proxy_factory: ProxyFactory) -> None:
    proxy = await proxy_factory(replay_speed=0)
    fake_upstream.sse("/v1/chat/completions", EVENTS)
    rec_id = (await fetch("POST", proxy.base_url + "/chat/completions", {**REQUEST, "stream": True})).recording_id
    await proxy.drain()
    cut = await fetch("GET", f"{proxy.url}/recordings/{rec_id}/replay?fault=cut=0")
    assert cut.cut and cut.body == EVENTS[0]
    errored = await fetch("GET", f"{proxy.url}/recordings/{rec_id}/replay?fault=error%3D0")
    assert not errored.cut and errored.body == EVENTS[0] + error_event(0)
    bad = await fetch("GET", f"{proxy.url}/recordings/{rec_id}/replay?fault=explode")
    assert bad.status == 400 and "unknown fault 'explode'" in orjson.loads(bad.body)["error"]["message"]


def test_a_fault_that_would_do_nothing_is_refused() -> None:
    Faults(cut=7, no_done=True, error=6, stalls={0: 1.0}).check(EVENTS, event_stream=True)
    for faults, chunks, sse, says in [
        (Faults(cut=8), EVENTS, True, "8 chunk(s), seq 0 to 7"),
        (Faults(stalls={9: 1.0}), EVENTS, True, "stall=9"),
        (Faults(error=0), [b"{}"], False, "needs a streamed"),
        (Faults(no_done=True), EVENTS[:-1], True, "no data: [DONE]"),
        (Faults(cut=0), [], True, "no chunks"),
    ]:
        with pytest.raises(FaultError, match=re.escape(says)):
            faults.check(chunks, event_stream=sse)


def test_parse_faults() -> None:
    assert parse_faults(None) == Faults() and not parse_faults("  ")
    f = parse_faults("cut=3, no-done,error=1,stall=2:150,stall=0:5.5")
    assert (f.cut, f.no_done, f.error, dict(f.stalls)) == (3, True, 1, {2: 150.0, 0: 5.5})
    for bad in ("cut", "cut=-1", "cut=1,cut=2", "stall=1", "stall=1:x", "no-done=1", "boom", "error=1.5"):
        with pytest.raises(FaultError):
            parse_faults(bad)


def test_plan_applies_faults_to_the_chunks() -> None:
    chunks, offsets = EVENTS, [float(i) for i in range(len(EVENTS))]
    whole = plan(chunks, offsets, Faults())
    assert [p.data for p in whole.pieces] == EVENTS and whole.clean_end
    assert not plan(chunks, offsets, Faults(), clean_end=False).clean_end
    cut = plan(chunks, offsets, Faults(cut=1))
    assert [p.data for p in cut.pieces] == EVENTS[:2] and not cut.clean_end
    no_done = plan(chunks, offsets, Faults(no_done=True))
    assert [p.data for p in no_done.pieces] == EVENTS[:-1] and no_done.clean_end
    err = plan(chunks, offsets, Faults(error=2))
    assert [p.data for p in err.pieces] == [*EVENTS[:3], error_event(2)] and err.clean_end
    stall = plan(chunks, offsets, Faults(stalls={4: 100.0}))
    assert [p.stall_ms for p in stall.pieces] == [0, 0, 0, 0, 100.0, 0, 0, 0]


async def test_cut_and_error_raise_in_the_responses_api_too(fake_upstream: FakeUpstream, proxy_factory: ProxyFactory) -> None:
    recorder = await proxy_factory()
    await record_cases(recorder, fake_upstream, ["responses_text"])
    replayer = await proxy_factory(mode="replay", replay_speed=0)
    request = {k: v for k, v in next(c for c in CASES if c.name == "responses_text").request.items() if k != "stream"}
    client = openai.AsyncOpenAI(base_url=replayer.base_url, api_key="sk-dummy", max_retries=0, timeout=10)
    try:
        for fault, error, says in (
            ("error=2", openai.APIError, "error after chunk 2"),
            ("cut=2", openai.APIConnectionError, "Connection error"),
        ):
            seen: list[str] = []
            with pytest.raises(error, match=says):
                stream = await client.responses.create(**request, stream=True, extra_headers={"X-Streamproxy-Fault": fault})
                async for event in stream:
                    seen.append(event.type)
            assert seen == ["response.created", "response.in_progress", "response.output_item.added"], fault
    finally:
        await client.close()
