"""The error tree, and OpenAI-shaped error responses built in one place.

    StreamproxyError
    ├── ConfigError      bad configuration: the CLI prints one line, exits 2
    └── StoreError       the database cannot be reached or is missing
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

__all__ = ["ConfigError", "StoreError", "StreamproxyError", "error_body", "error_response"]


class StreamproxyError(Exception):
    """Base of every error streamproxy raises on purpose."""


class ConfigError(StreamproxyError):
    """The configuration cannot work."""


class StoreError(StreamproxyError):
    """The database is missing or unreachable."""


def error_body(message: str, type_: str, code: str | None = None, **extra: Any) -> dict[str, Any]:
    err: dict[str, Any] = {"message": message, "type": type_, "code": code}
    err.update(extra)
    return {"error": err}


def error_response(
    status: int,
    message: str,
    type_: str,
    code: str | None = None,
    *,
    recording_id: str | None = None,
    **extra: Any,
) -> web.Response:
    """A response in OpenAI's error shape, as the proxy's own errors must be."""
    headers = {"X-Recording-Id": recording_id} if recording_id else None
    return web.Response(
        status=status,
        body=orjson.dumps(error_body(message, type_, code, **extra)),
        content_type="application/json",
        headers=headers,
    )
