"""Keys and tokens: proxy keys admit callers and the upstream key replaces them; no credential is
ever written anywhere; the audit API is closed off loopback without the admin token."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import subprocess
import sys
from collections.abc import Awaitable
from pathlib import Path

import aiohttp
import openai
import orjson
import pytest
from aiohttp import web

from proxy.credentials import fingerprint
from tests.conftest import ProxyFactory, RunningProxy
from tests.faultkit import db_file_of, non_loopback_address, recording, sdk_error, spool_files, sqlite_write_lock, wait_until
from tests.fakes import FakeUpstream, Script
from tests.processes import ServeProcess
from tests.recorded import cli
from tests.test_relay import PIECES, REQUEST, chat_events

CLIENT_KEY = "sk-proxyclient-RECOGNISABLE-7f3a9c1d"
OTHER_CLIENT_KEY = "sk-proxyclient-RECOGNISABLE-second-22"
UPSTREAM_KEY = "sk-upstream-RECOGNISABLE-51e2d0aa"
WRONG_KEY = "sk-wrong-RECOGNISABLE-0badbeef"
ADMIN_TOKEN = "admin-RECOGNISABLE-c0ffee99"
COOKIE = "session=COOKIE-RECOGNISABLE-abc123"
QUERY_KEY = "query-key-RECOGNISABLE-77aa"
SECRETS = (CLIENT_KEY, OTHER_CLIENT_KEY, UPSTREAM_KEY, WRONG_KEY, ADMIN_TOKEN, "COOKIE-RECOGNISABLE", QUERY_KEY)


def keyed(proxy_factory: ProxyFactory, **kw: object) -> Awaitable[RunningProxy]:
    """A proxy that admits only the two client keys and calls upstream with its own."""
    return proxy_factory(client_keys=frozenset({CLIENT_KEY, OTHER_CLIENT_KEY}), upstream_key=UPSTREAM_KEY, **kw)


async def test_admitted_client_key_is_replaced_by_the_upstream_key(proxy_factory: ProxyFactory, fake_upstream: FakeUpstream) -> None:
    proxy = await keyed(proxy_factory)
    fake_upstream.sse("/v1/chat/completions", chat_events(PIECES))
    client = openai.AsyncOpenAI(
        base_url=proxy.base_url, api_key=CLIENT_KEY, max_retries=0, default_headers={"api-key": CLIENT_KEY, "x-api-key": CLIENT_KEY}
    )
    try:
        raw = await client.chat.completions.with_raw_response.create(**REQUEST, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in raw.parse() if c.choices])
    finally:
        await client.close()
    assert text == "".join(PIECES)
    up = fake_upstream.received[-1]
    assert up.headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert not any(CLIENT_KEY in v for v in up.headers.values()), "the proxy key leaked upstream"
    rec = await recording(proxy, raw.headers["x-recording-id"])
    assert rec.key_fingerprint == fingerprint(CLIENT_KEY) and rec.outcome == "complete"


@pytest.mark.parametrize(
    ("query", "recorded"),
    [
        ("api-version=2024-06-01", "api-version=2024-06-01"),
        (f"api-version=1&api-key={QUERY_KEY}", "api-version=1&api-key=[redacted]"),
        (f"access_token={QUERY_KEY}&x=1&Key={QUERY_KEY}", "access_token=[redacted]&x=1&Key=[redacted]"),
        (f"x-goog-api-key={QUERY_KEY}", "x-goog-api-key=[redacted]"),
    ],
)
async def test_credentials_in_the_query_go_upstream_but_are_not_recorded(
    fake_upstream: FakeUpstream, proxy_factory: ProxyFactory, query: str, recorded: str
) -> None:
    proxy = await proxy_factory()
    fake_upstream.json("/v1/models", {"object": "list", "data": []})
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{proxy.base_url}/models?{query}") as r:
            assert r.status == 200
            rec_id = r.headers["X-Recording-Id"]
    assert fake_upstream.received[-1].query == query
    rec = await recording(proxy, rec_id)
    assert rec.query == recorded


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Bearer {WRONG_KEY}"},
        {},
        {"api-key": CLIENT_KEY},  # a listed key, but not as Bearer
        {"Authorization": f"Basic {CLIENT_KEY}"},
    ],
    ids=["wrong-key", "no-key", "api-key-header", "not-bearer"],
)
async def test_refused_key_is_an_openai_shaped_401_recorded_by_fingerprint(
    proxy_factory: ProxyFactory, fake_upstream: FakeUpstream, headers: dict[str, str]
) -> None:
    proxy = await keyed(proxy_factory)
    async with aiohttp.ClientSession() as s:
        async with s.post(proxy.base_url + "/chat/completions", json=REQUEST, headers=headers) as r:
            assert r.status == 401
            body = await r.read()
            rec_id = r.headers["X-Recording-Id"]
    assert orjson.loads(body)["error"]["code"] == "invalid_api_key"
    assert fake_upstream.received == []
    for secret in SECRETS:
        assert secret.encode() not in body
    rec = await recording(proxy, rec_id)
    assert rec.status == 401 and rec.request_headers.get("authorization", "[redacted]") == "[redacted]"
    sent = headers.get("Authorization", "").removeprefix("Bearer ") or headers.get("api-key")
    assert rec.key_fingerprint == fingerprint(sent)


async def test_sdk_sees_authentication_error_for_a_wrong_key(proxy_factory: ProxyFactory) -> None:
    proxy = await keyed(proxy_factory)
    err = await sdk_error(proxy.base_url, WRONG_KEY, openai.AuthenticationError)
    assert err.status_code == 401 and WRONG_KEY not in str(err)


async def get_status(
    url: str, token: str | None = None, local_addr: tuple[str, int] | None = None, headers: dict[str, str] | None = None
) -> int:
    headers = {**(headers or {}), **({"Authorization": f"Bearer {token}"} if token else {})}
    connector = aiohttp.TCPConnector(local_addr=local_addr) if local_addr else None
    async with aiohttp.ClientSession(connector=connector) as s:
        async with s.get(url, headers=headers) as r:
            if r.status in (401, 403) and r.content_type == "application/json":  # /ui answers with its login page
                assert "error" in await r.json()
            return r.status


async def test_admin_token_is_required_from_loopback_too(proxy_factory: ProxyFactory) -> None:
    proxy = await proxy_factory(admin_token=ADMIN_TOKEN)
    for path in ("/recordings", "/recordings/01ABC", "/ui"):
        assert await get_status(proxy.url + path) == 401
        assert await get_status(proxy.url + path, token="not-" + ADMIN_TOKEN) == 401
    assert await get_status(proxy.url + "/recordings", token=ADMIN_TOKEN) == 200
    assert await get_status(proxy.url + "/recordings/01ABC", token=ADMIN_TOKEN) == 404
    assert await get_status(proxy.url + "/healthz") == 200
    assert await get_status(proxy.url + "/metrics") == 200


async def test_audit_api_refuses_non_loopback_callers_without_a_token(proxy_factory: ProxyFactory) -> None:
    addr = non_loopback_address()
    if addr is None:
        pytest.skip("this machine has no non-loopback address to call from")
    for token in (None, ADMIN_TOKEN):
        proxy = await proxy_factory(admin_token=token)
        site = web.TCPSite(proxy.runner, addr, 0)  # the same app, also listening on this machine's own address
        await site.start()
        port = next(a[1] for a in proxy.runner.addresses if a[0] == addr)
        outside = f"http://{addr}:{port}"
        assert await get_status(outside + "/recordings", local_addr=(addr, 0)) == (403 if token is None else 401)
        spoofed = {"X-Forwarded-For": "127.0.0.1", "Forwarded": "for=127.0.0.1", "X-Real-IP": "127.0.0.1"}
        assert await get_status(outside + "/recordings", local_addr=(addr, 0), headers=spoofed) == (403 if token is None else 401)
        assert await get_status(outside + "/ui", local_addr=(addr, 0)) == (403 if token is None else 401)
        assert await get_status(outside + "/healthz", local_addr=(addr, 0)) == 200
        if token:
            assert await get_status(outside + "/recordings", token=token, local_addr=(addr, 0)) == 200
        else:  # loopback is still let in, 127.0.0.2 included
            assert await get_status(proxy.url + "/recordings", local_addr=("127.0.0.2", 0)) == 200


def serve_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "proxy", "serve", *args], capture_output=True, text=True, cwd=cwd, timeout=60)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "external"])
def test_serve_refuses_to_bind_off_loopback_without_a_token(tmp_path: Path, host: str) -> None:
    if host == "external":
        host = non_loopback_address() or pytest.skip("this machine has no non-loopback address")
    r = serve_cli("--host", host, "--port", "0", "--db", f"sqlite+aiosqlite:///{tmp_path / 'x.db'}", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "--admin-token" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x.db").exists()


def test_serve_refuses_an_upstream_url_carrying_credentials(tmp_path: Path) -> None:
    r = serve_cli("--upstream", f"http://someone:{UPSTREAM_KEY}@127.0.0.1:9/v1", "--port", "0", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "credentials" in r.stderr
    assert UPSTREAM_KEY not in r.stderr + r.stdout


class OffLoopbackServe(ServeProcess):
    def __init__(self, host: str, *args: str, log_path: Path) -> None:
        super().__init__(*args, "--host", host, log_path=log_path)
        self.host = host

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


async def test_serve_binds_off_loopback_with_a_token(tmp_path: Path, db_url: str) -> None:
    addr = non_loopback_address()
    if addr is None:
        pytest.skip("this machine has no non-loopback address")
    server = OffLoopbackServe(addr, "--db", db_url, "--admin-token", ADMIN_TOKEN, log_path=tmp_path / "serve.log")
    await server.start()
    try:
        assert await get_status(server.url + "/recordings", local_addr=(addr, 0)) == 401
        assert await get_status(server.url + "/recordings", token=ADMIN_TOKEN, local_addr=(addr, 0)) == 200
    finally:
        assert await server.stop() == 0
    assert ADMIN_TOKEN not in (tmp_path / "serve.log").read_text()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # faults injected into the SQLite file itself
async def test_no_credential_in_any_byte_the_proxy_writes(fake_upstream: FakeUpstream, tmp_path: Path, db_url: str) -> None:
    """A whole session with recognisable keys: every file, log line, export and answer is searched."""
    events = chat_events(PIECES)
    never = asyncio.Event()
    fake_upstream.sse("/v1/chat/completions", events)
    fake_upstream.script("/v1/responses", Script(steps=events[:2], cut=True))
    fake_upstream.script("/v1/completions", Script(steps=[events[0], never]))
    fake_upstream.json("/v1/models", {"error": {"message": "upstream refused", "type": "auth", "code": None}}, status=401)
    keys_file = tmp_path / "client-keys.txt"
    keys_file.write_text(f"# proxy keys\n{CLIENT_KEY}\n{OTHER_CLIENT_KEY}\n")
    log = tmp_path / "serve.log"
    server = ServeProcess(
        "--upstream", fake_upstream.url, "--db", db_url, "--client-keys", str(keys_file), "--admin-token", ADMIN_TOKEN,
        "--log-level", "debug", "--access-log", "--max-body", "2K",
        log_path=log, env={"OPENAI_API_KEY": UPSTREAM_KEY, "PYTHONASYNCIODEBUG": "1"},
    )
    await server.start()
    answers: list[bytes] = []
    extra = {"api-key": CLIENT_KEY, "x-api-key": OTHER_CLIENT_KEY, "Cookie": COOKIE, "X-Session-Token": CLIENT_KEY}
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key=CLIENT_KEY, max_retries=0, default_headers=extra)
    try:
        raw = await client.chat.completions.with_raw_response.create(**REQUEST, stream=True)
        answers.append(b"".join([c.model_dump_json().encode() async for c in raw.parse()]))
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {CLIENT_KEY}", "Cookie": COOKIE}) as s:
            for url, kw in [
                ("/v1/chat/completions", {"json": REQUEST, "headers": {"Authorization": f"Bearer {WRONG_KEY}"}}),
                ("/v1/chat/completions", {"json": {**REQUEST, "pad": "x" * 4096}}),
                ("/v1/models", {}),
                ("/v1/responses", {"json": REQUEST}),
                ("/v1/chat/completions", {"data": b"{not json", "headers": {"x-api-key": WRONG_KEY}}),
                (f"/v1/embeddings?api-version=1&api-key={QUERY_KEY}", {"json": REQUEST}),  # the fake's own 404
            ]:
                async with s.post(server.url + url, **kw) as r:  # type: ignore[arg-type]
                    answers.append(repr(dict(r.headers)).encode())
                    try:
                        answers.append(await r.read())
                    except aiohttp.ClientPayloadError:
                        pass
            r = await s.post(server.url + "/v1/completions", json=REQUEST)  # then the client hangs up
            answers.append(await r.content.readuntil(b"\n\n"))
            r.close()
            await asyncio.wait_for(fake_upstream.disconnected.wait(), 10)
            never.set()
            async with s.get(server.url + "/v1/models", headers={"Authorization": "Bearer " + CLIENT_KEY + "x" * 20_000}) as r:
                assert r.status == 400  # an absurd header carrying a key: the parser refuses it
            admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

            async def all_recorded() -> bool:
                async with s.get(server.url + "/recordings?limit=100", headers=admin) as r:
                    answers.append(await r.read())
                return len(orjson.loads(answers[-1])["recordings"]) == 8

            await wait_until(all_recorded, what="the session's 8 recordings")
            listing = orjson.loads(answers[-1])
            for item in listing["recordings"]:
                for view in ("?chunks=1", "/replay?speed=0"):
                    async with s.get(server.url + f"/recordings/{item['id']}{view}", headers=admin) as r:
                        with contextlib.suppress(aiohttp.ClientPayloadError):  # a cut replays as a cut
                            answers.append(await r.read())
            async with s.get(server.url + "/recordings", headers={"Authorization": f"Bearer {WRONG_KEY}"}) as r:
                answers.append(await r.read())
            for page in ("/metrics", "/ui"):
                async with s.get(server.url + page, headers=admin) as r:
                    answers.append(await r.read())
            # A database outage, so the spool gets written too.
            with sqlite_write_lock(db_file_of(db_url)):
                raw = await client.chat.completions.with_raw_response.create(**REQUEST, stream=True)
                answers.append(b"".join([c.model_dump_json().encode() async for c in raw.parse()]))
                spool = db_file_of(db_url).parent / (db_file_of(db_url).name + "-spool")
                await wait_until(lambda: bool(spool_files(spool)), what="the spool to be written")
                spooled = b"".join(p.read_bytes() for p in spool_files(spool))
                assert raw.headers["x-recording-id"].encode() in spooled
    finally:
        await client.close()
        assert await server.stop() == 0

    outputs = tmp_path / "outputs"
    outputs.mkdir()
    (outputs / "answers.bin").write_bytes(b"\n".join(answers) + spooled)
    commands = [["list", "--json"], ["show", listing["recordings"][0]["id"], "--json", "--chunks"]]
    commands += [["show", item["id"]] for item in listing["recordings"]]
    commands += [["replay", item["id"], "--speed", "0", "--raw"] for item in listing["recordings"]]
    commands.append(["export", "-o", str(outputs / "export.jsonl")])
    for i, args in enumerate(commands):
        r = await cli(*args, "--db", db_url)
        assert r.returncode == 0 or args[0] == "replay", r.stderr  # replaying a cut recording ends in its cut
        (outputs / f"cli-{i}.out").write_bytes(r.stdout + r.stderr.encode())

    assert "DEBUG" in log.read_text(), "the session did not run at debug level"
    assert len((outputs / "export.jsonl").read_bytes().splitlines()) == 9
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p != keys_file]
    assert any(p.name.endswith(".db") for p in written) and len(written) > 5
    for path in written:
        data = path.read_bytes()
        for secret in SECRETS:
            for form in (secret.encode(), base64.b64encode(secret.encode())):
                assert form not in data, f"{secret} found in {path.relative_to(tmp_path)}"
    assert fingerprint(CLIENT_KEY).encode() in db_file_of(db_url).read_bytes() + (tmp_path / "outputs" / "cli-0.out").read_bytes()
