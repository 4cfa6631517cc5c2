"""``/ui`` in a real headless Chromium: list, filter, open a recording, read the reply and the timeline.

Needs Debian's ``chromium`` and the ``playwright`` package (never ``playwright install``). Without
them the browser test skips with a reason; with ``STREAMPROXY_REQUIRE_BROWSER=1`` (CI) it fails.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import ProxyFactory, RunningProxy
from tests.recordings import T0, make_record

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]
ADMIN = "admin-token-for-the-ui-test"


def _require_browser() -> Any:
    reason = None
    try:
        from playwright.async_api import async_playwright, expect
    except ImportError:
        reason = "the playwright package is not installed (pip install playwright)"
    if reason is None and not CHROMIUM.exists():
        reason = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    if reason is not None:
        if os.environ.get("STREAMPROXY_REQUIRE_BROWSER") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return async_playwright, expect


@pytest.fixture
def expect() -> Any:
    """playwright's retrying assertions."""
    return _require_browser()[1]


@pytest.fixture
async def page() -> AsyncIterator[Any]:
    async_playwright = _require_browser()[0]
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context()
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" and "401" not in msg.text else None)
            yield page
            assert errors == [], f"the page logged errors: {errors}"
            await context.close()
        finally:
            await browser.close()


@pytest.fixture
async def ui_proxy(proxy_factory: ProxyFactory) -> RunningProxy:
    proxy = await proxy_factory(admin_token=ADMIN)
    stalled = [40.0, 60.0, 80.0, 1500.0, 1520.0, 1540.0]  # five words and [DONE]; a long stall before the 4th
    await proxy.store.insert(
        [
            make_record("What is the capital of France?", "Paris is the capital.", model="gpt-4o", at=T0),
            make_record(
                "Tell me about <script>alert(1)</script> tags",
                "They run code in pages.",
                model="gpt-4o-mini",
                at=T0 + timedelta(minutes=1),
                offsets_ms=stalled,
                duration_ms=1550.0,
            ),
            make_record("Name a colour", "Blue is one.", model="gpt-4o-mini", at=T0 + timedelta(minutes=2)),
        ]
    )
    return proxy


async def test_browse_filter_and_read_a_recording(ui_proxy: RunningProxy, page: Any, expect: Any) -> None:
    await page.goto(ui_proxy.url + "/ui")
    await page.fill("#token", ADMIN)  # the page asks for the admin token once
    await page.click("#token-form button")
    rows = page.locator("#recordings tbody tr")
    await expect(rows).to_have_count(3)

    await page.fill("input[name=model]", "gpt-4o-mini")
    await page.fill("input[name=search]", "script")
    await page.click("#filters button[type=submit]")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text("gpt-4o-mini")
    assert "search=script" in page.url  # the filters are in the address, to share or reload

    await rows.first.click()
    await expect(page.locator("#detail-view")).to_be_visible()
    await expect(page.locator("#reply .message")).to_have_count(1)
    assert "They run code in pages." in await page.inner_text("#reply")
    assert "<script>alert(1)</script>" in await page.inner_text("#conversation")  # shown as text, never run
    assert await page.locator("#timeline .chunk").count() == 6  # one mark per chunk
    assert await page.locator("#timeline .gap").count() == 1  # the stall stands out
    facts = await page.inner_text("#facts")
    assert "3f9a0c1b2d4e" in facts and "complete" in facts and "40 ms" in facts and "1550 ms" in facts

    await page.click("#back")
    await expect(page.locator("#list-view")).to_be_visible()
    await expect(rows).to_have_count(1)  # back to the filtered list
    await page.reload()  # the token stays for this tab, the filters stay in the address
    await expect(rows).to_have_count(1)
    await expect(page.locator("input[name=search]")).to_have_value("script")
    await page.click("#clear")
    await expect(rows).to_have_count(3)
    await expect(page.locator("input[name=search]")).to_have_value("")


async def test_ui_needs_the_admin_token(ui_proxy: RunningProxy) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(ui_proxy.url + "/ui") as r:
            assert r.status == 401
            page = await r.text()
            assert "Admin token" in page and "capital of France" not in page  # the page alone holds no data
        async with s.get(ui_proxy.url + "/ui", headers={"Authorization": f"Bearer {ADMIN}"}) as r:
            assert r.status == 200 and r.content_type == "text/html"
            assert "script-src 'sha256-" in r.headers["Content-Security-Policy"]
        async with s.get(ui_proxy.url + "/recordings", headers={"Authorization": "Bearer wrong"}) as r:
            assert r.status == 401


async def test_ui_is_loopback_only_without_a_token(proxy: RunningProxy) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(proxy.url + "/ui") as r:
            assert r.status == 200 and "<title>streamproxy" in await r.text()


async def test_more_pages_through_the_list_on_loopback_without_a_token(proxy: RunningProxy, page: Any, expect: Any) -> None:
    await proxy.store.insert([make_record(f"question {i}", f"answer {i}", at=T0 + timedelta(seconds=i)) for i in range(55)])
    await page.goto(proxy.url + "/ui")
    rows = page.locator("#recordings tbody tr")
    await expect(rows).to_have_count(50)  # no token asked for: loopback and no --admin-token
    await expect(page.locator("#token-panel")).to_be_hidden()
    await page.click("#more")
    await expect(rows).to_have_count(55)
    await expect(page.locator("#more")).to_be_hidden()
    await expect(rows.last).to_contain_text(":00:00")  # the oldest comes last
