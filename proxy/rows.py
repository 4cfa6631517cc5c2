"""A recording's two rows, and the statements that insert them, bound as SQLite's driver and
asyncpg take them, without SQLAlchemy.

The serving process records without loading SQLAlchemy (some 24 MB of its memory): on a SQLite
file its assembly worker writes the rows bound here; on PostgreSQL serve sends the statements
made here through asyncpg itself (``proxy/postgres_writer.py``). SQLAlchemy is loaded only when
something reads the database (the audit API, replay). The store inserts with the same statements.
The conversions are SQLAlchemy's own for these column types: on SQLite JSON as orjson text
(``None`` too, as ``null``), datetimes as text without a zone, booleans as integers; on
PostgreSQL JSON as text, and a batch is one statement whose parameters are one array a column,
each cast to an array of its column's type. ``tests/test_rows.py`` holds the statements, their
casts and every column's value to what SQLAlchemy compiles and binds from
``proxy.store.models``, for both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

from proxy.assemble import usage_tokens
from proxy.worker_frames import WriteTo
from proxy.prepare import json_text, pack_chunks, search_text
from proxy.record import Record
from proxy.settings import sqlite_path
from proxy.sqlite_batch import RowsInsert, Statements

__all__ = [
    "ASSEMBLED_AT", "BODIES", "RECORDINGS", "postgres_statements", "row_values", "sqlite_file", "sqlite_statements", "utc", "write_to",
]


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
        "chunk_count": packed.chunk_count,
        "body_bytes": packed.body_bytes,
        "search_text": text,
    }
    return row, {"id": rec.id, **packed.columns()}


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


class _Column(NamedTuple):
    """A column, and how each driver takes its value. Bytes go to both as they are (SQLAlchemy's
    SQLite binary processor only wraps them in a memoryview, which cannot be pickled to a worker)."""

    name: str
    sqlite: _Convert  # SQLite's driver takes the value so
    postgres_type: str  # asyncpg's parameter is cast to it, as SQLAlchemy casts it
    postgres: _Convert = None  # asyncpg takes the value so (JSON as text; the rest as it is)


# Column order is the tables' (migrations/versions).
_RECORDING_COLUMNS = (
    _Column("id", None, "VARCHAR"),
    _Column("started_at", _datetime, "TIMESTAMP WITH TIME ZONE"),
    _Column("ended_at", _datetime, "TIMESTAMP WITH TIME ZONE"),
    _Column("method", None, "VARCHAR"),
    _Column("path", None, "VARCHAR"),
    _Column("query", None, "VARCHAR"),
    _Column("model", None, "VARCHAR"),
    _Column("stream", _boolean, "BOOLEAN"),
    _Column("key_fingerprint", None, "VARCHAR"),
    _Column("match_key", None, "VARCHAR"),
    _Column("request_headers", json_text, "JSON", json_text),
    _Column("request_body", None, "BYTEA"),
    _Column("status", None, "INTEGER"),
    _Column("response_headers", json_text, "JSON", json_text),
    _Column("outcome", None, "VARCHAR"),
    _Column("error", None, "VARCHAR"),
    _Column("ttfb_ms", _float, "FLOAT"),
    _Column("duration_ms", _float, "FLOAT"),
    _Column("reply", json_text, "JSON", json_text),
    _Column("notes", json_text, "JSON", json_text),
    _Column("prompt_tokens", None, "INTEGER"),
    _Column("completion_tokens", None, "INTEGER"),
    _Column("chunk_count", None, "INTEGER"),
    _Column("body_bytes", None, "INTEGER"),
    _Column("search_text", None, "VARCHAR"),
)
_BODY_COLUMNS = (
    _Column("id", None, "VARCHAR"),
    _Column("body", None, "BYTEA"),
    _Column("encoding", None, "VARCHAR"),
    _Column("chunk_ends", None, "BYTEA"),
    _Column("chunk_offsets", None, "BYTEA"),
)
# SQLAlchemy quotes this one name on SQLite (a keyword there), not on PostgreSQL.
_SQLITE_QUOTED = {"query"}


def _sqlite_insert(table: str, columns: Sequence[_Column]) -> RowsInsert:
    """Many rows to a statement: SQLite's driver releases and retakes the GIL around every
    statement it steps, and with the event loop's thread busy each retake can wait out the
    interpreter's switch interval (5 ms); row by row, a batch of 200 took seconds under load."""
    names = ", ".join(f'"{c.name}"' if c.name in _SQLITE_QUOTED else c.name for c in columns)
    group = "(" + ", ".join("?" for _ in columns) + ")"
    return RowsInsert(f"INSERT INTO {table} ({names}) VALUES ", group, " ON CONFLICT (id) DO NOTHING")


