"""A recording's two rows, bound as SQLite's driver takes them, without SQLAlchemy.

Serving on a SQLite file, the proxy never imports SQLAlchemy (some 24 MB of memory a process):
its assembly worker writes the rows bound here, and SQLAlchemy is loaded only when something
reads the database (the audit API, replay) or the worker is gone and the store writes itself.
The conversions are SQLAlchemy's own for these column types on SQLite: JSON as orjson text
(``None`` too, as ``null``), datetimes as text without a zone, booleans as integers.
``tests/test_sqlite_rows.py`` holds the statements and every column's value to what SQLAlchemy
compiles and binds from ``proxy.store.models``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from proxy.assemble import usage_tokens
from proxy.assembly_worker import WriteTo
from proxy.prepare import body_size, chunk_count, json_text, pack_chunks, search_text
from proxy.record import Record
from proxy.settings import sqlite_path
from proxy.sqlite_batch import RowsInsert, Statements

__all__ = ["ASSEMBLED_AT", "BODIES", "RECORDINGS", "row_values", "sqlite_file", "statements", "utc", "write_to"]


def utc(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _text(value: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL; a prompt or an error message may. JSON columns escape it themselves."""
    return value.replace("\x00", "\ufffd") if value and "\x00" in value else value


def row_values(rec: Record, *, assembled: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    """The recording's two rows, column by column, for either database; with ``assembled=False``,
    None for what assembly makes of it."""
    prompt, completion = usage_tokens(rec.reply)
    packed = rec.packed or pack_chunks(rec.chunks, rec.offsets_ms)
    text = None
    if assembled:
        text = rec.search_text if rec.search_text is not None else search_text(rec.request_body, rec.reply)
    row = {
        "id": rec.id,
        "started_at": utc(rec.started_at),
        "ended_at": utc(rec.ended_at) if rec.ended_at else None,
        "method": rec.method,
        "path": rec.path,
        "query": _text(rec.query),
        "model": _text(rec.model),
        "stream": rec.stream,
        "key_fingerprint": rec.key_fingerprint,
        "match_key": rec.match_key,
        "request_headers": rec.request_headers,
        "request_body": rec.request_body,
        "status": rec.status,
        "response_headers": rec.response_headers,
        "outcome": str(rec.outcome),
        "error": _text(rec.error),
        "ttfb_ms": rec.ttfb_ms,
        "duration_ms": rec.duration_ms,
        "reply": rec.reply,
        "notes": rec.notes or None,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "chunk_count": chunk_count(packed),
        "body_bytes": body_size(packed),
        "search_text": text,
    }
    return row, {"id": rec.id, **packed._asdict()}


def _datetime(value: datetime | None) -> str | None:
    if value is None:
        return None
    return (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d} "
        f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}.{value.microsecond:06d}"
    )


def _boolean(value: bool | None) -> int | None:
    return None if value is None else int(value)


def _float(value: float | None) -> float | None:
    return None if value is None else float(value)


_Convert = Callable[[Any], Any] | None

# Column order is the tables' (migrations/versions); ``"query"`` is quoted as SQLAlchemy quotes it.
_RECORDING_COLUMNS: tuple[tuple[str, _Convert], ...] = (
    ("id", None), ("started_at", _datetime), ("ended_at", _datetime), ("method", None), ("path", None),
    ('"query"', None), ("model", None), ("stream", _boolean), ("key_fingerprint", None), ("match_key", None),
    ("request_headers", json_text), ("request_body", None), ("status", None), ("response_headers", json_text),
    ("outcome", None), ("error", None), ("ttfb_ms", _float), ("duration_ms", _float), ("reply", json_text),
    ("notes", json_text), ("prompt_tokens", None), ("completion_tokens", None), ("chunk_count", None),
    ("body_bytes", None), ("search_text", None),
)
_BODY_COLUMNS: tuple[tuple[str, _Convert], ...] = (
    ("id", None), ("body", None), ("encoding", None), ("chunk_ends", None), ("chunk_offsets", None),
)


def _insert(table: str, columns: Sequence[tuple[str, _Convert]]) -> RowsInsert:
    names = ", ".join(name for name, _ in columns)
    group = "(" + ", ".join("?" for _ in columns) + ")"
    return RowsInsert(f"INSERT INTO {table} ({names}) VALUES ", group, " ON CONFLICT (id) DO NOTHING")


RECORDINGS = _insert("recordings", _RECORDING_COLUMNS)
BODIES = _insert("recording_bodies", _BODY_COLUMNS)


def _binder(columns: Sequence[tuple[str, _Convert]]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    keyed = [(name.strip('"'), convert) for name, convert in columns]

    def bind(row: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(row[name] if convert is None else convert(row[name]) for name, convert in keyed)

    return bind


bind_recording = _binder(_RECORDING_COLUMNS)
bind_body = _binder(_BODY_COLUMNS)

# Where a bound recording row holds what assembly makes (``WriteTo.assembled_at``).
_NAMES = [name for name, _ in _RECORDING_COLUMNS]
ASSEMBLED_AT: tuple[int, int, int, int, int] = (
    _NAMES.index("reply"), _NAMES.index("notes"), _NAMES.index("prompt_tokens"),
    _NAMES.index("completion_tokens"), _NAMES.index("search_text"),
)


def statements(records: Sequence[Record]) -> Statements:
    """Insert ``records`` (assembled): multi-row statements, recordings then bodies."""
    rows, bodies = zip(*(row_values(r) for r in records), strict=True)
    return RECORDINGS.statements([bind_recording(r) for r in rows]) + BODIES.statements([bind_body(b) for b in bodies])


def write_to(file: str, records: Sequence[Record]) -> WriteTo:
    """The rows of ``records`` (none assembled yet) for an assembly worker to fill in and write
    into the SQLite ``file`` itself."""
    notes_at = ASSEMBLED_AT[1]
    rows: list[tuple[Any, ...]] = []
    bodies: list[tuple[Any, ...]] = []
    for rec in records:
        row, body = row_values(rec, assembled=False)
        bound = list(bind_recording(row))
        bound[notes_at] = list(rec.notes)  # the worker adds its own to these
        rows.append(tuple(bound))
        bodies.append(bind_body(body))
    return WriteTo(file, RECORDINGS, BODIES, ASSEMBLED_AT, rows, bodies)


def sqlite_file(db_url: str) -> str | None:
    """The SQLite file another process can open as the store does; None for PostgreSQL, an
    in-memory database, or a URL with options (which only the store's own driver would honour)."""
    path = sqlite_path(db_url)
    if path is None or "?" in db_url:
        return None
    return str(path.resolve())
