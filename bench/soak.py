"""Soak: minutes of mixed traffic through a real ``streamproxy serve`` with faults at random.

Traffic: streams, JSON calls, clients that hang up mid-stream, upstream cuts, 429s; and now and
then the SQLite database is locked by another connection for a few seconds (an outage). At the end
the proxy gets SIGTERM, and every recording id a client was handed is looked up in the database.

    python bench/soak.py --duration 120

Prints recordings expected vs stored (must be equal), outcome mismatches (must be 0), the spool
left behind (must be empty) and the proxy's peak RSS. Exits 1 if anything was lost. Not run in CI.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import random
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proxy.store import Store, open_store  # noqa: E402
from tests.faultkit import rss_kib, sqlite_write_lock  # noqa: E402
from tests.fakes import FakeUpstream, Script  # noqa: E402
from tests.processes import ServeProcess  # noqa: E402

REQUEST = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "soak"}], "stream": True}
# kind -> (weight, the status a client must see, the outcome its recording must have)
KINDS = {
    "stream": (40, 200, "complete"),
    "json": (20, 200, "complete"),
    "hangup": (15, 200, "client_closed"),
    "cut": (10, 200, "upstream_closed"),
    "ratelimited": (15, 429, "complete"),
}


def sse_events(n: int) -> list[bytes]:
    base = {"id": "chatcmpl-soak", "object": "chat.completion.chunk", "created": 1700000000, "model": "gpt-4o-mini"}
    out = [
        b"data: " + orjson.dumps({**base, "choices": [{"index": 0, "delta": {"content": f"word{i} "}, "finish_reason": None}]}) + b"\n\n"
        for i in range(n)
    ]
    return [*out, b"data: [DONE]\n\n"]


def paced(events: list[bytes], pause: float) -> list[bytes | float]:
    steps: list[bytes | float] = []
    for e in events:
        steps += [e, pause]
    return steps


def script_upstream(fake: FakeUpstream) -> None:
    fake.script("/v1/chat/completions", Script(steps=paced(sse_events(30), 0.005)))
    fake.script("/v1/soak/hangup", Script(steps=paced(sse_events(200), 0.01)))
    fake.script("/v1/soak/cut", Script(steps=paced(sse_events(30)[:10], 0.005), cut=True))
    fake.json("/v1/embeddings", {"object": "list", "data": [{"embedding": [0.1] * 64, "index": 0}]})
    fake.json("/v1/soak/ratelimited", {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit"}}, status=429)


@dataclass
class Tally:
    expected: dict[str, str] = field(default_factory=dict)  # recording id -> outcome
    kinds: collections.Counter[str] = field(default_factory=collections.Counter)
    client_errors: collections.Counter[str] = field(default_factory=collections.Counter)
    outages: list[float] = field(default_factory=list)
    rss_peak_kib: int = 0
    rss_warm_kib: int = 0  # a few seconds in, once every kind of request has been seen


async def one_request(s: aiohttp.ClientSession, base: str, kind: str, tally: Tally) -> None:
    url = {
        "stream": "/v1/chat/completions",
        "json": "/v1/embeddings",
        "hangup": "/v1/soak/hangup",
        "cut": "/v1/soak/cut",
        "ratelimited": "/v1/soak/ratelimited",
    }[kind]
    async with s.post(base + url, json=REQUEST, headers={"Authorization": "Bearer sk-soak"}) as r:
        rec_id = r.headers["X-Recording-Id"]
        tally.expected[rec_id] = KINDS[kind][2]
        tally.kinds[kind] += 1
        if r.status != KINDS[kind][1]:
            raise AssertionError(f"status {r.status}")
        if kind == "hangup":
            for _ in range(random.randint(1, 20)):
                await r.content.readuntil(b"\n\n")
            r.close()
        elif kind == "cut":
            try:
                await r.read()
            except aiohttp.ClientPayloadError:
                return
            raise AssertionError("an upstream cut reached the client as a clean end")
        else:
            await r.read()


async def worker(base: str, deadline: float, tally: Tally) -> None:
    names = list(KINDS)
    weights = [KINDS[k][0] for k in names]
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            kind = random.choices(names, weights)[0]
            try:
                await one_request(s, base, kind, tally)
            except (aiohttp.ClientError, AssertionError) as exc:
                tally.client_errors[f"{kind}: {type(exc).__name__}"] += 1


async def outages(db_file: Path, deadline: float, tally: Tally, every: float, length: float, limit: int) -> None:
    while len(tally.outages) < limit:
        wait = random.uniform(every / 2, every * 1.5)
        if time.monotonic() + wait + length > deadline:
            return
        await asyncio.sleep(wait)
        held = random.uniform(length / 2, length)
        start = time.monotonic()
        with sqlite_write_lock(db_file):
            await asyncio.sleep(held)
        tally.outages.append(time.monotonic() - start)


async def sample_rss(pid: int, stop: asyncio.Event, tally: Tally) -> None:
    warm_at = time.monotonic() + 5
    while not stop.is_set():
        current, peak = rss_kib(pid)
        tally.rss_peak_kib = max(tally.rss_peak_kib, current, peak)
        if not tally.rss_warm_kib and time.monotonic() > warm_at:
            tally.rss_warm_kib = current
        await asyncio.sleep(0.5)


async def soak(args: argparse.Namespace, workdir: Path) -> int:
    random.seed(args.seed)
    db_file = workdir / "soak.db"
    db_url = f"sqlite+aiosqlite:///{db_file}"
    fake = FakeUpstream()
    await fake.start()
    script_upstream(fake)
    server = ServeProcess("--upstream", fake.url, "--db", db_url, "--shutdown-grace", "10", log_path=workdir / "serve.log")
    await server.start()
    assert server.proc is not None
    tally = Tally()
    stop_sampling = asyncio.Event()
    sampler = asyncio.create_task(sample_rss(server.proc.pid, stop_sampling, tally))
    began = time.monotonic()
    deadline = began + args.duration
    try:
        await asyncio.gather(
            *(worker(server.url, deadline, tally) for _ in range(args.concurrency)),
            outages(db_file, deadline, tally, args.outage_every, args.outage_length, args.max_outages),
        )
        _, hwm = rss_kib(server.proc.pid)
        tally.rss_peak_kib = max(tally.rss_peak_kib, hwm)
    finally:
        stop_sampling.set()
        await sampler
        server.signal(signal.SIGTERM)
        exit_code = await server.wait(timeout=60)
        await fake.stop()
    elapsed = time.monotonic() - began

    engine = await open_store(db_url, create=False)
    try:
        store = Store(engine)
        stored: dict[str, str] = {}
        for rec_id in tally.expected:
            rec = await store.get(rec_id, chunks=False)
            if rec is not None:
                stored[rec_id] = str(rec.outcome)
        total_rows = await store.count()
    finally:
        await engine.dispose()
    spool = workdir / "soak.db-spool"
    spool_left = sum(p.stat().st_size for p in spool.glob("spool-*")) if spool.is_dir() else 0

    missing = [i for i in tally.expected if i not in stored]
    mismatched = {i: (tally.expected[i], stored[i]) for i in stored if stored[i] != tally.expected[i]}
    print(f"duration            {elapsed:.0f} s, {args.concurrency} clients, seed {args.seed}")
    print(f"requests            {sum(tally.kinds.values())} ({dict(tally.kinds)})")
    print(f"client-side errors  {dict(tally.client_errors) or 0}")
    print(f"database outages    {len(tally.outages)} ({', '.join(f'{o:.1f}s' for o in tally.outages) or '-'})")
    print(f"recordings expected {len(tally.expected)}")
    print(f"recordings stored   {len(stored)} (rows in database: {total_rows})")
    print(f"missing             {len(missing)} {missing[:5]}")
    print(f"outcome mismatches  {len(mismatched)} {list(mismatched.items())[:5]}")
    print(f"spool left          {spool_left} bytes")
    print(f"serve exit code     {exit_code}")
    print(f"RSS                 {tally.rss_warm_kib / 1024:.1f} MiB after 5 s, peak {tally.rss_peak_kib / 1024:.1f} MiB")
    ok = not missing and not mismatched and spool_left == 0 and exit_code == 0 and total_rows == len(tally.expected)
    print("RESULT              " + ("nothing lost" if ok else "LOST OR WRONG RECORDINGS"))
    return 0 if ok else 1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=120.0, help="seconds of traffic")
    p.add_argument("--concurrency", type=int, default=6, help="clients at once")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--outage-every", type=float, default=25.0, help="mean seconds between database outages")
    p.add_argument("--outage-length", type=float, default=8.0, help="longest outage, seconds")
    p.add_argument("--max-outages", type=int, default=10)
    p.add_argument("--workdir", type=Path, default=None, help="keep the database, spool and log here")
    args = p.parse_args()
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        sys.exit(asyncio.run(soak(args, args.workdir)))
    with tempfile.TemporaryDirectory(prefix="streamproxy-soak-") as tmp:
        sys.exit(asyncio.run(soak(args, Path(tmp))))


if __name__ == "__main__":
    main()
