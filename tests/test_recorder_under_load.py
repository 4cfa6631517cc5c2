"""The recorder under load: a burst shares one transaction; over the buffer, submit stays off the disk."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from proxy.filters import Filters
from proxy.ids import new_id
from proxy.record import Record
from proxy.recorder import Recorder, _size
from proxy.spool import Spool
from proxy.store import Store, open_store


class CountingStore(Store):
    """The real store, noting the size of every batch it is asked to insert."""

    batches: list[int]

    async def insert(self, records: Sequence[Record]) -> None:
        self.batches.append(len(records))
        await super().insert(records)


def record() -> Record:
    return Record(
        id=new_id(), started_at=datetime.now(UTC), method="POST", path="/v1/chat/completions",
        request_body=b'{"model": "m"}', status=200, response_headers={"content-type": "application/json"},
        chunks=[b'{"object": "chat.completion"}'], offsets_ms=[1.0],
    )


async def test_recordings_arriving_close_together_share_one_transaction(db_url: str, tmp_path: Path) -> None:
    engine = await open_store(db_url, create=True)
    store = CountingStore(engine)
    store.batches = []
    lags: list[float] = []
    recorder = Recorder(store, Spool(tmp_path / "spool"), observe_lag=lags.append)
    await recorder.start()
    try:
        recorder.submit(record())
        for _ in range(20):  # the recorder task gets to run, but the first recording waits for company
            await asyncio.sleep(0)
        recorder.submit(record())
        recorder.submit(record())
        await recorder.drain(timeout=10)
        assert store.batches == [3]
        assert await store.count() == 3
        assert len(lags) == 3 and all(lag >= 0 for lag in lags)
    finally:
        await recorder.close()
        await engine.dispose()


async def test_over_the_buffer_submit_leaves_the_disk_to_the_background_and_loses_nothing(
    db_url: str, tmp_path: Path
) -> None:
    engine = await open_store(db_url, create=True)
    store = Store(engine)
    spool_dir = tmp_path / "spool"
    # Room for twelve in memory, and a quarter as many more waiting to be spilled.
    recorder = Recorder(store, Spool(spool_dir), buffer_bytes=12 * _size(record()))
    await recorder.start()
    try:
        ids = []
        for _ in range(15):
            rec = record()
            ids.append(rec.id)
            recorder.submit(rec)
        assert recorder.depth == 15
        assert not spool_dir.exists() or not any(spool_dir.iterdir())  # nothing written in the caller's time
        await recorder.drain(timeout=10)
        assert recorder.stats.spooled == 3
        assert [r.id for r in (await store.list_recordings(Filters(), limit=20))[0]] == sorted(ids, reverse=True)
    finally:
        await recorder.close()
        await engine.dispose()
