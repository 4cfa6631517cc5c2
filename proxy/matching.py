"""Match keys: which recording answers which request in replay."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import orjson

__all__ = ["UNPARSED", "canonical_body", "differences", "match_key"]


_MISSING = object()
_SHOW = 60


# "The caller has not parsed the body": the relay has, by the time it asks for the match key.
UNPARSED: Any = object()


def canonical_body(body: bytes, ignore: Iterable[str] = (), parsed: Any = UNPARSED) -> bytes:
    """Canonical JSON (sorted keys, no insignificant whitespace) of a JSON body without ignored
    top-level fields; a body that is not JSON is used as it is. ``parsed``: the body already
    parsed, if the caller has it."""
    if not body:
        return b""
    if parsed is UNPARSED:
        try:
            parsed = orjson.loads(body)
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


def match_key(method: str, path: str, body: bytes, ignore: Iterable[str] = (), parsed: Any = UNPARSED) -> str:
    """SHA-256 of method, path and canonical body. Credentials never enter it."""
    h = hashlib.sha256()
    h.update(method.upper().encode())
    h.update(b"\0")
    h.update(path.encode())
    h.update(b"\0")
    h.update(canonical_body(body, ignore, parsed))
    return h.hexdigest()


def _loads(body: bytes) -> Any:
    try:
        return orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return _MISSING


def _show(value: Any) -> str:
    if value is _MISSING:
        return "absent"
    text = orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    return text if len(text) <= _SHOW else text[: _SHOW - 1] + "…"


def _same(a: Any, b: Any) -> bool:
    # ``True == 1 == 1.0`` in Python, but not in the canonical JSON the key is made of.
    return type(a) is type(b) and a == b


def _first_difference(path: str, recorded: Any, got: Any) -> str | None:
    """Where inside one field two values first differ, as ``path: recorded X, got Y``."""
    if isinstance(recorded, dict) and isinstance(got, dict):
        for k in sorted(recorded.keys() | got.keys()):
            found = _first_difference(f"{path}.{k}", recorded.get(k, _MISSING), got.get(k, _MISSING))
            if found:
                return found
        return None
    if isinstance(recorded, list) and isinstance(got, list):
        for i, (r, g) in enumerate(zip(recorded, got)):
            found = _first_difference(f"{path}[{i}]", r, g)
            if found:
                return found
        if len(recorded) != len(got):
            return f"{path}: recorded {len(recorded)} items, got {len(got)}"
        return None
    if _same(recorded, got):
        return None
    return f"{path}: recorded {_show(recorded)}, got {_show(got)}"


def differences(recorded: bytes, got: bytes, ignore: Iterable[str] = ()) -> list[str]:
    """Why two request bodies have different match keys: one line per top-level field that
    differs (ignored fields left out), naming the first place inside it that differs."""
    a, b = _loads(recorded), _loads(got)
    if not (isinstance(a, dict) and isinstance(b, dict)):
        if canonical_body(recorded, ignore) == canonical_body(got, ignore):
            return []
        return [f"body: recorded {len(recorded)} bytes, got {len(got)} bytes (not both JSON objects)"]
    ignored = set(ignore)
    out: list[str] = []
    for k in sorted((a.keys() | b.keys()) - ignored):
        found = _first_difference(k, a.get(k, _MISSING), b.get(k, _MISSING))
        if found:
            out.append(found)
    return out
