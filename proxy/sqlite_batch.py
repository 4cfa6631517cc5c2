"""A batch of rows into SQLite: multi-row statements, one transaction.

Shared by the store (in the SQLite driver's thread) and the assembly worker, which writes the
batches it assembles itself. Imports nothing but ``sqlite3``: the worker is a second process on
a small machine and must not load SQLAlchemy for this.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["BUSY_TIMEOUT", "SESSION_PRAGMAS", "RowsInsert", "Statements", "connect", "in_parts", "write_batch"]

# Set on every connection (the file's own settings, WAL and page size, are set when it is made).
SESSION_PRAGMAS = ("PRAGMA synchronous=NORMAL", "PRAGMA foreign_keys=ON")
# How long a write waits for another connection's lock, as serve's own connections do.
BUSY_TIMEOUT = 5.0

# Rows per statement, at most: 256 x 25 columns stays under SQLite's limit of 32766 parameters
# (3.32 and later; 32 rows under the 999 of older ones). Statements come in power-of-two sizes
# because the driver caches each distinct statement with its last parameters (bodies included)
# still bound: arbitrary sizes kept hundreds of MB alive.
_MAX_ROWS_PER_STATEMENT = 256 if sqlite3.sqlite_version_info >= (3, 32) else 32

Statements = list[tuple[str, tuple[Any, ...]]]


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
        return in_parts(rows, _MAX_ROWS_PER_STATEMENT, self.sql)

    def sql(self, size: int) -> str:
        return self.head + ", ".join([self.group] * size) + self.tail


def connect(path: str) -> sqlite3.Connection:
    """A connection to write batches with (the assembly worker's)."""
    db = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None)
    for pragma in SESSION_PRAGMAS:
        db.execute(pragma)
    return db


def write_batch(db: sqlite3.Connection, statements: Statements) -> None:
    """The whole batch in one transaction."""
    db.execute("BEGIN IMMEDIATE")  # the write lock now, waiting out a busy database like any write
    try:
        for sql, params in statements:
            db.execute(sql, params)
    except BaseException:
        db.rollback()
        raise
    db.commit()
