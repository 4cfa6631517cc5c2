"""The recorder under load: a burst shares one transaction; over the buffer, submit stays off the disk."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from proxy.assembly_pool import AssemblyPool
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
    # Room for twelve in memory (as the recorder keeps them: sealed), and a quarter as many more waiting to be spilled.
    sealed = record()
    sealed.seal()
    recorder = Recorder(store, Spool(spool_dir), buffer_bytes=12 * _size(sealed))
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


def chat_record() -> Record:
    rec = record()
    rec.response_headers = {"content-type": "text/event-stream"}
    rec.chunks = [b'data: {"object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n']
    return rec


class SlowStore(CountingStore):
    """Each transaction takes a while, as a busy database's would; and the store writes every
    batch itself, as on PostgreSQL (the assembly worker writes SQLite files itself)."""

    def direct_write(self, records: Sequence[Record]) -> None:
        return None

    async def insert(self, records: Sequence[Record]) -> None:
        await asyncio.sleep(0.05)
        await super().insert(records)


async def test_the_next_batch_is_assembled_in_a_worker_while_one_is_written(db_url: str, tmp_path: Path) -> None:
    engine = await open_store(db_url, create=True)
    store = SlowStore(engine)
    store.batches = []
    pool = AssemblyPool(1)
    await pool.start()
    recorder = Recorder(store, Spool(tmp_path / "spool"), batch_size=10, pool=pool)
    await recorder.start()
    try:
        recs = [chat_record() for _ in range(55)]
        for r in recs:
            recorder.submit(r)
        await recorder.drain(timeout=30)
        assert sum(store.batches) == 55 and max(store.batches) == 10
        stored = [await store.get(r.id) for r in recs]
        assert all(s is not None and s.reply is not None and s.reply["choices"][0]["message"]["content"] == "hi" for s in stored)
    finally:
        await recorder.close()
        await pool.close()
        await engine.dispose()


async def test_closing_mid_pipeline_keeps_every_recording(db_url: str, tmp_path: Path) -> None:
    """Cut off while one batch is written and the next assembled: each recording ends up in the
    database or the spool, exactly once."""
    engine = await open_store(db_url, create=True)
    store = SlowStore(engine)
    store.batches = []
    pool = AssemblyPool(1)
    await pool.start()
    spool = Spool(tmp_path / "spool")
    recorder = Recorder(store, spool, batch_size=10, pool=pool)
    await recorder.start()
    recs = [chat_record() for _ in range(60)]
    try:
        for r in recs:
            recorder.submit(r)
        await asyncio.sleep(0.08)  # the first batch is being written, the second assembled
        await recorder.close(timeout=0.01)
    finally:
        await pool.close()
    spooled = [r.id for path in sorted(spool.directory.glob("spool-*")) for batch in Spool.read(path, 1000) for r in batch]
    stored = {r.id for r in (await store.list_recordings(Filters(), limit=1000))[0]}
    await engine.dispose()
    assert len(spooled) == len(set(spooled))
    assert stored | set(spooled) == {r.id for r in recs}
