"""``streamproxy prune`` on both backends: old recordings go in batches, newer ones stay."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from click.testing import CliRunner, Result

from proxy.cli import main
from proxy.filters import Filters
from proxy.ids import new_id
from proxy.record import Record
from proxy.store import Store, open_store


def _record(age: timedelta) -> Record:
    started = datetime.now(UTC) - age
    return Record(
        id=new_id(started.timestamp()),
        started_at=started,
        ended_at=started + timedelta(seconds=1),
        method="POST",
        path="/v1/chat/completions",
        request_body=b'{"model": "m"}',
        status=200,
        response_headers={"content-type": "text/event-stream"},
        chunks=[b"data: [DONE]\n\n"],
        offsets_ms=[5.0],
        assembled=True,
    )


async def _seed(db_url: str, old: int, new: int) -> tuple[list[str], list[str]]:
    olds = [_record(timedelta(days=40 + i)) for i in range(old)]
    news = [_record(timedelta(days=29 - i)) for i in range(new)]
    engine = await open_store(db_url, create=True)
    try:
        await Store(engine).insert(olds + news)
    finally:
        await engine.dispose()
    return [r.id for r in olds], [r.id for r in news]


async def _remaining(db_url: str) -> set[str]:
    engine = await open_store(db_url, create=False)
    try:
        store = Store(engine)
        ids = {r.id for r in (await store.list_recordings(Filters(), limit=1000))[0]}
        # Bodies go with their recordings.
        assert all(await asyncio.gather(*(_has_chunks(store, i) for i in ids)))
        return ids
    finally:
        await engine.dispose()


async def _has_chunks(store: Store, rec_id: str) -> bool:
    rec = await store.get(rec_id)
    return rec is not None and rec.chunks == [b"data: [DONE]\n\n"]


async def _prune(*args: str, input: str | None = None) -> Result:
    # CliRunner runs the command's own event loop, so it gets a thread of its own.
    return await asyncio.to_thread(CliRunner().invoke, main, ["prune", *args], input=input)


async def test_prune_deletes_only_older_recordings_in_batches(db_url: str) -> None:
    olds, news = await _seed(db_url, old=5, new=3)
    result = await _prune("--db", db_url, "--older-than", "30d", "--batch-size", "2", "--yes")
    assert result.exit_code == 0, result.output
    assert "deleted 5 recording(s)" in result.stdout
    assert "deleted 5 of 5 (100%)" in result.stderr
    assert await _remaining(db_url) == set(news)


async def test_prune_asks_first_and_dry_run_deletes_nothing(db_url: str) -> None:
    olds, news = await _seed(db_url, old=2, new=1)
    declined = await _prune("--db", db_url, "--older-than", "30d", input="n\n")
    assert declined.exit_code != 0 and "Delete 2 recording(s)?" in declined.stderr
    dry = await _prune("--db", db_url, "--older-than", "30d", "--dry-run")
    assert dry.exit_code == 0 and "2 recording(s)" in dry.stderr
    assert await _remaining(db_url) == set(olds + news)
    agreed = await _prune("--db", db_url, "--older-than", "30d", input="y\n")
    assert agreed.exit_code == 0, agreed.output
    assert await _remaining(db_url) == set(news)


def test_prune_bad_age_is_one_line() -> None:
    result = CliRunner().invoke(main, ["prune", "--older-than", "a month"])
    assert result.exit_code == 2 and result.stderr.startswith("streamproxy: error: not a time")
