"""The yardstick: the thinnest aiohttp relay, recording nothing.

    python bench/bare_relay.py --port 9001 --upstream http://127.0.0.1:9000
"""

import argparse

import aiohttp
from aiohttp import web
from procs import serve

HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "upgrade", "te", "trailer"}


def make_app(upstream: str) -> web.Application:
    async def relay(request: web.Request) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
        async with request.app["session"].request(
            request.method, upstream + request.rel_url.raw_path_qs, headers=headers, data=await request.read()
        ) as up:
            resp = web.StreamResponse(status=up.status, headers={k: v for k, v in up.headers.items() if k.lower() not in HOP})
            await resp.prepare(request)
            async for data in up.content.iter_any():
                await resp.write(data)
            await resp.write_eof()
            return resp

    async def session_ctx(app: web.Application):  # type: ignore[no-untyped-def]
        app["session"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), auto_decompress=False)
        yield
        await app["session"].close()

    app = web.Application()
    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("*", "/{tail:.*}", relay)
    return app


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--max-seconds", type=float, default=3600)
    ap.add_argument("--no-uvloop", action="store_true")
    args = ap.parse_args()
    serve(make_app(args.upstream), args.port, args.max_seconds, uvloop=not args.no_uvloop)
