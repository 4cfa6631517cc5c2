"""``create_app(settings)``: wiring only. Every resource is owned by a cleanup context
and reached through a typed AppKey."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from proxy import audit
from proxy.assembly_pool import AssemblyPool
from proxy.errors import error_response
from proxy.keys import METRICS, RECORDER, RELAY, REPLAYER, SETTINGS, STATE, STORE
from proxy.lazy_store import LazyStore
from proxy.metrics import Metrics
from proxy.postgres_writer import is_postgres
from proxy.recorder import Recorder
from proxy.relay import Relay, RuntimeState, new_record
from proxy.replay import Replayer
from proxy.settings import Settings
from proxy.spool import Spool
from proxy.rows import sqlite_file

__all__ = ["create_app"]


def _store_needed_at_start(settings: Settings) -> bool:
    """Whether streams need the store itself: to replay from, or to write to (an in-memory
    database; a SQLite file without an assembly worker). Otherwise it opens on the first read."""
    written_without_it = is_postgres(settings.db) or (settings.assembly_workers > 0 and sqlite_file(settings.db) is not None)
    return settings.mode.replays or not written_without_it


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    store = app[STORE] = LazyStore(app[SETTINGS].db)
    # Either way the database is at head before the first stream, and one that cannot be used stops the start.
    if _store_needed_at_start(app[SETTINGS]):
        await store.get()
    else:
        await store.prepare()
    yield
    await store.close()


async def _recorder_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    spool = Spool(settings.resolved_spool_dir)
    # Replay mode records only the proxy's own errors (misses): nothing worth a worker process.
    assembles = settings.mode.records and settings.mode.forwards and settings.assembly_workers > 0
    pool = AssemblyPool(settings.assembly_workers) if assembles else None
    if pool is not None:
        await pool.start()
    recorder = Recorder(
        app[STORE], spool, buffer_bytes=settings.buffer_bytes, batch_size=settings.batch_size,
        observe_lag=app[METRICS].recorder_lag.observe, pool=pool,
    )
    app[RECORDER] = recorder
    app[METRICS].bind_recorder(lambda: recorder.depth, spool.size)
    await recorder.start()
    yield
    try:
        await recorder.close(timeout=max(settings.shutdown_grace, 5.0))
    finally:
        if pool is not None:
            await pool.close()


async def _upstream_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    # No total timeout: a stream may legitimately last many minutes. Connect and idle-read are bounded per request.
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30),
        auto_decompress=False,
        # Upstream's cookies belong to each client, not to the proxy: never kept, never resent.
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=None),
        skip_auto_headers=("User-Agent", "Content-Type"),
        # What aiohttp buffers from upstream before it stops reading the socket (twice this):
        # 128 KB by default, so a 50 KB answer sat whole in serve while its loop was behind, and
        # at 500 streams that was ~10 MB; past this, the kernel's socket buffers hold it instead.
        # 8 KB held as little but paused and resumed the socket so often that resuming took 7 %
        # of serve's CPU at 100 streams (py-spy, bench/profile.py).
        read_bufsize=16384,
    )
    app[RELAY] = Relay(settings, session, app[RECORDER], app[METRICS], app[STATE])
    # The session is created in every mode but used only to forward: replay never touches it.
    app[REPLAYER] = Replayer(settings, app[STORE], app[RELAY])
    yield
    await session.close()


async def _on_shutdown(app: web.Application) -> None:
    app[STATE].shutting_down = True


async def v1_handler(request: web.Request) -> web.StreamResponse:
    app = request.app
    settings = app[SETTINGS]
    relay = app[RELAY]
    loop_start = asyncio.get_running_loop().time()
    record = settings.mode.records
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        rec = new_record(request, b"", settings, app[STATE].ids)
        return relay.reject(
            rec, loop_start, record, 413, f"request body is larger than {settings.max_body} bytes",
            "invalid_request_error", "request_too_large",
        )
    rec = new_record(request, body, settings, app[STATE].ids)
    if not relay.admitted(request):
        return relay.reject(
            rec, loop_start, record, 401, "Incorrect API key provided to streamproxy.",
            "invalid_request_error", "invalid_api_key",
        )
    if settings.mode.replays:
        return await app[REPLAYER].handle(request, rec, loop_start)
    return await relay.forward(request, rec, loop_start, record=record)


async def replay_handler(request: web.Request) -> web.StreamResponse:
    return await request.app[REPLAYER].replay_by_id(request)


async def not_found(request: web.Request) -> web.Response:
    return error_response(
        404, f"streamproxy relays /v1/… only; nothing at {request.rel_url.path}", "invalid_request_error", "not_found"
    )


def create_app(settings: Settings) -> web.Application:
    app = web.Application(client_max_size=settings.max_body, middlewares=[audit.access_middleware])
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    app[STATE] = RuntimeState()
    app.cleanup_ctx.extend([_store_ctx, _recorder_ctx, _upstream_ctx])
    app.on_shutdown.append(_on_shutdown)
    app.router.add_route("*", "/v1{tail:(/.*)?}", v1_handler)
    audit.add_routes(app)
    app.router.add_get("/recordings/{id}/replay", replay_handler)
    app.router.add_route("*", "/{tail:.*}", not_found)
    return app