RECORDINGS = _sqlite_insert("recordings", _RECORDING_COLUMNS)
BODIES = _sqlite_insert("recording_bodies", _BODY_COLUMNS)


def _binder(columns: Sequence[tuple[str, _Convert]]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    def bind(row: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(row[name] if convert is None else convert(row[name]) for name, convert in columns)

    return bind


bind_recording = _binder([(c.name, c.sqlite) for c in _RECORDING_COLUMNS])
bind_body = _binder([(c.name, c.sqlite) for c in _BODY_COLUMNS])

# Where a bound recording row holds what assembly makes (``WriteTo.assembled_at``).
_NAMES = [c.name for c in _RECORDING_COLUMNS]
ASSEMBLED_AT: tuple[int, int, int, int, int] = (
    _NAMES.index("reply"), _NAMES.index("notes"), _NAMES.index("prompt_tokens"),
    _NAMES.index("completion_tokens"), _NAMES.index("search_text"),
)


def sqlite_statements(records: Sequence[Record]) -> Statements:
    """Insert ``records`` (assembled) into SQLite: multi-row statements, recordings then bodies."""
    recordings, bodies = zip(*(row_values(r) for r in records), strict=True)
    return RECORDINGS.statements([bind_recording(r) for r in recordings]) + BODIES.statements([bind_body(b) for b in bodies])


def _unnest(table: str, columns: Sequence[_Column], first: int) -> str:
    """An insert of rows made by unnest from one array a column, parameters numbered from ``first``."""
    names = ", ".join(c.name for c in columns)
    arrays = ", ".join(f"${first + i}::{c.postgres_type}[]" for i, c in enumerate(columns))
    return f"INSERT INTO {table} ({names}) SELECT * FROM unnest({arrays}) ON CONFLICT (id) DO NOTHING"


# A batch in one statement, whatever its size: each column's values as one array (cast as
# SQLAlchemy casts the column), the recordings inserted by its WITH, the bodies by the statement
# itself (their foreign keys are checked at its end). One statement is one round trip and one
# transaction; serve's event loop takes a turn for each round trip, ~0.1 s at 500 streams, and
# with eight a batch (multi-row statements in power-of-two parts, in a transaction) fewer
# recordings were written than came in. (The PostgreSQL server's own CPU for it was not measured
# against the multi-row VALUES it replaces; serve's was the same within the bench's noise.)
_PG_BATCH = (
    f"WITH recordings_in AS ({_unnest('recordings', _RECORDING_COLUMNS, 1)}) "
    + _unnest("recording_bodies", _BODY_COLUMNS, len(_RECORDING_COLUMNS) + 1)
)
_pg_recording = _binder([(c.name, c.postgres) for c in _RECORDING_COLUMNS])
_pg_body = _binder([(c.name, c.postgres) for c in _BODY_COLUMNS])


def postgres_statements(records: Sequence[Record]) -> Statements:
    """Insert ``records`` (assembled) into PostgreSQL through asyncpg: one statement, its
    parameters one array a column, recordings' columns then bodies'. No records: the same
    statement with empty arrays, which inserts nothing (``PostgresWriter.warm`` sends it)."""
    if not records:
        return [(_PG_BATCH, tuple([] for _ in range(len(_RECORDING_COLUMNS) + len(_BODY_COLUMNS))))]
    recordings, bodies = zip(*(row_values(r) for r in records), strict=True)
    columns = [*zip(*map(_pg_recording, recordings), strict=True), *zip(*map(_pg_body, bodies), strict=True)]
    return [(_PG_BATCH, tuple(map(list, columns)))]


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
