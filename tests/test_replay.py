"""Replay: recorded streams come back byte for byte, offline, in order, paced; a miss says why."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import openai
import orjson
import pytest

from tests import shapes
from tests.conftest import API_KEY, ProxyFactory
from tests.fakes import FakeUpstream, Script
from tests.processes import ServeProcess
from tests.recorded import CASES, cli, fetch, record_cases
from tests.test_relay import PIECES, REQUEST, chat_events


class ConnectionCounter:
    """A loopback listener standing in for an upstream that must never be contacted."""

    def __init__(self) -> None:
        self.accepted = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> ConnectionCounter:
        def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.accepted += 1
            writer.close()

        self.server = await asyncio.start_server(accept, "127.0.0.1", 0)
        return self

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


async def test_new_replay_process_serves_every_shape_byte_for_byte_without_upstream(
    fake_upstream: FakeUpstream, proxy_factory: ProxyFactory, db_url: str, tmp_path: Path
) -> None:
    recorder = await proxy_factory()
    original = await record_cases(recorder, fake_upstream)
    await recorder.stop()
    await fake_upstream.stop()
    async with ConnectionCounter() as upstream:
        server = ServeProcess(
            "--mode", "replay", "--replay-speed", "0", "--db", db_url, "--upstream", upstream.url,
            log_path=tmp_path / "replay.log",
        )
        await server.start()
        try:
            for case in CASES:
                want = original[case.name]
                got = await fetch("POST", server.url + case.path, case.request, {"Authorization": "Bearer sk-dummy"})
                assert got.body == want.body, case.name
                assert got.status == want.status, case.name
                assert got.headers["Content-Type"] == want.headers["Content-Type"], case.name
                assert got.cut == want.cut, case.name
                assert got.recording_id == want.recording_id, case.name
        finally:
            assert await server.stop() == 0
        assert upstream.accepted == 0
    assert original["chat_truncated"].cut and original["responses_cut"].cut and not original["chat_simple"].cut
    assert original["status_429"].headers["Retry-After"] == "1"


async def test_nth_identical_request_gets_nth_recording_and_the_last_repeats(
    fake_upstream: FakeUpstream, proxy_factory: ProxyFactory
) -> None:
    recorder = await proxy_factory()
    for word in ("one", "two", "three"):
        fake_upstream.script("/v1/chat/completions", Script(steps=chat_events([word])), once=True)
        await fetch("POST", recorder.base_url + "/chat/completions", {**REQUEST, "stream": True})
    await recorder.drain()
    replayer = await proxy_factory(mode="replay", replay_speed=0)
    client = openai.AsyncOpenAI(base_url=replayer.base_url, api_key="sk-dummy", max_retries=0)
    try:
        answers = []
        for _ in range(4):
            stream = await client.chat.completions.create(**REQUEST, stream=True)
            answers.append("".join([c.choices[0].delta.content or "" async for c in stream if c.choices]))
    finally:
        await client.close()
    assert answers == ["one", "two", "three", "three"]
    assert len(fake_upstream.received) == 3


async def test_miss_is_a_404_naming_key_nearest_recording_and_difference(
    fake_upstream: FakeUpstream, proxy_factory: ProxyFactory
) -> None:
    recorder = await proxy_factory()
    fake_upstream.sse("/v1/chat/completions", chat_events(PIECES))
    recorded = await fetch("POST", recorder.base_url + "/chat/completions", {**REQUEST, "stream": True})
    await recorder.drain()
    replayer = await proxy_factory(mode="replay")
    client = openai.AsyncOpenAI(base_url=replayer.base_url, api_key="sk-dummy", max_retries=0)
    changed = {**REQUEST, "messages": [{"role": "user", "content": "Say goodbye"}], "temperature": 0.5}
    try:
        with pytest.raises(openai.NotFoundError) as info:
            await client.chat.completions.create(**changed, stream=True)
    finally:
        await client.close()
    message = str(info.value)
    assert recorded.recording_id in message
    assert 'messages[0].content: recorded "Say hello", got "Say goodbye"' in message
    assert "temperature: recorded absent, got 0.5" in message
    assert info.value.response.headers["X-Recording-Id"]
    err = info.value.body
    assert isinstance(err, dict) and err["code"] == "recording_not_found" and err["type"] == "invalid_request_error"
    key = message.split("match key ", 1)[1][:64]
    assert len(key) == 64 and all(c in "0123456789abcdef" for c in key)
    assert len(fake_upstream.received) == 1


async def test_miss_with_no_recording_of_that_path(proxy_factory: ProxyFactory) -> None:
    replayer = await proxy_factory(mode="replay")
    got = await fetch("POST", replayer.base_url + "/embeddings", {"model": "e", "input": "x"})
    assert got.status == 404
    assert "no recording of POST /v1/embeddings at all" in orjson.loads(got.body)["error"]["message"]


async def test_credentials_and_ignored_fields_do_not_change_the_match(
    fake_upstream: FakeUpstream, proxy_factory: ProxyFactory
) -> None:
    recorder = await proxy_factory(match_ignore=("user",))
    fake_upstream.sse("/v1/chat/completions", chat_events(PIECES))
    want = await fetch("POST", recorder.base_url + "/chat/completions", {**REQUEST, "user": "alice"})
    await recorder.drain()
    replayer = await proxy_factory(mode="replay", match_ignore=("user",))
    got = await fetch(
        "POST", replayer.base_url + "/chat/completions", {**REQUEST, "user": "bob"}, {"Authorization": "Bearer other"}
    )
    assert got.status == 200 and got.body == want.body


async def test_auto_mode_replays_a_hit_and_forwards_and_records_a_miss(
    fake_upstream: FakeUpstream, proxy_factory: ProxyFactory
) -> None:
    proxy = await proxy_factory(mode="auto", replay_speed=0)
    fake_upstream.sse("/v1/chat/completions", chat_events(PIECES))
    first = await fetch("POST", proxy.base_url + "/chat/completions", {**REQUEST, "stream": True})
    await proxy.drain()
    again = await fetch("POST", proxy.base_url + "/chat/completions", {**REQUEST, "stream": True})
    assert len(fake_upstream.received) == 1
    assert again.body == first.body and again.recording_id == first.recording_id
    other = await fetch("POST", proxy.base_url + "/chat/completions", {**REQUEST, "stream": True, "n": 2})
    await proxy.drain()
    assert len(fake_upstream.received) == 2 and other.recording_id != first.recording_id
    assert await proxy.store.count() == 2  # the replay was not recorded again


async def test_speed_one_keeps_the_recorded_gaps(fake_upstream: FakeUpstream, proxy_factory: ProxyFactory) -> None:
    recorder = await proxy_factory()
    events = chat_events(["slow", "ly"])
    fake_upstream.script("/v1/chat/completions", Script(steps=[events[0], 0.3, events[1], 0.3, *events[2:]]))
    rec_id = (await fetch("POST", recorder.base_url + "/chat/completions", {**REQUEST, "stream": True})).recording_id
    await recorder.drain()
    rec = await recorder.store.get(rec_id)
    assert rec is not None
    replayer = await proxy_factory(mode="replay", replay_speed=1)
    for url, scale in ((replayer.base_url + "/chat/completions", 1.0), (f"{replayer.url}/recordings/{rec_id}/replay?speed=2", 0.5)):
        loop = asyncio.get_running_loop()
        arrivals: list[tuple[float, bytes]] = []
        async with aiohttp.ClientSession() as s:
            sent = loop.time()
            async with s.request("POST" if "/v1/" in url else "GET", url, json={**REQUEST, "stream": True}) as r:
                async for data in r.content.iter_any():
                    arrivals.append((loop.time(), data))
        body = b"".join(d for _, d in arrivals)
        assert body == b"".join(events)
        # Each event goes out no sooner than its recorded offset (scaled) after the request
        # reached the proxy, which was after it was sent: a lower bound that load cannot break.
        for i in (1, 2):  # recorded about 0.3 s and 0.6 s in
            assert _arrival(arrivals, len(b"".join(events[: i + 1]))) - sent >= rec.offsets_ms[i] / 1000.0 * scale - 0.001


def _arrival(arrivals: list[tuple[float, bytes]], n_bytes: int) -> float:
    """When the client had received the first ``n_bytes``."""
    total = 0
    for t, data in arrivals:
        total += len(data)
        if total >= n_bytes:
            return t
    raise AssertionError("the body is shorter than expected")


async def test_replay_by_id_endpoint(fake_upstream: FakeUpstream, proxy_factory: ProxyFactory) -> None:
    proxy = await proxy_factory(admin_token="adm1n", replay_speed=0)
    original = await record_cases(proxy, fake_upstream, ["chat_simple", "chat_simple_whole"])
    auth = {"Authorization": "Bearer adm1n"}
    for name, want in original.items():
        got = await fetch("GET", f"{proxy.url}/recordings/{want.recording_id}/replay", headers=auth)
        assert (got.status, got.body, got.headers["Content-Type"]) == (want.status, want.body, want.headers["Content-Type"]), name
        assert got.recording_id == want.recording_id
    json_id = original["chat_simple_whole"].recording_id
    assert (await fetch("GET", f"{proxy.url}/recordings/{json_id}/replay", headers={"Authorization": "Bearer x"})).status == 401
    bad = await fetch("GET", f"{proxy.url}/recordings/{json_id}/replay?speed=fast", headers=auth)
    assert bad.status == 400 and "speed" in orjson.loads(bad.body)["error"]["message"]
    missing = await fetch("GET", f"{proxy.url}/recordings/01NOPE/replay", headers=auth)
    assert missing.status == 404 and orjson.loads(missing.body)["error"]["code"] == "not_found"


async def test_cli_replay_prints_the_deltas_and_raw_writes_the_bytes(
    fake_upstream: FakeUpstream, proxy_factory: ProxyFactory, db_url: str, tmp_path: Path
) -> None:
    proxy = await proxy_factory()
    original = await record_cases(
        proxy, fake_upstream, ["chat_simple", "responses_text", "chat_truncated", "chat_refusal", "chat_simple_whole"]
    )
    await proxy.stop()
    chat_id = original["chat_simple"].recording_id
    text = await cli("replay", chat_id, "--speed", "0", "--db", db_url)
    assert text.returncode == 0, text.stderr
    assert text.stdout.decode() == shapes.SHAPES["chat_simple"].text + "\n"
    raw = await cli("replay", chat_id, "--raw", "--db", db_url)
    assert raw.stdout == original["chat_simple"].body
    responses = await cli("replay", original["responses_text"].recording_id, "--speed", "0", "--db", db_url)
    assert responses.stdout.decode() == shapes.SHAPES["responses_text"].text + "\n"
    for name in ("chat_refusal", "chat_simple_whole"):
        shown = await cli("replay", original[name].recording_id, "--speed", "0", "--db", db_url)
        assert shown.stdout.decode() == shapes.SHAPES[name.removesuffix("_whole")].text + "\n", name
    cut = await cli("replay", original["chat_truncated"].recording_id, "--speed", "0", "--db", db_url)
    assert cut.stdout.decode() == "Hello! How\n" and "upstream_closed" in cut.stderr
    missing = await cli("replay", "01NOPE", "--db", db_url)
    assert missing.returncode != 0 and missing.stderr.startswith("streamproxy: error: no recording 01NOPE")
    absent = tmp_path / "absent.db"
    no_db = await cli("replay", "01NOPE", "--db", f"sqlite+aiosqlite:///{absent}")
    assert no_db.returncode != 0 and "no database" in no_db.stderr
    assert not absent.exists()
    assert API_KEY.encode() not in raw.stdout
