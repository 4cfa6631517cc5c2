"""Bad input: a clear error, nothing lost, the proxy keeps serving, and no client ever chooses
where the proxy connects."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest

from tests.conftest import API_KEY, ProxyFactory, RunningProxy
from tests.faultkit import json_body, raw_request, recording, status_of, still_serves, trap_server
from tests.fakes import FakeUpstream
from tests.test_relay import REQUEST


def port_of(proxy: RunningProxy) -> int:
    return int(proxy.url.rsplit(":", 1)[1])


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_body_over_max_body_is_an_openai_shaped_413_and_recorded(
    proxy_factory: ProxyFactory, fake_upstream: FakeUpstream, chunked: bool
) -> None:
    proxy = await proxy_factory(max_body=1024)
    big = orjson.dumps({**REQUEST, "messages": [{"role": "user", "content": "x" * 4096}]})

    async def pieces() -> AsyncIterator[bytes]:
        for i in range(0, len(big), 512):
            yield big[i : i + 512]

    body = pieces() if chunked else big
    async with aiohttp.ClientSession() as s:
        async with s.post(proxy.base_url + "/chat/completions", data=body, headers={"Authorization": f"Bearer {API_KEY}"}) as r:
            assert r.status == 413
            err = (await r.json())["error"]
            rec_id = r.headers["X-Recording-Id"]
    assert err["code"] == "request_too_large" and "1024" in err["message"]
    assert fake_upstream.received == []
    rec = await recording(proxy, rec_id)
    assert rec.status == 413 and rec.path == "/v1/chat/completions" and rec.request_headers["authorization"] == "[redacted]"
    await still_serves(fake_upstream, proxy)


@pytest.mark.parametrize(
    "body",
    [b'{"model": "gpt-4o-mini", "messages": [', b"not json at all \xc3\xa9", b"\xff\xfe\x00binary"],
    ids=["truncated-json", "text", "binary"],
)
async def test_invalid_json_body_is_forwarded_unchanged_and_recorded_raw(
    fake_upstream: FakeUpstream, proxy: RunningProxy, body: bytes
) -> None:
    fake_upstream.json("/v1/chat/completions", {"error": {"message": "bad json", "type": "invalid_request_error", "code": None}}, status=400)
    async with aiohttp.ClientSession() as s:
        async with s.post(proxy.base_url + "/chat/completions", data=body, headers={"Content-Type": "application/json"}) as r:
            assert r.status == 400
            rec_id = r.headers["X-Recording-Id"]
    assert fake_upstream.received[-1].body == body
    rec = await recording(proxy, rec_id)
    assert rec.request_body == body and rec.outcome == "complete" and rec.model is None


@pytest.mark.parametrize("path", ["/", "/v2/chat/completions", "/v1x", "/v10/models", "/admin/../v2"])
async def test_paths_outside_v1_are_openai_shaped_404s(fake_upstream: FakeUpstream, proxy: RunningProxy, path: str) -> None:
    resp = await raw_request(port_of(proxy), f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    assert status_of(resp) == 404
    assert json_body(resp)["error"]["code"] == "not_found"  # type: ignore[index]
    assert fake_upstream.received == []


@pytest.mark.parametrize(
    "headers",
    [
        b"X-Huge: " + b"a" * 200_000 + b"\r\n",
        b"".join(b"X-Many-%d: v\r\n" % i for i in range(2000)),
        "X-Name: J\u00fcrgen \u2713\r\n".encode(),
        b"X-Bad\x01Name: v\r\n",
        b"X-Control: a\x00b\r\n",
    ],
    ids=["huge", "many", "non-ascii", "bad-name", "nul-in-value"],
)
async def test_absurd_headers_get_a_clear_error_and_the_proxy_keeps_serving(
    fake_upstream: FakeUpstream, proxy: RunningProxy, headers: bytes
) -> None:
    fake_upstream.json("/v1/models", {"object": "list", "data": []})
    resp = await raw_request(port_of(proxy), b"GET /v1/models HTTP/1.1\r\nHost: x\r\n" + headers + b"Connection: close\r\n\r\n")
    status = status_of(resp)
    if status == 200:  # accepted: then it went to the configured upstream, and nowhere else
        assert fake_upstream.received[-1].path == "/v1/models"
        await proxy.drain()
    else:
        assert 400 <= status < 500 and status != 404, resp[:300]
        assert resp.partition(b"\r\n\r\n")[2].strip(), "an error without a word of explanation"
    await still_serves(fake_upstream, proxy)


@pytest.mark.parametrize(
    "request_line",
    [
        "GET http://127.0.0.1:{trap}/v1/models HTTP/1.1",
        "GET http://127.0.0.1:{trap}/../v1/models HTTP/1.1",
        "GET //127.0.0.1:{trap}/v1/models HTTP/1.1",
        "GET /v1/..%2f..%2f@127.0.0.1:{trap}/v1/models HTTP/1.1",
        "GET /v1//127.0.0.1:{trap}/v1/models HTTP/1.1",
        "GET /v1/models HTTP/1.1",
    ],
    ids=["absolute-uri", "absolute-dotdot", "scheme-relative", "encoded-traversal", "double-slash", "forged-host-only"],
)
async def test_client_never_chooses_where_the_proxy_connects(
    fake_upstream: FakeUpstream, proxy: RunningProxy, request_line: str
) -> None:
    fake_upstream.json("/v1/models", {"object": "list", "data": []})
    async with trap_server() as (trap, contacts):
        line = request_line.format(trap=trap)
        data = f"{line}\r\nHost: 127.0.0.1:{trap}\r\nX-Forwarded-Host: 127.0.0.1:{trap}\r\nConnection: close\r\n\r\n"
        resp = await raw_request(port_of(proxy), data.encode())
        await proxy.drain()
    assert contacts == [], f"the proxy connected where the client pointed: {line}"
    status = status_of(resp)
    assert status in (200, 400, 404), resp[:300]
    for got in fake_upstream.received:
        assert got.headers.get("Host") == fake_upstream.url.removeprefix("http://")
    if status == 200:
        assert fake_upstream.received[-1].path.startswith("/v1/")


async def test_connect_method_is_refused_and_goes_nowhere(fake_upstream: FakeUpstream, proxy: RunningProxy) -> None:
    async with trap_server() as (trap, contacts):
        resp = await raw_request(
            port_of(proxy), f"CONNECT 127.0.0.1:{trap} HTTP/1.1\r\nHost: 127.0.0.1:{trap}\r\n\r\n".encode()
        )
    assert contacts == [] and fake_upstream.received == []
    assert 400 <= status_of(resp) < 500 and resp.partition(b"\r\n\r\n")[2].strip()
    await still_serves(fake_upstream, proxy)
