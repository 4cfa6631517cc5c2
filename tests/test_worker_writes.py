"""With a SQLite file, the assembly worker writes the batches it assembles itself: the same rows,
byte for byte, as the store writes for the same recordings, found by search alike, and serve's
store is not asked. Faults while it writes are in ``test_durability`` (run both ways)."""

from __future__ import annotations

import contextlib
import copy
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from proxy.assembly_pool import AssemblyPool
from proxy.filters import Filters
from proxy.ids import new_id
from proxy.record import Record
from proxy.recorder import Recorder
from proxy.spool import Spool
from proxy.sqlite_batch import ALL, connect, index_backlog, index_some
from proxy.store import Store, open_store
from tests.shapes import EDGES, SHAPES
from tests.test_shapes_e2e import MALFORMED


class CountingStore(Store):
    """The real store, noting every batch it is asked to insert itself."""

    batches: list[int]

    async def insert(self, records: Sequence[Record]) -> None:
        self.batches.append(len(records))
        await super().insert(records)


def recordings() -> list[Record]:
    """Every shape, the malformed stream, and a plain JSON answer; one with a note made before assembly."""
    out: list[Record] = []
    for shape in [*SHAPES.values(), *EDGES.values()]:
        out.append(
            Record(
                id=new_id(), started_at=datetime.now(UTC), ended_at=datetime.now(UTC), method="POST", path=shape.path,
                request_headers={"content-type": "application/json"}, request_body=orjson.dumps(shape.request),
                status=200, response_headers={"content-type": "text/event-stream"}, chunks=list(shape.events),
                offsets_ms=[float(i) for i in range(len(shape.events))], ttfb_ms=1.5, duration_ms=9.25,
                model="gpt-test", stream=True, match_key="k" * 64,
            )
        )
    malformed = copy.deepcopy(out[0])
    malformed.id, malformed.chunks = new_id(), list(MALFORMED)
    malformed.offsets_ms = [0.0] * len(MALFORMED)
    malformed.notes = ["a note made before assembly"]
    plain = copy.deepcopy(out[0])
    plain.id, plain.stream = new_id(), False
    plain.response_headers = {"content-type": "application/json"}
    plain.chunks, plain.offsets_ms = [orjson.dumps(SHAPES["chat_simple"].full)], [3.0]
    return [*out, malformed, plain]


def raw_rows(db_file: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Both tables as SQLite holds them, and which recordings the search index holds each trigram of."""
    with contextlib.closing(sqlite3.connect(db_file)) as conn:
        tables = {t: conn.execute(f"SELECT * FROM {t} ORDER BY id").fetchall() for t in ("recordings", "recording_bodies")}
        tables["indexed"] = conn.execute(
            "SELECT s.id FROM recording_search s JOIN recording_search_fts f ON f.rowid = s.n"
            " WHERE recording_search_fts MATCH '\"the\"' ORDER BY s.id"
        ).fetchall()
    return tables


async def write(db_file: Path, recs: list[Record], workers: int) -> CountingStore:
    engine = await open_store(f"sqlite+aiosqlite:///{db_file}", create=True)
    store = CountingStore(engine)
    store.batches = []
    pool = AssemblyPool(workers) if workers else None
    if pool is not None:
        await pool.start()
    recorder = Recorder(store, Spool(db_file.parent / (db_file.name + "-spool")), pool=pool)
    await recorder.start()
    try:
        for rec in recs:
            recorder.submit(rec)
        await recorder.drain(timeout=30)
        assert recorder.stats.written == len(recs)
    finally:
        await recorder.close()
        if pool is not None:
            await pool.close()
        await engine.dispose()
    return store


@pytest.mark.parametrize("workers", [1, 2])  # two: each writes its share of a batch
async def test_the_worker_writes_the_rows_the_store_would(tmp_path: Path, workers: int) -> None:
    recs = recordings()
    by_store = await write(tmp_path / "store.db", copy.deepcopy(recs), workers=0)
    by_worker = await write(tmp_path / "worker.db", copy.deepcopy(recs), workers=workers)
    assert by_store.batches == [len(recs)]
    assert by_worker.batches == [], "serve's store is not asked to insert what the worker wrote"
    # What the worker wrote joins the search index when it has a quiet moment (migration 0006);
    # it stopped before it had one, or in it: either way the rest is indexed here.
    with contextlib.closing(connect(str(tmp_path / "worker.db"))) as db:
        index_some(db, ALL)
        assert index_backlog(db) == (0, 0)
    theirs, ours = raw_rows(tmp_path / "store.db"), raw_rows(tmp_path / "worker.db")
    assert len(ours["recordings"]) == len(recs) and ours["indexed"]
    assert ours == theirs


async def test_what_the_worker_wrote_is_found_and_read_back(tmp_path: Path) -> None:
    recs = recordings()
    await write(tmp_path / "worker.db", copy.deepcopy(recs), workers=1)
    engine = await open_store(f"sqlite+aiosqlite:///{tmp_path / 'worker.db'}", create=False)
    try:
        store = Store(engine)
        simple = recs[list(SHAPES).index("chat_simple")]
        stored = await store.get(simple.id)
        assert stored is not None and stored.reply == SHAPES["chat_simple"].full and stored.chunks == simple.chunks
        assert stored.offsets_ms == simple.offsets_ms
        word = SHAPES["chat_simple"].full["choices"][0]["message"]["content"].split()[-1].strip(".!,")
        found, _ = await store.list_recordings(Filters(search=word), limit=100)
        assert simple.id in {r.id for r in found}
        malformed = await store.get(recs[-2].id)
        assert malformed is not None and malformed.notes[0] == "a note made before assembly" and len(malformed.notes) > 1
    finally:
        await engine.dispose()


async def test_only_a_sqlite_file_is_written_by_the_worker(db_url: str, tmp_path: Path) -> None:
    engine = await open_store(db_url, create=True)
    try:
        job = Store(engine).direct_write(recordings()[:1])
        if db_url.startswith("sqlite"):
            assert job is not None and Path(job.database) == tmp_path / "streamproxy.db"
        else:
            assert job is None, "PostgreSQL's rows go through serve's own connection"
    finally:
        await engine.dispose()
    memory = await open_store("sqlite+aiosqlite:///:memory:", create=True)
    try:
        assert Store(memory).direct_write(recordings()[:1]) is None
    finally:
        await memory.dispose()
