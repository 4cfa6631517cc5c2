"""Finding and reading recordings: the audit API's filters and paging, its protection, and the
``list`` / ``show`` / ``db upgrade`` commands with and without ``--json``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from proxy.record import Outcome, Record
from proxy.store import Store, open_store
from tests.conftest import ProxyFactory, RunningProxy
from tests.recorded import cli
from tests.recordings import T0, make_record

ADMIN = "the-admin-token"


def corpus() -> list[Record]:
    now = datetime.now(UTC)
    return [
        make_record("rate limits?", "Depends on the tier.", model="gpt-4o", at=T0, key="aaaaaaaaaaaa"),
        make_record("capital of France", "Paris.", model="gpt-4o-mini", at=T0 + timedelta(hours=1), key="bbbbbbbbbbbb"),
        make_record("hang up early", "Par", model="gpt-4o-mini", at=now - timedelta(minutes=30), outcome=Outcome.CLIENT_CLOSED, key="aaaaaaaaaaaa"),
        make_record("list models", "[]", path="/v1/models", model=None, at=now - timedelta(minutes=5), key=None),
    ]


def with_tools(rec: Record) -> Record:
    """The same recording as a tool-calling conversation."""
    body = orjson.loads(rec.request_body)
    body["messages"] += [
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18°C and sunny"},
    ]
    rec.request_body = orjson.dumps(body)
    assert rec.reply is not None
    rec.reply["choices"][0]["message"]["tool_calls"] = [
        {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": '{"tz": "Europe/Paris"}'}}
    ]
    return rec


async def get(proxy: RunningProxy, route: str, token: str | None = None, **params: str) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as s:
        async with s.get(proxy.url + route, params=params, headers=headers) as r:
            return r.status, await r.json()


def models_of(page: dict[str, Any]) -> list[str | None]:
    return [r["model"] for r in page["recordings"]]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, [None, "gpt-4o-mini", "gpt-4o-mini", "gpt-4o"]),
        ({"model": "gpt-4o"}, ["gpt-4o"]),
        ({"outcome": "client_closed"}, ["gpt-4o-mini"]),
        ({"path": "/v1/models"}, [None]),
        ({"key": "aaaaaaaaaaaa"}, ["gpt-4o-mini", "gpt-4o"]),
        ({"search": "france paris"}, ["gpt-4o-mini"]),
        ({"since": "1h"}, [None, "gpt-4o-mini"]),
        ({"since": "2026-11-01T12:30:00Z", "until": "2026-11-01T14:00:00Z"}, ["gpt-4o-mini"]),
        ({"until": "2026-11-01T13:00:00"}, ["gpt-4o"]),  # no offset means UTC
        ({"model": "gpt-4o-mini", "since": "1h", "key": "aaaaaaaaaaaa", "outcome": "client_closed", "search": "hang"}, ["gpt-4o-mini"]),
    ],
)
async def test_recordings_filters(proxy: RunningProxy, params: dict[str, str], expected: list[str | None]) -> None:
    await proxy.store.insert(corpus())
    status, page = await get(proxy, "/recordings", **params)
    assert status == 200 and models_of(page) == expected


async def test_recordings_cursor_pages_newest_first(proxy: RunningProxy) -> None:
    await proxy.store.insert(corpus())
    seen: list[str] = []
    cursor = ""
    while True:
        status, page = await get(proxy, "/recordings", limit="3", **({"cursor": cursor} if cursor else {}))
        assert status == 200 and len(page["recordings"]) <= 3
        seen += [r["id"] for r in page["recordings"]]
        if page["next_cursor"] is None:
            break
        cursor = page["next_cursor"]
    assert len(seen) == 4 and seen == sorted(seen, reverse=True)


@pytest.mark.parametrize(
    ("params", "says"),
    [({"outcome": "fine"}, "unknown outcome"), ({"since": "yesterday"}, "not a time"), ({"limit": "many"}, "invalid literal")],
)
async def test_bad_parameters_are_400_and_the_proxy_keeps_serving(proxy: RunningProxy, params: dict[str, str], says: str) -> None:
    status, body = await get(proxy, "/recordings", **params)
    assert status == 400 and says in body["error"]["message"]
    assert (await get(proxy, "/recordings"))[0] == 200


async def test_admin_token_guards_every_audit_route(proxy_factory: ProxyFactory) -> None:
    proxy = await proxy_factory(admin_token=ADMIN)
    records = corpus()
    await proxy.store.insert(records)
    for route in ("/recordings", "/recordings/stats", f"/recordings/{records[0].id}"):
        assert (await get(proxy, route))[0] == 401
        assert (await get(proxy, route, token="wrong"))[0] == 401
        assert (await get(proxy, route, token=ADMIN))[0] == 200
    async with aiohttp.ClientSession() as s:
        for open_path in ("/healthz", "/metrics"):
            async with s.get(proxy.url + open_path) as r:
                assert r.status == 200


@pytest.fixture
async def cli_db(tmp_path: Path) -> tuple[str, list[Record]]:
    db = f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}"
    engine = await open_store(db, create=True)
    records = corpus()
    records[1] = with_tools(records[1])
    await Store(engine).insert(records)
    await engine.dispose()
    return db, records


async def test_list_filters_pages_and_json(cli_db: tuple[str, list[Record]], tmp_path: Path) -> None:
    db, records = cli_db
    out = await cli("list", "--json", "--model", "gpt-4o-mini", "--search", "capital", "--db", db)
    assert out.returncode == 0, out.stderr
    assert [r["id"] for r in orjson.loads(out.stdout)] == [records[1].id]

    first = await cli("list", "--limit", "2", "--db", db)
    assert first.returncode == 0 and len(first.stdout.decode().splitlines()) == 3  # header and two rows
    cursor = first.stderr.split("--cursor ")[1].strip()
    rest = orjson.loads((await cli("list", "--json", "--cursor", cursor, "--db", db)).stdout)
    assert [r["id"] for r in rest] == [records[1].id, records[0].id]

    bad = await cli("list", "--outcome", "fine", "--db", db)
    assert bad.returncode == 2 and bad.stderr.startswith("streamproxy: error: unknown outcome")


async def test_show_reads_as_a_conversation(cli_db: tuple[str, list[Record]], tmp_path: Path) -> None:
    db, records = cli_db
    out = await cli("show", records[1].id, "--db", db)
    assert out.returncode == 0, out.stderr
    text = out.stdout.decode()
    for expected in (
        "[system]", "Be brief.", "[user]", "capital of France",           # messages by role
        'tool call get_weather [call_1]: {"city": "Paris"}', "18°C and sunny",  # the tool round trip
        "=== reply ===", "Paris.", "tool call get_time",                   # the reply and its tool call
        "time to first byte 40.0 ms", "duration 400.0 ms",
        "tokens: prompt 5, completion 10", "(27.8 tokens/s)",               # 10 tokens over 360 ms
        "outcome complete", "key bbbbbbbbbbbb",
    ):
        assert expected in text, expected
    assert text.index("[user]") < text.index("=== reply ===")

    as_json = orjson.loads((await cli("show", records[1].id, "--json", "--db", db)).stdout)
    assert as_json["id"] == records[1].id and "chunks" not in as_json
    missing = await cli("show", "01NOTHERE", "--db", db)
    assert missing.returncode == 1 and "no recording 01NOTHERE" in missing.stderr


async def test_db_upgrade_json(tmp_path: Path) -> None:
    out = await cli("db", "upgrade", "--json", "--db", f"sqlite+aiosqlite:///{tmp_path / 'u.db'}")
    assert out.returncode == 0, out.stderr
    info = orjson.loads(out.stdout)
    assert info["revision"] == info["head"] == "0008"
