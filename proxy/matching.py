"""Match keys: which recording answers which request in replay."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import orjson

__all__ = ["canonical_body", "match_key"]


def canonical_body(body: bytes, ignore: Iterable[str] = ()) -> bytes:
    """Canonical JSON (sorted keys, no insignificant whitespace) of a JSON body without ignored
    top-level fields; a body that is not JSON is used as it is."""
    if not body:
        return b""
    try:
        parsed: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    if isinstance(parsed, dict):
        ignored = set(ignore)
        if ignored:
            parsed = {k: v for k, v in parsed.items() if k not in ignored}
    try:
        return orjson.dumps(parsed, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:  # e.g. an integer beyond 64 bits
        return body


def match_key(method: str, path: str, body: bytes, ignore: Iterable[str] = ()) -> str:
    """SHA-256 of method, path and canonical body. Credentials never enter it."""
    h = hashlib.sha256()
    h.update(method.upper().encode())
    h.update(b"\0")
    h.update(path.encode())
    h.update(b"\0")
    h.update(canonical_body(body, ignore))
    return h.hexdigest()
