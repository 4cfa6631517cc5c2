"""A batch of rows into SQLite: multi-row statements, one transaction; and the search index's
upkeep.

Shared by the store (in the SQLite driver's thread) and the assembly worker, which writes the
batches it assembles itself. Imports nothing but ``sqlite3``: the worker is a second process on
a small machine and must not load SQLAlchemy for this.

Since migration 0006 a new recording is only noted as pending for the FTS5 search index (see
that migration); ``index_statements`` adds pending recordings to it. The worker does so when no
batch has come for a moment (``index_some``), or with a batch once the backlog passes
``BACKLOG_ROWS`` or ``BACKLOG_BYTES`` of search text, which bounds what a search reads without
the index (every pending recording is a candidate, checked by ``LIKE``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlite3

__all__ = [
    "ALL", "BACKLOG_BYTES", "BACKLOG_ROWS", "BUSY_TIMEOUT", "INDEX_SLICE", "SESSION_PRAGMAS", "RowsInsert", "Statements",
    "connect", "in_parts", "index_backlog", "index_some", "index_statements", "write_batch",
]

# Set on every connection (the file's own settings, WAL and page size, are set when it is made).
SESSION_PRAGMAS = ("PRAGMA synchronous=NORMAL", "PRAGMA foreign_keys=ON")
# The worker's page cache: it appends and reads back little. SQLite's default of 2 MB held the
# worker's peak ~1.2 MB higher over a run of 200-recording batches, for no measurable CPU.
_WRITER_CACHE = "PRAGMA cache_size=-512"
# How long a write waits for another connection's lock, as serve's own connections do.
BUSY_TIMEOUT = 5.0

# Rows per statement, at most: 64 x 25 columns, well under SQLite's limit of 32766 parameters
# (3.32 and later; 32 rows under the 999 of older ones). Statements come in power-of-two sizes
# because the driver caches each distinct statement with its last parameters (bodies included)
# still bound: arbitrary sizes kept hundreds of MB alive. At 256 rows, those cached statements
# held the worker's peak 1.7 MB higher over a run of 200-recording batches, for no CPU saved.
_MAX_ROWS = 64


@cache
def _max_rows_per_statement() -> int:
    import sqlite3  # here: serve builds statements for its worker and never loads the driver

    return _MAX_ROWS if sqlite3.sqlite_version_info >= (3, 32) else 32


Statements = list[tuple[str, tuple[Any, ...]]]

# Pending recordings that a write adds to the search index at once, past which it indexes too.
# Bursts below this pay no index upkeep while they are relayed; a search reads the pending ones
# whole (64 MB of search text: ~0.1 s of LIKE), so the bound is on both count and size.
BACKLOG_ROWS = 5000
BACKLOG_BYTES = 64 << 20
# Recordings a quiet worker adds to the index per transaction (~20 ms), between looks at its input.
INDEX_SLICE = 256
# ``index_statements(ALL)``: every pending recording (SQLite reads a negative LIMIT as none).
ALL = -1

_OLDEST_PENDING = "SELECT n FROM recording_search_pending ORDER BY n LIMIT ?"
_INDEX = f"""INSERT INTO recording_search_fts (rowid, search_text)
  SELECT s.n, r.search_text FROM ({_OLDEST_PENDING}) p
    JOIN recording_search s ON s.n = p.n JOIN recordings r ON r.id = s.id"""
_UNPEND = f"DELETE FROM recording_search_pending WHERE n IN ({_OLDEST_PENDING})"


def in_parts(rows: Sequence[tuple[Any, ...]], most: int, sql: Callable[[int], str]) -> Statements:
    """``rows`` many to a statement, in parts of power-of-two sizes up to ``most``, largest first:
    each part's SQL (``sql(size)``) and its rows' values in one flat tuple."""
    out: Statements = []
    start = 0
    while start < len(rows):
        size = 1 << (min(len(rows) - start, most).bit_length() - 1)
        out.append((sql(size), tuple(v for row in rows[start : start + size] for v in row)))
        start += size
    return out


@dataclass(frozen=True, slots=True)
class RowsInsert:
    """``INSERT INTO t (…) VALUES (?, …), (?, …) … ON CONFLICT …``, in its three parts: what comes
    before the first row's parameters, one row's group of them, and the rest."""

    head: str
    group: str
    tail: str

    def statements(self, rows: Sequence[tuple[Any, ...]]) -> Statements:
        """(SQL, parameters) for ``rows``, already bound (each a tuple in column order)."""
        return in_parts(rows, _max_rows_per_statement(), self.sql)

    def sql(self, size: int) -> str:
        return self.head + ", ".join([self.group] * size) + self.tail


def connect(path: str) -> sqlite3.Connection:
    """A connection to write batches with (the assembly worker's)."""
    import sqlite3

    db = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None)
    for pragma in (*SESSION_PRAGMAS, _WRITER_CACHE):
        db.execute(pragma)
    return db


def write_batch(db: sqlite3.Connection, statements: Statements) -> int:
    """The whole batch in one transaction; the last statement's row count."""
    db.execute("BEGIN IMMEDIATE")  # the write lock now, waiting out a busy database like any write
    count = 0
    try:
        for sql, params in statements:
            count = db.execute(sql, params).rowcount
    except BaseException:
        db.rollback()
        raise
    db.commit()
    return count


def index_statements(most: int) -> Statements:
    """Add the ``most`` oldest pending recordings (``ALL``: every one) to the search index; to
    run in a transaction, which makes both statements choose the same rows."""
    return [(_INDEX, (most,)), (_UNPEND, (most,))]


def index_backlog(db: sqlite3.Connection) -> tuple[int, int]:
    """How many recordings wait for the search index, and the size of their search text."""
    count, size = db.execute("SELECT count(*), total(size) FROM recording_search_pending").fetchone()
    return int(count), int(size)


def index_some(db: sqlite3.Connection, most: int = INDEX_SLICE) -> int:
    """Add up to ``most`` pending recordings to the search index in one transaction: how many."""
    return write_batch(db, index_statements(most))
