"""Sustained recording throughput on SQLite and PostgreSQL, and how far the writer falls behind.

Drives the real ``Recorder`` over the real ``Store`` (assembly, batching, two-table inserts) with
streamed chat completions of ``--chunks`` SSE events each, as the relay hands them over:

- **max**: every recording submitted at once; recordings/s and chunks/s until all are committed.
- **paced R/s**: R recordings a second for ``--seconds``; the lag from submit to commit (p50, p99)
  shows how far behind the streams the writer runs at that load.

The recorder shares the event loop with the relay, so the table also shows the longest time the
loop was blocked while the writer worked (``stall max``): that long, no stream got a byte.

CPU per recording, in microseconds: ``CPU`` is the whole process (the recorder's assembly, the
inserts, SQLite itself, the watcher's ticks; paced, building the records too; the assembly
worker, which also writes SQLite batches, included), ``insert`` the process's CPU while a
``Store.insert`` was running (PostgreSQL, or SQLite without a worker) (clean under the max load, where nothing else
runs then), ``server`` PostgreSQL's backend processes for the bench database (read from
``/proc``: a server on this machine only).

Run by hand (PostgreSQL gets a database of its own, dropped at the end)::

    python bench/recording_throughput.py
    python bench/recording_throughput.py --backends sqlite --recordings 5000 --rates 100,400
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import orjson
from procs import cpu_seconds
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.assembly_pool import AssemblyPool
from proxy.ids import new_id
from proxy.record import Record
from proxy.recorder import Recorder
from proxy.spool import Spool
from proxy.store import Store, open_store


class TimedStore(Store):
    """The real store, noting the CPU its own inserts took (none where the assembly worker writes
    SQLite batches itself)."""

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine)
        self.insert_cpu = 0.0

    async def insert(self, records: Sequence[Record]) -> None:
        cpu = time.process_time()
        await super().insert(records)
        self.insert_cpu += time.process_time() - cpu


def _chunk(i: int) -> bytes:
    event = {
        "id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": {"content": f"token{i} "}, "finish_reason": None}],
    }
    return b"data: " + orjson.dumps(event) + b"\n\n"


def make_record(chunks: int) -> Record:
    """One finished, unassembled streamed chat completion, as the relay submits it."""
    body = [_chunk(i) for i in range(chunks - 1)] + [b"data: [DONE]\n\n"]
    return Record(
        id=new_id(),
        started_at=datetime.now(UTC),
        ended_at=datetime.now(UTC),
        method="POST",
        path="/v1/chat/completions",
        request_headers={"content-type": "application/json", "authorization": "[redacted]"},
        request_body=orjson.dumps(
            {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "Write a story."}]}
        ),
        key_fingerprint="3f9a0c1b2d4e",
        model="gpt-4o-mini",
        stream=True,
        match_key="0" * 64,
        status=200,
        response_headers={"content-type": "text/event-stream"},
        chunks=body,
        offsets_ms=[float(i) for i in range(len(body))],
        ttfb_ms=0.0,
        duration_ms=float(len(body)),
    )


@dataclass
class Row:
    backend: str
    load: str
    recordings: int
    seconds: float
    chunks: int
    lags: list[float]
    spooled: int
    stall: float
    cpu: float
    insert_cpu: float
    server_cpu: float | None

    def cells(self) -> list[str]:
        q = statistics.quantiles(self.lags, n=100) if len(self.lags) > 1 else self.lags * 99
        per_rec = [
            "-" if c is None else f"{c / max(self.recordings, 1) * 1e6:,.0f}"
            for c in (self.cpu, self.insert_cpu, self.server_cpu)
        ]
        return [
            self.backend, self.load, str(self.recordings), f"{self.recordings / self.seconds:,.0f}",
            f"{self.recordings * self.chunks / self.seconds:,.0f}", f"{q[49] * 1000:,.0f}", f"{q[98] * 1000:,.0f}",
            f"{self.stall * 1000:,.0f}", str(self.spooled), *per_rec,
        ]


HEADER = [
    "backend", "load", "recordings", "recordings/s", "chunks/s", "lag p50 ms", "lag p99 ms", "stall max ms", "spooled",
    "CPU µs/rec", "insert µs/rec", "server µs/rec",
]


async def _server_cpu(engine: AsyncEngine) -> dict[int, float] | None:
    """CPU seconds so far of each PostgreSQL backend on this engine's database; None for SQLite
    (it runs inside this process) or a server whose processes this machine cannot see."""
    if engine.dialect.name != "postgresql":
        return None
    async with engine.connect() as conn:
        pids = (await conn.scalars(text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()"))).all()
    try:
        return {pid: cpu_seconds(pid) for pid in pids}
    except OSError:
        return None


async def _watch_loop(worst: list[float]) -> None:
    """Tick every millisecond; note the longest the loop kept a tick waiting."""
    while True:
        t = time.monotonic()
        await asyncio.sleep(0.001)
        worst[0] = max(worst[0], time.monotonic() - t - 0.001)


async def run_load(
    db_url: str, backend: str, *, chunks: int, count: int, rate: float | None, batch: int, workers: int
) -> Row:
    """Submit ``count`` recordings (all at once, or ``rate`` a second) and wait until all are committed."""
    engine = await open_store(db_url, create=True)
    store = TimedStore(engine)
    pool = AssemblyPool(workers) if workers else None
    if pool is not None:
        await pool.start()
    with tempfile.TemporaryDirectory() as spool_dir:
        lags: list[float] = []  # submit to commit, as the recorder reports it for /metrics
        recorder = Recorder(
            store, Spool(Path(spool_dir)), buffer_bytes=2 * 1024**3, batch_size=batch, pool=pool, observe_lag=lags.append
        )
        await recorder.start()
        worst = [0.0]
        watcher = asyncio.create_task(_watch_loop(worst))
        server_before = await _server_cpu(engine)
        try:
            if rate is None:
                records = [make_record(chunks) for _ in range(count)]
                cpu = cpu_seconds(os.getpid())
                start = time.monotonic()
                for r in records:
                    recorder.submit(r)
            else:
                cpu = cpu_seconds(os.getpid())
                start = time.monotonic()
                for i in range(count):
                    # Pace against the clock, not by sleeping a fixed step: building records takes time too.
                    await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
                    recorder.submit(make_record(chunks))
            await recorder.drain()
            elapsed = time.monotonic() - start
            cpu = cpu_seconds(os.getpid()) - cpu
            server_after = await _server_cpu(engine)
        finally:
            watcher.cancel()
            await recorder.close()
            if pool is not None:
                await pool.close()
            await engine.dispose()
    load = "max" if rate is None else f"paced {rate:g}/s"
    server = None
    if server_before is not None and server_after is not None:
        # A backend that is gone by the end (recycled) is left out; one that started during the run counts whole.
        server = sum(after - server_before.get(pid, 0.0) for pid, after in server_after.items())
    return Row(
        backend, load, len(lags), elapsed, chunks, lags, recorder.stats.spooled, worst[0], cpu, store.insert_cpu, server
    )


async def _pg_admin(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def bench_backend(backend: str, args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    loads: list[tuple[float | None, int]] = [(None, args.recordings)]
    loads += [(r, int(r * args.seconds)) for r in args.rates]
    for rate, count in loads:
        with tempfile.TemporaryDirectory() as tmp:
            if backend == "sqlite":
                url = f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
                rows.append(await run_load(url, backend, chunks=args.chunks, count=count, rate=rate, batch=args.batch, workers=args.workers))
            else:
                name = f"streamproxy_bench_{secrets.token_hex(6)}"
                await _pg_admin(args.pg, f'CREATE DATABASE "{name}"')
                try:
                    url = "postgresql+asyncpg://" + args.pg.split("://", 1)[1].rsplit("/", 1)[0] + "/" + name
                    rows.append(
                        await run_load(url, backend, chunks=args.chunks, count=count, rate=rate, batch=args.batch, workers=args.workers)
                    )
                finally:
                    await _pg_admin(args.pg, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        print("  " + "  ".join(rows[-1].cells()), flush=True)
    return rows


def print_table(rows: list[Row]) -> None:
    table = [HEADER] + [r.cells() for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADER))]
    for n, line in enumerate(table):
        cells = (c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True)))
        print(" | ".join(cells))
        if n == 0:
            print("-+-".join("-" * w for w in widths))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backends", default="sqlite,postgres", help="comma separated: sqlite, postgres")
    p.add_argument(
        "--pg", default="postgresql://postgres@127.0.0.1:5432/test", help="PostgreSQL to create the bench database on"
    )
    p.add_argument("--recordings", type=int, default=2000, help="recordings in the max-throughput run")
    p.add_argument("--chunks", type=int, default=200, help="SSE events per recording")
    p.add_argument("--rates", default="50,200", help="paced loads, recordings a second (comma separated)")
    p.add_argument("--seconds", type=float, default=10.0, help="length of each paced run")
    p.add_argument("--workers", type=int, default=1, help="assembly worker processes (serve's default is 1; 0 = in-process)")
    p.add_argument("--batch", type=int, default=200, help="recorder batch size (the serve default is 200)")
    args = p.parse_args()
    args.rates = [float(x) for x in args.rates.split(",") if x.strip()]
    rows: list[Row] = []
    for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
        print(f"{backend}:", flush=True)
        rows += asyncio.run(bench_backend(backend, args))
    print()
    print_table(rows)


if __name__ == "__main__":
    main()
