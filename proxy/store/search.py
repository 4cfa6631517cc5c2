"""Full-text search over ``recordings.search_text`` (lower-cased request messages and reply).

A search is a list of terms (words, or "quoted phrases"); every term must occur as a
substring. The ``LIKE`` on ``search_text`` decides on both backends, so both return the same
rows; migration 0002 adds the index that makes it fast: on PostgreSQL a trigram GIN index
that ``LIKE`` uses by itself (its planner weighs it against the other filters' indexes), on
SQLite an FTS5 trigram table that narrows the candidates first (see ``_IndexCandidates``).

Since migration 0004 the SQLite table keeps no positions (``detail=none``), which saves about a
quarter of its upkeep on every insert, but it cannot answer a phrase: a term is looked up as
trigrams that together cover it, each anywhere in the row. That lets through rows holding them
apart ("abcab" in "abca cab"); ``LIKE`` drops them. Its tokenizer does not fold case either:
``search_text`` and the terms are both lower-cased already.

Since migration 0006 a recording may wait a while to join the SQLite index
(``recording_search_pending``); until then it is a candidate for every search, so results are the
same whenever the index catches up. Since migration 0008 PostgreSQL's index works the same way:
its trigram GIN index is on ``recording_search_index``, which recordings join from its own
``recording_search_pending`` (``proxy.postgres_index``), and ``LIKE`` on ``recordings`` decides.

Neither planner can tell a rare term from a common one through this index (on PostgreSQL since
0008, where the index is on a table of its own), so ``newest_matching`` does: a rare term is
looked up through the index; for a common one the newest rows that pass the other filters are
read first, since they are likely to match (the index would have to walk a long list of matches
before ordering them).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy import Column, ColumnElement, Integer, MetaData, Select, String, Table, and_, func, select, true, union_all
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.types import Boolean

from proxy.store.models import RecordingRow

__all__ = ["newest_matching", "search_clause", "search_terms"]

# SQLite-only tables from migration 0002; kept out of the ORM metadata on purpose.
_sqlite_only = MetaData()
_search_map = Table("recording_search", _sqlite_only, Column("n", Integer, primary_key=True), Column("id", String(26)))
_fts = Table("recording_search_fts", _sqlite_only, Column("rowid", Integer), Column("recording_search_fts", String))
_pending = Table("recording_search_pending", _sqlite_only, Column("n", Integer, primary_key=True), Column("size", Integer))
# PostgreSQL-only tables from migration 0008.
_postgres_only = MetaData()
_pg_index = Table("recording_search_index", _postgres_only, Column("id", String(26)), Column("search_text", String))
_pg_pending = Table("recording_search_pending", _postgres_only, Column("id", String(26)))

# The trigram tokenizer indexes runs of three characters; shorter terms rely on LIKE alone.
_MIN_INDEXED = 3
# Fewer FTS matches than this: the index answers fast. More: read the newest rows first.
_SELECTIVE = 1000
# How many of the newest rows (passing the other filters) to read before falling back to the index.
_WINDOW = 5000


_TERM = re.compile(r'"([^"]*)"|(\S+)')


def search_terms(text: str) -> list[str]:
    """Lower-cased terms: words, or "double-quoted phrases" kept whole. Apostrophes and
    backslashes are plain characters; an unbalanced double quote stays part of its word."""
    terms = (phrase or word for phrase, word in _TERM.findall(text))
    return [t.lower() for t in terms if t.strip()]


def _like_pattern(term: str) -> str:
    escaped = term.replace("/", "//").replace("%", "/%").replace("_", "/_")
    return f"%{escaped}%"


def _indexed_terms(terms: list[str]) -> list[str]:
    return [t for t in terms if len(t) >= _MIN_INDEXED]


def _covering_trigrams(terms: list[str]) -> list[str]:
    """Trigrams that together cover every character of the terms (each of at least three): one
    every three characters and the last. Each lookup costs a walk of a list of rows; the trigrams
    left out would narrow the candidates little (100,000 rows, a five-word phrase: 10 trigrams
    instead of 28, 18 ms instead of 55, 28,082 candidates instead of 23,987 for LIKE to check)."""
    starts = ((t, i) for t in terms for i in [*range(0, len(t) - 3, 3), len(t) - 3])
    return list(dict.fromkeys(t[i : i + 3] for t, i in starts))


def _fts_query(terms: list[str]) -> str:
    """The FTS5 ``MATCH`` query for the terms: every covering trigram. One quoted trigram is one
    token: the only kind of query a detail=none table takes."""
    return " AND ".join('"' + g.replace('"', '""') + '"' for g in _covering_trigrams(terms))


def _fts_matches(terms: list[str]) -> Select[Any]:
    return select(_fts.c.rowid).where(_fts.c.recording_search_fts.op("MATCH")(_fts_query(terms)))


def _pg_matches(terms: list[str]) -> Select[Any]:
    """On PostgreSQL (migration 0008): the indexed recordings holding every term, through the
    trigram GIN index on ``recording_search_index``."""
    return select(_pg_index.c.id).where(*_likes(terms, _pg_index.c.search_text))


class _IndexCandidates(ColumnElement[bool]):
    """The recording is among the index's matches for these terms, or waits to join the index:
    on SQLite the FTS5 table's, on PostgreSQL the trigram index's on ``recording_search_index``.
    Elsewhere: true.

    Compiled per dialect so ``apply_filters`` stays one dialect-free function.
    """

    type = Boolean()
    inherit_cache = False
    # Already a condition: without this SQLite would compare it "= 1" and lose the index.
    _is_implicitly_boolean = True

    def __init__(self, terms: list[str]) -> None:
        self.terms = terms


@compiles(_IndexCandidates)
def _compile_default(element: _IndexCandidates, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(true(), **kw)


@compiles(_IndexCandidates, "sqlite")
def _compile_sqlite(element: _IndexCandidates, compiler: SQLCompiler, **kw: Any) -> str:
    candidates = union_all(_fts_matches(element.terms), select(_pending.c.n))
    clause = RecordingRow.id.in_(select(_search_map.c.id).where(_search_map.c.n.in_(candidates)))
    return compiler.process(clause, **kw)


@compiles(_IndexCandidates, "postgresql")
def _compile_postgresql(element: _IndexCandidates, compiler: SQLCompiler, **kw: Any) -> str:
    clause = RecordingRow.id.in_(union_all(_pg_matches(element.terms), select(_pg_pending.c.id)))
    return compiler.process(clause, **kw)


def _likes(terms: list[str], column: ColumnElement[str] | InstrumentedAttribute[str]) -> list[ColumnElement[bool]]:
    return [column.like(_like_pattern(t), escape="/") for t in terms]


def search_clause(text: str) -> ColumnElement[bool]:
    """The WHERE clause for a search string (true when it has no terms)."""
    terms = search_terms(text)
    likes = _likes(terms, RecordingRow.search_text)
    indexed = _indexed_terms(terms)
    if indexed:
        likes.append(_IndexCandidates(indexed))
    return and_(true(), *likes)


async def newest_matching(
    session: AsyncSession, dialect: str, search: str | None, newest: Callable[[bool], Select[Any]], n: int
) -> Sequence[RecordingRow]:
    """The first ``n`` rows of ``newest(True)`` (filtered, searched, newest first), chosen fast.

    ``newest(False)`` is the same query without the search. Only a common indexed term takes the
    two-step path; every path returns exactly the rows ``newest(True)`` would.
    """
    terms = search_terms(search or "")
    indexed = _indexed_terms(terms)
    if not indexed or dialect not in ("sqlite", "postgresql"):
        return (await session.scalars(newest(True).limit(n))).all()
    matches = _fts_matches(indexed) if dialect == "sqlite" else _pg_matches(indexed)
    probe = select(func.count()).select_from(matches.limit(_SELECTIVE).subquery())
    if int(await session.scalar(probe) or 0) < _SELECTIVE:
        return (await session.scalars(newest(True).limit(n))).all()
    window = newest(False).with_only_columns(RecordingRow.id, RecordingRow.search_text).limit(_WINDOW).subquery()
    hits_stmt = select(window.c.id).where(*_likes(terms, window.c.search_text)).limit(n)
    if dialect == "postgresql":
        # PostgreSQL keeps the window's order only when asked; asked, it sees the window is sorted
        # so and still stops at n hits. SQLite: no outer ORDER BY, which would read the whole window
        # (it runs the window as a co-routine that yields rows newest first; tests check the order).
        hits_stmt = hits_stmt.order_by(window.c.id.desc())
    hits = list((await session.scalars(hits_stmt)).all())
    if len(hits) < n:
        seen = int(await session.scalar(select(func.count()).select_from(window)) or 0)
        if seen == _WINDOW:  # the window ran out before n matches: the index finds the rest
            return (await session.scalars(newest(True).limit(n))).all()
    rows = await session.scalars(select(RecordingRow).where(RecordingRow.id.in_(hits)).order_by(RecordingRow.id.desc()))
    return rows.all()
