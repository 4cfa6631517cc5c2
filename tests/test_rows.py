"""``proxy.rows`` binds rows for SQLite without SQLAlchemy; here both are held to what
SQLAlchemy compiles and binds from the models, statement and column by column, so the rows the
assembly worker writes are the rows SQLAlchemy reads back."""

from __future__ import annotations

import copy
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import LargeBinary, Table, bindparam
from sqlalchemy.dialects import postgresql, sqlite

from proxy import rows
from proxy.assemble import assemble
from proxy.record import Outcome, Record
from proxy.store.engine import create_engine
from proxy.store.models import RecordingBodyRow, RecordingRow
from tests.recordings import make_record
from tests.test_worker_writes import recordings


def _by_sqlalchemy(table: Any, url: str = "sqlite+aiosqlite://") -> tuple[str, list[tuple[str, Any]]]:
    """The one-row INSERT and each column's bind processor, as SQLAlchemy makes them for the
    store's own engine on ``url``'s backend (its JSON serializer included)."""
    assert isinstance(table, Table)
    dialect = create_engine(url).dialect
    insert = postgresql.insert if dialect.name == "postgresql" else sqlite.insert
    stmt = insert(table).values({c.name: bindparam(c.name, type_=c.type) for c in table.c})
    compiled = stmt.on_conflict_do_nothing(index_elements=["id"]).compile(dialect=dialect)
    assert compiled.positiontup is not None
    processors = [
        (name, None if isinstance(table.c[name].type, LargeBinary) else table.c[name].type.dialect_impl(dialect).bind_processor(dialect))
        for name in compiled.positiontup
    ]
    return str(compiled), processors


def _bound(processors: list[tuple[str, Any]], row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(row[name] if convert is None else convert(row[name]) for name, convert in processors)


def _odd_ones() -> list[Record]:
    """What a plain chat stream never has: NUL in text, a naive time, Nones, notes, an error."""
    broken = make_record("a question with a \x00 in it", "café ☕", usage=None, ttfb_ms=None, duration_ms=None)
    broken.started_at = datetime(2026, 11, 27, 5, 6, 7, 891011)  # no zone: taken as UTC
    broken.ended_at = None
    broken.outcome, broken.error = Outcome.UPSTREAM_CLOSED, "upstream broke off \x00 mid-way"
    broken.reply, broken.notes, broken.status, broken.model = None, ["truncated stream"], None, None
    broken.query, broken.stream, broken.key_fingerprint = "a=1&b=\x00", False, None
    return [make_record(), broken]


def _assembled(records: list[Record]) -> list[Record]:
    for rec in records:
        if not rec.assembled:
            rec.reply = assemble(rec.path, rec.content_type, rec.chunks).reply
            rec.assembled = True
    return records


@pytest.mark.parametrize("rows_of", ["assembled", "for the worker"])
def test_rows_bound_without_sqlalchemy_are_those_sqlalchemy_binds(rows_of: str) -> None:
    recording_sql, recording_processors = _by_sqlalchemy(RecordingRow.__table__)
    body_sql, body_processors = _by_sqlalchemy(RecordingBodyRow.__table__)
    assert rows.RECORDINGS.sql(1) == recording_sql
    assert rows.BODIES.sql(1) == body_sql

    records = [*_assembled(recordings()), *_odd_ones()]
    assert any(r.reply is None for r in records) and any(r.notes for r in records)
    assembled = rows_of == "assembled"
    ours = rows.sqlite_statements(records) if assembled else None
    if assembled:
        assert ours is not None
        (rows_sql, row_params), (bodies_sql, body_params) = ours[0], ours[-1]
        width = len(recording_processors)
        assert len(ours) >= 2 and rows_sql == rows.RECORDINGS.sql(len(row_params) // width)
        assert bodies_sql == rows.BODIES.sql(len(body_params) // len(body_processors))

    expected_rows: list[tuple[Any, ...]] = []
    expected_bodies: list[tuple[Any, ...]] = []
    for rec in records:
        row, body = rows.row_values(copy.deepcopy(rec), assembled=assembled)
        expected_rows.append(_bound(recording_processors, row))
        expected_bodies.append(_bound(body_processors, body))

    if assembled:
        assert ours is not None
        flat = [v for _, params in ours for v in params]
        assert flat == [v for row in expected_rows for v in row] + [v for body in expected_bodies for v in body]
    else:
        write = rows.write_to("/some/file.db", records)
        notes_at = rows.ASSEMBLED_AT[1]
        # The worker's rows carry the notes made so far as a list, to add its own to; the rest is bound.
        for rec, got, want in zip(records, write.rows, expected_rows, strict=True):
            assert got[notes_at] == list(rec.notes)
            assert got[:notes_at] + got[notes_at + 1 :] == want[:notes_at] + want[notes_at + 1 :]
        assert write.body_rows == expected_bodies
        assert write.database == "/some/file.db"
        names = [c.name for c in RecordingRow.__table__.c]
        assert [names[i] for i in write.assembled_at] == ["reply", "notes", "prompt_tokens", "completion_tokens", "search_text"]


def test_only_a_plain_sqlite_file_is_written_beside_the_store(tmp_path: Path) -> None:
    assert rows.sqlite_file(f"sqlite+aiosqlite:///{tmp_path}/r.db") == str((tmp_path / "r.db").resolve())
    assert rows.sqlite_file("sqlite+aiosqlite:///relative.db") == str(Path.cwd() / "relative.db")
    assert rows.sqlite_file("sqlite+aiosqlite://") is None
    assert rows.sqlite_file("sqlite+aiosqlite:///:memory:") is None
    assert rows.sqlite_file(f"sqlite+aiosqlite:///{tmp_path}/r.db?mode=ro") is None
    assert rows.sqlite_file("postgresql+asyncpg://postgres@127.0.0.1/test") is None


def _columns_and_casts(sql: str) -> list[tuple[str, list[str], list[str]]]:
    """Each INSERT's table, its columns, and the cast of each parameter (arrays' as of one value)."""
    inserts = re.findall(r"INSERT INTO (\w+) \(([^)]*)\)", sql)
    casts = re.findall(r"\$\d+::([A-Z ]+?)(?:\[\])?(?=[,)])", sql)
    out, at = [], 0
    for table, names in inserts:
        columns = names.split(", ")
        out.append((table, columns, casts[at : at + len(columns)]))
        at += len(columns)
    assert at == len(casts)
    return out


def test_a_postgresql_batch_is_one_statement_bound_column_by_column_as_sqlalchemy_binds() -> None:
    records = [*_assembled(recordings()), *_odd_ones()]
    ((sql, params),) = rows.postgres_statements(records)
    ours = _columns_and_casts(sql)
    arrays = iter(params)
    for k, (table, pick) in enumerate(((RecordingRow.__table__, 0), (RecordingBodyRow.__table__, 1))):
        compiled, processors = _by_sqlalchemy(table, "postgresql+asyncpg://postgres@127.0.0.1/test")
        # The same columns, each cast as SQLAlchemy casts it (here as an array of them).
        assert ours[k] == _columns_and_casts(compiled)[0]
        expected = [_bound(processors, rows.row_values(copy.deepcopy(rec))[pick]) for rec in records]
        for i, (name, _) in enumerate(processors):
            assert next(arrays) == [row[i] for row in expected], name
    assert next(arrays, None) is None

