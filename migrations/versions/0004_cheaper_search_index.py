"""a cheaper SQLite search index: FTS5 trigrams without positions or case folding

Keeping the FTS5 trigram table of 0002 up to date was most of SQLite's CPU per inserted
recording. The index only narrows the candidates (``LIKE`` on ``search_text`` decides), so it
does not need all it kept:

- ``detail=none``: no positions, only which rows hold a trigram. A term is then looked up as
  all of its trigrams rather than as a phrase; the few extra candidates are dropped by ``LIKE``.
- ``columnsize=0``: no per-row token counts (only ranking uses them; search never ranks).
- ``case_sensitive 1``: ``search_text`` and the search terms are lower-cased before they get
  here, so folding case again is wasted.

The table is rebuilt from ``recordings`` (the same triggers keep it in step: they name the
table, not its options); downgrade rebuilds 0002's table, which phrase queries need.
PostgreSQL's trigram GIN index is left as it is.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_CHEAP = (
    "CREATE VIRTUAL TABLE recording_search_fts USING fts5(search_text, content='', detail=none, columnsize=0,"
    " tokenize='trigram case_sensitive 1')"
)
_AS_0002 = "CREATE VIRTUAL TABLE recording_search_fts USING fts5(search_text, content='', tokenize='trigram')"


def _rebuild(create: str) -> None:
    op.execute("DROP TABLE recording_search_fts")
    op.execute(create)
    op.execute(
        """INSERT INTO recording_search_fts (rowid, search_text)
             SELECT s.n, r.search_text FROM recording_search s JOIN recordings r ON r.id = s.id"""
    )
    # One bulk insert leaves many small segments behind; merge them so searches read few.
    op.execute("INSERT INTO recording_search_fts (recording_search_fts) VALUES ('optimize')")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild(_CHEAP)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild(_AS_0002)
