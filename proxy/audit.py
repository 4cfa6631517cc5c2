"""The audit API (``/recordings``), health and metrics."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from proxy import ui
from proxy.credentials import bearer_token
from proxy.errors import ConfigError, error_response
from proxy.filters import Filters, GroupBy
from proxy.keys import METRICS, SETTINGS, STORE
from proxy.record import to_json
from proxy.settings import is_loopback

__all__ = ["access_middleware", "add_routes"]

_PROTECTED = ("/recordings", "/ui")
_MAX_LIMIT = 1000

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(obj: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(obj), status=status, content_type="application/json")


@web.middleware
async def access_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The audit API and UI: the admin token when one is set (from loopback too), else loopback only."""
    path = request.path
    if path.startswith(_PROTECTED):
        token = request.app[SETTINGS].admin_token
        if token is not None:
            if not hmac.compare_digest((bearer_token(request.headers.get("Authorization")) or "").encode(), token.encode()):
                if path == "/ui":
                    return ui.page_response(request.app, status=401)
                return error_response(401, "the audit API needs the admin token as Bearer", "invalid_request_error", "invalid_admin_token")
        elif not is_loopback(request.remote or ""):
            return error_response(403, "the audit API is open to loopback only (set --admin-token)", "invalid_request_error", "forbidden")
    return await handler(request)


async def list_recordings(request: web.Request) -> web.Response:
    q = request.query
    try:
        filters = Filters.from_mapping(q)
        limit = int(q.get("limit", "50"))
    except (ConfigError, ValueError) as exc:
        return error_response(400, str(exc), "invalid_request_error", "bad_parameter")
    limit = max(1, min(limit, _MAX_LIMIT))
    store = await request.app[STORE].get()
    records, cursor = await store.list_recordings(filters, limit=limit, cursor=q.get("cursor") or None)
    return _json({"recordings": [to_json(r) for r in records], "next_cursor": cursor})


async def recording_stats(request: web.Request) -> web.Response:
    """``streamproxy stats --json`` over HTTP: the same filters, and ``by`` = model | key | path."""
    q = request.query
    try:
        filters = Filters.from_mapping(q)
        by = GroupBy.parse(q["by"]) if q.get("by") else None
    except ConfigError as exc:
        return error_response(400, str(exc), "invalid_request_error", "bad_parameter")
    # Here, not at the top: the serving process loads SQLAlchemy only once something reads (proxy/lazy_store.py).
    from proxy.store.stats import compute_stats

    report = await compute_stats(await request.app[STORE].get(), filters, by)
    return _json(report.to_json())


async def get_recording(request: web.Request) -> web.Response:
    with_chunks = request.query.get("chunks", "") not in ("", "0", "false")
    store = await request.app[STORE].get()
    rec = await store.get(request.match_info["id"], chunks=with_chunks)
    if rec is None:
        return error_response(404, f"no recording {request.match_info['id']}", "invalid_request_error", "not_found")
    return _json(to_json(rec, chunks=with_chunks))


async def healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[METRICS].render(), content_type="text/plain", charset="utf-8")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/recordings", list_recordings)
    app.router.add_get("/recordings/stats", recording_stats)
    app.router.add_get("/recordings/{id}", get_recording)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    ui.add_routes(app)
