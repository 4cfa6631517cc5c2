"""Every stream shape end to end: the fake upstream serves one script streamed and whole; through
the proxy, the relayed bytes equal upstream's and the assembled reply equals the whole object."""

from __future__ import annotations

import aiohttp
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import API_KEY, RunningProxy
from tests.fakes import FakeUpstream
from tests.shapes import EDGES, SHAPES, Edge, Shape, plain_request, stream_body
from tests.test_relay import resplit


async def _post(url: str, body: dict[str, object]) -> tuple[str, bytes]:
    async with aiohttp.ClientSession() as s:
        async with s.post(url, json=body, headers={"Authorization": f"Bearer {API_KEY}"}) as r:
            return r.headers["X-Recording-Id"], await r.read()


@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
async def test_streamed_reply_equals_the_whole_object(fake_upstream: FakeUpstream, proxy: RunningProxy, shape: Shape) -> None:
    fake_upstream.sse(shape.path, shape.events)
    stream_id, relayed = await _post(proxy.base_url + shape.path.removeprefix("/v1"), shape.request)
    assert relayed == stream_body(shape)

    fake_upstream.json(shape.path, shape.full)
    whole_id, whole = await _post(proxy.base_url + shape.path.removeprefix("/v1"), plain_request(shape))
    assert orjson.loads(whole) == shape.full

    await proxy.drain()
    streamed = await proxy.store.get(stream_id)
    unstreamed = await proxy.store.get(whole_id)
    assert streamed is not None and unstreamed is not None
    assert streamed.reply == unstreamed.reply == shape.full
    assert streamed.chunks == shape.events and streamed.notes == []


@pytest.mark.parametrize("edge", list(EDGES.values()), ids=list(EDGES))
async def test_streams_that_end_badly_are_relayed_and_assembled(fake_upstream: FakeUpstream, proxy: RunningProxy, edge: Edge) -> None:
    fake_upstream.sse(edge.path, edge.events)
    rec_id, relayed = await _post(proxy.base_url + edge.path.removeprefix("/v1"), edge.request)
    assert relayed == stream_body(edge)
    await proxy.drain()
    rec = await proxy.store.get(rec_id)
    assert rec is not None and rec.reply == edge.reply and rec.outcome == "complete"


MALFORMED = [
    b"data: not json\n\n",
    b": keep-alive\r\n\r\n",
    b"event: mystery\rdata: {}\r\r",
    b"data:{\"a\":\ndata: 1}\n\n",
    b"data: \xff\xfe broken utf-8\n\n",
    b"data: {\"truncated\": ",
]


async def test_malformed_stream_relayed_unchanged_and_noted(fake_upstream: FakeUpstream, proxy: RunningProxy) -> None:
    events = SHAPES["chat_simple"].events
    body = events[0] + b"".join(MALFORMED[:-1]) + b"".join(events[1:]) + MALFORMED[-1]
    fake_upstream.sse("/v1/chat/completions", resplit(body, [5, 11]))
    rec_id, relayed = await _post(proxy.base_url + "/chat/completions", SHAPES["chat_simple"].request)
    assert relayed == body
    await proxy.drain()
    rec = await proxy.store.get(rec_id)
    assert rec is not None and rec.body == body and rec.outcome == "complete"
    assert rec.notes, "parse problems are noted"
    assert rec.reply is not None and rec.reply["choices"][0]["message"]["content"] == SHAPES["chat_simple"].text
    # the proxy keeps serving
    fake_upstream.sse("/v1/chat/completions", events)
    _, again = await _post(proxy.base_url + "/chat/completions", SHAPES["chat_simple"].request)
    assert again == stream_body(SHAPES["chat_simple"])


@pytest.mark.parametrize("name", ["chat_tools", "completions", "responses_text"])
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
async def test_any_split_across_writes_gives_the_same_bytes_chunks_and_reply(
    fake_upstream: FakeUpstream, proxy: RunningProxy, name: str, data: st.DataObject
) -> None:
    shape = SHAPES[name]
    body = stream_body(shape)
    cuts = sorted(data.draw(st.sets(st.integers(1, len(body) - 1), max_size=40)))
    writes = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    fake_upstream.sse(shape.path, writes)
    rec_id, relayed = await _post(proxy.base_url + shape.path.removeprefix("/v1"), shape.request)
    assert relayed == body
    await proxy.drain()
    rec = await proxy.store.get(rec_id)
    assert rec is not None
    assert rec.chunks == shape.events
    assert rec.reply == shape.full
