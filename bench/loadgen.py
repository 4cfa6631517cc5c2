"""Load generator: N concurrent streams against a chat-completions URL, for a number of seconds
or a number of requests. Prints one JSON object:

- ``rps``: requests completed per second inside the measured window (after ``--warmup``);
- ``ttfb_ms``: time from sending the request to the first body byte, p50 / p99;
- ``chunk_ms``: per-chunk latency, from the send time the fake upstream embeds in each event
  to the read that delivered the event, p50 / p99;
- ``bytes_ok``: every body equal, byte for byte, to what the fake upstream sent
  (timestamps zeroed, then compared with the fixed template);
- ``chunks_total``: events received over the whole run (warm-up included), for CPU per chunk;
- ``last_id``: the greatest ``X-Recording-Id`` seen (ids sort by time), for recorder lag.

    python bench/loadgen.py --url http://127.0.0.1:9001/v1/chat/completions -c 100 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from array import array
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from fake_upstream import TS_RE, ZERO_TS, template
from procs import new_loop

REQUEST = orjson.dumps(
    {"model": "bench-model", "stream": True, "messages": [{"role": "user", "content": "Count to two hundred."}]}
)
# Per-chunk samples kept (8 bytes each): a long run keeps its first ones rather than grow without bound.
CHUNK_SAMPLES_CAP = 4_000_000
HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench-not-a-real-key"}


@dataclass
class Tally:
    measure_from: float
    measure_to: float
    expected: bytes
    done: int = 0
    chunks_total: int = 0
    bad_bodies: int = 0
    errors: int = 0
    first_error: str = ""
    last_id: str = ""
    ttfb_ms: array = field(default_factory=lambda: array("d"))
    chunk_ms: array = field(default_factory=lambda: array("d"))


async def one(session: aiohttp.ClientSession, url: str, t: Tally) -> None:
    reads: list[bytes] = []
    arrivals: list[int] = []  # time.time_ns() of each read
    start = time.perf_counter()
    ttfb = 0.0
    async with session.post(url, data=REQUEST, headers=HEADERS) as resp:
        rid = resp.headers.get("X-Recording-Id", "")
        async for data in resp.content.iter_any():
            arrivals.append(time.time_ns())
            if not reads:
                ttfb = time.perf_counter() - start
            reads.append(data)
        status = resp.status
    end = time.perf_counter()
    body = b"".join(reads)
    if rid > t.last_id:
        t.last_id = rid
    t.chunks_total += body.count(b"\n\n")
    if not (t.measure_from <= end <= t.measure_to):
        return
    t.done += 1
    if status != 200 or TS_RE.sub(ZERO_TS, body) != t.expected:
        t.bad_bodies += 1
        return
    t.ttfb_ms.append(ttfb * 1000.0)
    if len(t.chunk_ms) >= CHUNK_SAMPLES_CAP:
        return
    # Each event's arrival is the read that holds its end.
    ends = array("q")
    pos = 0
    for r in reads:
        pos += len(r)
        ends.append(pos)
    for m in TS_RE.finditer(body):
        i = bisect_left(ends, m.end() + 3)  # + len('}\n\n'): the event's last byte
        t.chunk_ms.append((arrivals[i] - int(m.group(1))) / 1e6)


async def worker(session: aiohttp.ClientSession, url: str, t: Tally, stop_at: float, budget: list[int]) -> None:
    while time.perf_counter() < stop_at:
        if budget:
            if budget[0] <= 0:
                return
            budget[0] -= 1
        try:
            await one(session, url, t)
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            t.errors += 1
            if not t.first_error:
                t.first_error = repr(exc)
            await asyncio.sleep(0.01)


def pct(values: array, q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def run(url: str, concurrency: int, seconds: float, requests: int | None, warmup: float, chunks: int) -> dict[str, Any]:
    now = time.perf_counter()
    if requests is not None:
        warmup, seconds = 0.0, 3600.0
    t = Tally(measure_from=now + warmup, measure_to=now + warmup + seconds, expected=template(chunks))
    budget = [requests] if requests is not None else []
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(worker(session, url, t, t.measure_to, budget) for _ in range(concurrency)))
    window = min(t.measure_to, time.perf_counter()) - t.measure_from
    return {
        "url": url,
        "concurrency": concurrency,
        "seconds": round(window, 3),
        "requests": t.done,
        "rps": t.done / window if window > 0 else 0.0,
        "ttfb_ms": [pct(t.ttfb_ms, 0.5), pct(t.ttfb_ms, 0.99)],
        "chunk_ms": [pct(t.chunk_ms, 0.5), pct(t.chunk_ms, 0.99)],
        "bytes_ok": t.bad_bodies == 0 and t.done > 0,
        "bad_bodies": t.bad_bodies,
        "errors": t.errors,
        "first_error": t.first_error,
        "chunks_total": t.chunks_total,
        "last_id": t.last_id,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("-c", "--concurrency", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=10.0, help="measured window")
    ap.add_argument("--requests", type=int, default=None, help="a fixed number of requests instead of a window")
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds of load before the window")
    ap.add_argument("--chunks", type=int, default=200, help="events the fake upstream sends (its --chunks)")
    ap.add_argument("--no-uvloop", action="store_true")
    args = ap.parse_args()
    loop = new_loop(not args.no_uvloop)
    try:
        result = loop.run_until_complete(
            run(args.url, args.concurrency, args.seconds, args.requests, args.warmup, args.chunks)
        )
    finally:
        loop.close()
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
