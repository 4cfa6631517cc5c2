"""Replay pacing and speed, run by hand: ``python bench/replay.py``.

Records one 200-event stream (an event every 5 ms) through the proxy from the fake upstream,
then prints:
- pacing: at speed 1 and 4, when the last event arrived over when it should (1.00 is exact);
- cost: replays per second at speed 0 against relays per second of the same stream.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proxy.app import create_app  # noqa: E402
from proxy.keys import RECORDER, STORE  # noqa: E402
from proxy.settings import Settings  # noqa: E402
from tests.fakes import FakeUpstream, Script  # noqa: E402
from tests.test_relay import REQUEST, chat_events  # noqa: E402

EVENTS = chat_events([f"w{i} " for i in range(196)])
GAP = 0.005
ROUNDS = 200


async def start(settings: Settings) -> tuple[web.AppRunner, str]:
    app = create_app(settings)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


async def timed(s: aiohttp.ClientSession, method: str, url: str) -> tuple[float, str]:
    """Seconds until the whole body arrived, and the recording id."""
    t0 = time.perf_counter()
    async with s.request(method, url, json={**REQUEST, "stream": True}) as r:
        await r.read()
        return time.perf_counter() - t0, r.headers["X-Recording-Id"]


async def main() -> None:
    fake = FakeUpstream()
    await fake.start()
    with tempfile.TemporaryDirectory() as tmp:
        db = f"sqlite+aiosqlite:///{tmp}/bench.db"
        rec_runner, rec_url = await start(Settings(upstream=fake.url, db=db, port=0, spool_dir=Path(tmp) / "s"))
        fake.script("/v1/chat/completions", Script(steps=[x for e in EVENTS for x in (e, GAP)]), once=True)
        async with aiohttp.ClientSession() as s:
            _, rec_id = await timed(s, "POST", rec_url + "/v1/chat/completions")
            await rec_runner.app[RECORDER].drain(timeout=10)
            rec = await rec_runner.app[STORE].get(rec_id)
            assert rec is not None
            recorded = rec.offsets_ms[-1] / 1000
            for speed in (1, 4):
                took, _ = await timed(s, "GET", f"{rec_url}/recordings/{rec_id}/replay?speed={speed}")
                print(f"pacing at speed {speed}: last event at {took / (recorded / speed):.2f} x its recorded offset")

            fake.script("/v1/chat/completions", Script(steps=list(EVENTS)))
            t0 = time.perf_counter()
            for _ in range(ROUNDS):
                await timed(s, "POST", rec_url + "/v1/chat/completions")
            relay = ROUNDS / (time.perf_counter() - t0)
            t0 = time.perf_counter()
            for _ in range(ROUNDS):
                await timed(s, "GET", f"{rec_url}/recordings/{rec_id}/replay?speed=0")
            replay = ROUNDS / (time.perf_counter() - t0)
            print(f"speed 0: {replay:.0f} replays/s vs {relay:.0f} relays/s of the same {len(EVENTS)}-event stream "
                  f"(ratio {replay / relay:.2f})")
        await rec_runner.cleanup()
    await fake.stop()


if __name__ == "__main__":
    asyncio.run(main())
