"""Export and import through the CLI: JSON Lines that round-trip to byte-identical replays."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.conftest import API_KEY, ProxyFactory
from tests.fakes import FakeUpstream, Script
from tests.pgtest import PgDatabase
from tests.recorded import CASES, cli, fetch, record_cases
from tests.test_relay import REQUEST, chat_events


async def test_export_import_replay_round_trip(
    fake_upstream: FakeUpstream, proxy_factory: ProxyFactory, db_url: str, tmp_path: Path
) -> None:
    recorder = await proxy_factory()
    original = await record_cases(recorder, fake_upstream)
    await recorder.stop()

    first = tmp_path / "first.jsonl"
    exported = await cli("export", "--db", db_url, "-o", str(first))
    assert exported.returncode == 0, exported.stderr
    lines = first.read_bytes().splitlines()
    assert len(lines) == len(CASES)
    objs = [orjson.loads(line) for line in lines]
    assert [o["id"] for o in objs] == sorted(o["id"] for o in objs)  # oldest first
    assert all(next(iter(o)) == "format" and o["format"] == 1 for o in objs)
    assert API_KEY not in first.read_text()
    assert (await cli("export", "--db", db_url)).stdout == first.read_bytes()  # stable, to stdout too

    other_db = f"sqlite+aiosqlite:///{tmp_path / 'other.db'}"
    imported = await cli("import", str(first), "--db", other_db)
    assert imported.returncode == 0, imported.stderr
    assert f"imported {len(CASES)} new recording(s)" in imported.stderr
    again = await cli("import", str(first), "--db", other_db)
    assert again.returncode == 0 and f"imported 0 new recording(s) from {first} ({len(CASES)} already stored)" in again.stderr

    second = tmp_path / "second.jsonl"
    assert (await cli("export", "--db", other_db, "-o", str(second))).returncode == 0
    assert second.read_bytes() == first.read_bytes()

    await fake_upstream.stop()
    replayer = await proxy_factory(db=other_db, mode="replay", replay_speed=0)
    for case in CASES:
        got = await fetch("POST", replayer.url + case.path, case.request)
        want = original[case.name]
        assert (got.status, got.body, got.cut, got.recording_id) == (want.status, want.body, want.cut, want.recording_id), case.name


async def test_export_filters(fake_upstream: FakeUpstream, proxy_factory: ProxyFactory, db_url: str, tmp_path: Path) -> None:
    proxy = await proxy_factory()
    original = await record_cases(proxy, fake_upstream, ["chat_simple", "responses_text", "completions"])
    await proxy.stop()
    only = await cli("export", "--db", db_url, "--path", "/v1/responses")
    assert [orjson.loads(line)["id"] for line in only.stdout.splitlines()] == [original["responses_text"].recording_id]
    bad = await cli("export", "--db", db_url, "--outcome", "fine")
    assert bad.returncode == 2 and bad.stderr.startswith("streamproxy: error: unknown outcome 'fine'")


async def test_a_bad_line_is_named_and_every_good_line_is_imported(
    fake_upstream: FakeUpstream, proxy_factory: ProxyFactory, db_url: str, tmp_path: Path
) -> None:
    proxy = await proxy_factory()
    await record_cases(proxy, fake_upstream, ["chat_simple", "completions"])
    await proxy.stop()
    good = (await cli("export", "--db", db_url)).stdout.splitlines()
    unsupported = orjson.loads(good[0])
    unsupported["format"] = 2
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_bytes(b"\n".join([good[0], b"{not json", b"", orjson.dumps(unsupported), good[1], b'{"id": "x"}']) + b"\n")
    other_db = f"sqlite+aiosqlite:///{tmp_path / 'other.db'}"
    result = await cli("import", str(mixed), "--db", other_db)
    assert result.returncode == 1
    err = result.stderr
    assert f"{mixed}:2: not JSON" in err
    assert f"{mixed}:4: unsupported recording format 2" in err
    assert f"{mixed}:6: not a recording" in err
    assert "3 bad line(s)" in err and "Traceback" not in err
    back = (await cli("export", "--db", other_db)).stdout.splitlines()
    assert back == good


async def test_export_never_creates_a_database(tmp_path: Path) -> None:
    result = await cli("export", "--db", f"sqlite+aiosqlite:///{tmp_path / 'absent.db'}", "-o", str(tmp_path / "out.jsonl"))
    assert result.returncode != 0 and "no database" in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def pg_db_url(pg_database: PgDatabase) -> Iterator[str]:
    """A second PostgreSQL database beside this run's own, dropped afterwards."""
    other = PgDatabase()
    other.create()
    yield other.url
    other.drop()


@pytest.mark.postgres
async def test_import_into_postgresql_and_replay_from_it_in_order(
    fake_upstream: FakeUpstream, proxy_factory: ProxyFactory, db_url: str, tmp_path: Path, pg_db_url: str
) -> None:
    recorder = await proxy_factory()
    for word in ("first", "second"):
        fake_upstream.script("/v1/chat/completions", Script(steps=chat_events([word])), once=True)
        await fetch("POST", recorder.base_url + "/chat/completions", {**REQUEST, "stream": True})
    original = await record_cases(recorder, fake_upstream, ["chat_tools", "chat_truncated"])
    await recorder.stop()
    export = tmp_path / "all.jsonl"
    assert (await cli("export", "--db", db_url, "-o", str(export))).returncode == 0
    imported = await cli("import", str(export), "--db", pg_db_url)
    assert imported.returncode == 0, imported.stderr
    assert (await cli("export", "--db", pg_db_url)).stdout == export.read_bytes()

    replayer = await proxy_factory(db=pg_db_url, mode="replay", replay_speed=0)
    answers = [await fetch("POST", replayer.base_url + "/chat/completions", {**REQUEST, "stream": True}) for _ in range(3)]
    assert [a.body for a in answers] == [b"".join(chat_events([w])) for w in ("first", "second", "second")]
    for case in CASES:
        if case.name in original:
            got = await fetch("POST", replayer.url + case.path, case.request)
            assert (got.body, got.cut) == (original[case.name].body, original[case.name].cut), case.name
