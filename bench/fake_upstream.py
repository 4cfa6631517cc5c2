"""A fake OpenAI-compatible upstream for benchmarks: every POST under ``/v1/`` answers with a
streamed chat completion of ``--chunks`` events written back to back, no pause.

Each event carries ``"ts":<time.time_ns() when it was written>`` (always 19 digits), so a
client can compute each chunk's latency. Everything else in the body is fixed, so a client can
check the bytes it got by zeroing the timestamps and comparing with :func:`template`.

    python bench/fake_upstream.py --port 9000 [--chunks 200] [--max-seconds 3600]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time

from aiohttp import web
from procs import serve

__all__ = ["TS_RE", "ZERO_TS", "events", "template"]

TS_RE = re.compile(rb'"ts":(\d{19})')
ZERO_TS = b'"ts":' + b"0" * 19
DONE = b"data: [DONE]\n\n"


def events(n: int) -> list[tuple[bytes, bytes]]:
    """The ``n`` events as (bytes before the timestamp digits, bytes after them)."""
    out = []
    for i in range(n):
        if i == 0:
            delta = b'{"role":"assistant","content":""}'
        elif i == n - 1:
            delta = b"{}"
        else:
            delta = b'{"content":"tok%04d "}' % i
        finish = b'"stop"' if i == n - 1 else b"null"
        head = (
            b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1764000000,'
            b'"model":"bench-model","system_fingerprint":"fp_bench","choices":[{"index":0,"delta":'
            + delta
            + b',"logprobs":null,"finish_reason":'
            + finish
            + b'}],"ts":'
        )
        out.append((head, b"}\n\n"))
    return out


def template(n: int) -> bytes:
    """The whole body with every timestamp zeroed."""
    return b"".join(h + b"0" * 19 + t for h, t in events(n)) + DONE


def make_app(n: int, hold: float = 0.0) -> web.Application:
    parts = events(n)

    async def chat(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        for i, (head, tail) in enumerate(parts):
            if hold and i == len(parts) - 1:
                await asyncio.sleep(hold)  # every stream open at once, with all but its last event read
            await resp.write(b"%s%d%s" % (head, time.time_ns(), tail))
        await resp.write(DONE)
        await resp.write_eof()
        return resp

    async def ready(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/ready", ready)
    app.router.add_post("/v1/{tail:.*}", chat)
    return app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--chunks", type=int, default=200)
    ap.add_argument("--max-seconds", type=float, default=3600, help="exit by itself after this long")
    ap.add_argument("--hold", type=float, default=0.0, help="pause this long before each answer's last event")
    ap.add_argument("--no-uvloop", action="store_true")
    args = ap.parse_args()
    serve(make_app(args.chunks, args.hold), args.port, args.max_seconds, uvloop=not args.no_uvloop)


if __name__ == "__main__":
    main()
