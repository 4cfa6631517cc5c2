"""How fast ``list`` answers with a filter and a text search over many recordings.

    python bench/audit_list.py                       # 100,000 recordings in a temporary SQLite file
    python bench/audit_list.py --n 20000 --db postgresql+asyncpg://postgres@127.0.0.1/DB   # an empty database

Bulk-generates recordings (questions and answers drawn from a Zipf-like vocabulary, a few models,
keys and outcomes, spread over 30 days, a rare word planted in 20 of them), inserts them through
``Store.insert`` (so the search index is filled the way the recorder fills it), runs ``ANALYZE``,
then times the same query ``streamproxy list`` runs. Prints the median of several runs per query,
then the time of one ``stats`` over all of them.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy import text

from proxy.filters import Filters
from proxy.record import Outcome
from proxy.store import Store, open_store
from proxy.store.stats import GroupBy, compute_stats
from tests.recordings import T0, make_record

MODELS = ["gpt-4o-mini", "gpt-4o", "o3-mini", "llama-3.1-70b"]
KEYS = [f"{i:012x}" for i in range(1, 9)]
RARE = "zanzibarite"

QUERIES: list[tuple[str, dict[str, str]]] = [
    ("model + rare word", {"model": "gpt-4o", "search": RARE}),
    ("model + common word", {"model": "gpt-4o", "search": "alpha"}),
    ("model + two words", {"model": "gpt-4o-mini", "search": "alpha delta"}),
    ("model + phrase", {"model": "gpt-4o-mini", "search": '"alpha bravo"'}),
    ("key + outcome + word", {"key": KEYS[3], "outcome": "client_closed", "search": "kilo"}),
    ("time range + word", {"since": "2026-11-10T00:00:00Z", "until": "2026-11-12T00:00:00Z", "search": "echo"}),
    ("model only", {"model": "o3-mini"}),
    ("rare word only", {"search": RARE}),
]


def _vocabulary(rng: random.Random) -> list[str]:
    nato = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliett", "kilo"]
    made = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 10))) for _ in range(5000)]
    return nato + made


def _sentence(rng: random.Random, vocab: list[str], n: int) -> str:
    # Zipf-like: low indexes (the NATO words) are far more frequent.
    return " ".join(vocab[min(int(rng.paretovariate(1.1)) - 1, len(vocab) - 1)] for _ in range(n))


async def fill(store: Store, n: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    vocab = _vocabulary(rng)
    rare_at = set(rng.sample(range(n), 20))
    outcomes = [Outcome.COMPLETE] * 17 + [Outcome.CLIENT_CLOSED, Outcome.UPSTREAM_CLOSED, Outcome.UPSTREAM_ERROR]
    batch = []
    for i in range(n):
        question = _sentence(rng, vocab, rng.randint(8, 60))
        if i in rare_at:
            question += " " + RARE
        ttfb = rng.lognormvariate(5, 0.6)
        batch.append(
            make_record(
                question,
                _sentence(rng, vocab, rng.randint(10, 120)),
                model=rng.choice(MODELS),
                at=T0 + timedelta(seconds=30 * 86400 * i / n),
                key=rng.choice(KEYS),
                outcome=rng.choice(outcomes),
                ttfb_ms=ttfb,
                duration_ms=ttfb + rng.lognormvariate(7, 0.8),
                usage=(rng.randint(10, 2000), rng.randint(10, 800)),
            )
        )
        if len(batch) == 1000:
            await store.insert(batch)
            batch = []
    await store.insert(batch)


async def timed(store: Store, filters: Filters, runs: int) -> tuple[float, int]:
    times = []
    found = 0
    for _ in range(runs):
        t = time.perf_counter()
        records, _ = await store.list_recordings(filters, limit=50)
        times.append(time.perf_counter() - t)
        found = len(records)
    return statistics.median(times), found


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--db", help="an empty database URL (default: a temporary SQLite file)")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.db or f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        engine = await open_store(url, create=True)
        store = Store(engine)
        try:
            if await store.count() < args.n:
                t = time.perf_counter()
                await fill(store, args.n)
                print(f"inserted {args.n:,} recordings in {time.perf_counter() - t:.1f} s ({engine.dialect.name})")
            # What autovacuum (PostgreSQL) or PRAGMA optimize (SQLite) gives a database in use.
            async with engine.begin() as conn:
                await conn.execute(text("ANALYZE"))
            print(f"{'query':<24} {'median ms':>10} {'rows':>5}")
            for name, values in QUERIES:
                median, found = await timed(store, Filters.from_mapping(values), args.runs)
                print(f"{name:<24} {median * 1000:>10.1f} {found:>5}")
            for by in (None, GroupBy.MODEL):
                t = time.perf_counter()
                report = await compute_stats(store, Filters(), by)
                label = f"stats{' --by ' + by if by else ''}"
                print(f"{label:<24} {(time.perf_counter() - t) * 1000:>10.1f} {report.total.requests:>5}")
        finally:
            await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main())
