"""Upstream's cookies are relayed to the client that got them and never kept by the proxy."""

from __future__ import annotations

from tests.conftest import ProxyFactory
from tests.fakes import FakeUpstream, Script
from tests.test_relay import REQUEST, raw_post


async def test_a_cookie_set_for_one_client_is_not_sent_upstream_for_the_next(
    fake_upstream: FakeUpstream, proxy_factory: ProxyFactory
) -> None:
    # By name: a cookie jar would refuse cookies from a bare IP address anyway.
    proxy = await proxy_factory(upstream=fake_upstream.url.replace("127.0.0.1", "localhost"))
    fake_upstream.script(
        "/v1/chat/completions",
        Script(
            steps=[b'{"ok": true}'],
            headers={"Content-Type": "application/json", "Set-Cookie": "session=alice-only; Path=/"},
            content_length=True,
        ),
    )
    status, headers, _ = await raw_post(proxy.base_url + "/chat/completions", REQUEST)
    assert status == 200 and headers["Set-Cookie"] == "session=alice-only; Path=/"
    await raw_post(proxy.base_url + "/chat/completions", REQUEST)
    assert "Cookie" not in fake_upstream.received[1].headers
