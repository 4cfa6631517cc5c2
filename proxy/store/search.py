"""Full-text search over ``recordings.search_text`` (lower-cased request messages and reply).

A search is a list of terms (words, or "quoted phrases"); every term must occur as a
substring. The ``LIKE`` on ``search_text`` decides on both backends, so both return the same
rows; migration 0002 adds the index that makes it fast: on PostgreSQL a trigram GIN index
that ``LIKE`` uses by itself, on SQLite an FTS5 trigram table that narrows the candidates
first (see ``_FtsCandidates``).
"""

from __future__ import annotations

import shlex
from typing import Any

from sqlalchemy import Column, ColumnElement, Integer, MetaData, String, Table, and_, select, true
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.types import Boolean

from proxy.store.models import RecordingRow

__all__ = ["search_clause", "search_terms"]

# SQLite-only tables from migration 0002; kept out of the ORM metadata on purpose.
_sqlite_only = MetaData()
_search_map = Table("recording_search", _sqlite_only, Column("n", Integer, primary_key=True), Column("id", String(26)))
_fts = Table("recording_search_fts", _sqlite_only, Column("rowid", Integer), Column("recording_search_fts", String))

# The trigram tokenizer indexes runs of three characters; shorter terms rely on LIKE alone.
_MIN_INDEXED = 3


def search_terms(text: str) -> list[str]:
    """Lower-cased terms: words, or "quoted phrases" kept whole. Unbalanced quotes count as plain words."""
    try:
        terms = shlex.split(text)
    except ValueError:
        terms = text.split()
    return [t.lower() for t in terms if t.strip()]


def _like_pattern(term: str) -> str:
    escaped = term.replace("/", "//").replace("%", "/%").replace("_", "/_")
    return f"%{escaped}%"


class _FtsCandidates(ColumnElement[bool]):
    """On SQLite: the recording is among the FTS5 matches for these terms. Elsewhere: true.

    Compiled per dialect so ``apply_filters`` stays one dialect-free function.
    """

    type = Boolean()
    inherit_cache = False

    def __init__(self, terms: list[str]) -> None:
        phrases = ['"' + t.replace('"', '""') + '"' for t in terms]
        matched = select(_fts.c.rowid).where(_fts.c.recording_search_fts.op("MATCH")(" AND ".join(phrases)))
        self.sqlite_clause = RecordingRow.id.in_(select(_search_map.c.id).where(_search_map.c.n.in_(matched)))


@compiles(_FtsCandidates)
def _compile_default(element: _FtsCandidates, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(true(), **kw)


@compiles(_FtsCandidates, "sqlite")
def _compile_sqlite(element: _FtsCandidates, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.sqlite_clause, **kw)


def search_clause(text: str) -> ColumnElement[bool]:
    """The WHERE clause for a search string (true when it has no terms)."""
    terms = search_terms(text)
    likes = [RecordingRow.search_text.like(_like_pattern(t), escape="/") for t in terms]
    indexed = [t for t in terms if len(t) >= _MIN_INDEXED]
    if indexed:
        likes.append(_FtsCandidates(indexed))
    return and_(true(), *likes)
