"""CPU per recording that SQLite's search index adds to ``Store.insert``.

Inserts the same recordings (sealed, their search text already extracted, as the recorder hands
them over) through the real ``Store`` in batches, into a new SQLite file per run, three ways:

- **no index**: head with the trigger that feeds the search index dropped (the floor);
- **0002**: the FTS5 trigram table of migration 0002 (positions, sizes, case folding), i.e. the
  database taken down to revision 0003;
- **head**: the table as migration 0004 left it.

Prints CPU per recording inside ``Store.insert`` (all of the process's CPU while it runs: the
driver's thread and SQLite included), the median and the best of ``--rounds`` runs, the runs
alternating between the variants so that a busy machine weighs on each alike, and the file size.
The search text is ~``--chars`` characters of words drawn from a Zipf-like vocabulary, like
``bench/audit_list.py``'s.

    python bench/search_index.py
    python bench/search_index.py --rows 4000 --rounds 5 --chars 1700
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from alembic import command
from sqlalchemy import text

from proxy.ids import new_id
from proxy.record import Outcome, Record
from proxy.store import Store, open_store
from proxy.store.engine import _alembic_config

VARIANTS = ["no index", "0002", "head"]
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _texts(n: int, chars: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    nato = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliett", "kilo"]
    vocab = nato + ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 10))) for _ in range(5000)]
    out = []
    for _ in range(n):
        words: list[str] = []
        length = 0
        while length < chars:
            w = vocab[min(int(rng.paretovariate(1.1)) - 1, len(vocab) - 1)]
            words.append(w)
            length += len(w) + 1
        out.append(" ".join(words)[:chars])
    return out


def make_records(n: int, chars: int) -> list[Record]:
    records = []
    for i, search in enumerate(_texts(n, chars)):
        at = T0 + timedelta(seconds=i)
        chunk = b"data: " + orjson.dumps({"choices": [{"index": 0, "delta": {"content": search}}]}) + b"\n\n"
        rec = Record(
            id=new_id(at.timestamp()),
            started_at=at,
            ended_at=at,
            method="POST",
            path="/v1/chat/completions",
            request_headers={"content-type": "application/json"},
            request_body=orjson.dumps({"model": "gpt-4o-mini", "stream": True, "messages": []}),
            key_fingerprint="3f9a0c1b2d4e",
            model="gpt-4o-mini",
            stream=True,
            match_key="0" * 64,
            status=200,
            response_headers={"content-type": "text/event-stream"},
            chunks=[chunk, b"data: [DONE]\n\n"],
            offsets_ms=[0.0, 1.0],
            ttfb_ms=0.0,
            duration_ms=1.0,
            outcome=Outcome.COMPLETE,
            reply={"choices": [{"index": 0, "message": {"role": "assistant", "content": search}}]},
            assembled=True,
        )
        rec.search_text = search
        rec.seal()
        records.append(rec)
    return records


async def run(variant: str, records: list[Record], batch: int, db: Path) -> tuple[float, int]:
    """CPU seconds inside ``Store.insert`` for all the records, and the file's size after."""
    engine = await open_store(f"sqlite+aiosqlite:///{db}", create=True)
    try:
        async with engine.begin() as conn:
            if variant == "0002":
                await conn.run_sync(lambda c: command.downgrade(_alembic_config(c), "0003"))
            elif variant == "no index":
                await conn.execute(text("DROP TRIGGER recordings_search_ai"))
        store = Store(engine)
        cpu = 0.0
        for start in range(0, len(records), batch):
            t = time.process_time()
            await store.insert(records[start : start + batch])
            cpu += time.process_time() - t
    finally:
        await engine.dispose()
    return cpu, db.stat().st_size


async def main_async(args: argparse.Namespace) -> None:
    records = make_records(args.rows, args.chars)
    per_row: dict[str, list[float]] = {v: [] for v in VARIANTS}
    sizes: dict[str, int] = {}
    for n in range(args.rounds):
        for variant in VARIANTS:
            with tempfile.TemporaryDirectory() as tmp:
                cpu, size = await run(variant, records, args.batch, Path(tmp) / "bench.db")
            per_row[variant].append(cpu / len(records) * 1e6)
            sizes[variant] = size
        print(f"round {n + 1}: " + ", ".join(f"{v} {per_row[v][-1]:.0f} µs" for v in VARIANTS), flush=True)
    print()
    print(f"{args.rows} recordings, {args.chars} characters of search text, batches of {args.batch}; CPU µs per recording in Store.insert")
    floor = statistics.median(per_row["no index"])
    print(f"{'variant':10} | {'median':>6} | {'best':>6} | {'index':>6} | {'file MB':>7}")
    for v in VARIANTS:
        med = statistics.median(per_row[v])
        print(f"{v:10} | {med:6.0f} | {min(per_row[v]):6.0f} | {med - floor:6.0f} | {sizes[v] / 1e6:7.1f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=4000, help="recordings per run")
    p.add_argument("--chars", type=int, default=1700, help="characters of search text per recording")
    p.add_argument("--batch", type=int, default=200, help="recordings per Store.insert (the recorder's default batch)")
    p.add_argument("--rounds", type=int, default=5, help="runs of each variant")
    asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()
