"""SQLite: a new recording waits to be added to the search index; the index catches up later

Adding a recording's search text to the FTS5 trigram table in its insert trigger was most of
what writing a recording cost (~80 of ~106 µs a row), paid in the assembly worker while streams
were being relayed on the same two cores. Now the insert trigger only notes the recording as
pending (``recording_search_pending``, with the size of its search text), and whoever writes
adds pending rows to the index when it suits them (``proxy.sqlite_batch``): the assembly worker
when no batch has come for a moment, or once the backlog passes a bound, and the in-process
store right away.

Search stays exact: the index only narrows the candidates (``LIKE`` on ``search_text``
decides), and a pending recording is always a candidate.

A contentless FTS5 table can only forget a row given the text it indexed, and must never be
asked to forget one it does not hold: the delete and update triggers tell the index only about
rows that left the pending table. Upgrade starts with nothing pending (0002's triggers indexed
every row); downgrade indexes what is pending, then restores 0002's triggers.
PostgreSQL's trigram GIN index is left as it is (it has its own pending list).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_TRIGGERS = ("recordings_search_ai", "recordings_search_ad", "recordings_search_au")

_DEFERRED = [
    "CREATE TABLE recording_search_pending (n INTEGER PRIMARY KEY, size INTEGER NOT NULL)",
    """CREATE TRIGGER recordings_search_ai AFTER INSERT ON recordings BEGIN
         INSERT INTO recording_search (id) VALUES (new.id);
         INSERT INTO recording_search_pending (n, size) VALUES (last_insert_rowid(), coalesce(length(new.search_text), 0));
       END""",
    """CREATE TRIGGER recordings_search_ad AFTER DELETE ON recordings BEGIN
         INSERT INTO recording_search_fts (recording_search_fts, rowid, search_text)
           SELECT 'delete', s.n, old.search_text FROM recording_search s
            WHERE s.id = old.id AND NOT EXISTS (SELECT 1 FROM recording_search_pending p WHERE p.n = s.n);
         DELETE FROM recording_search_pending WHERE n = (SELECT n FROM recording_search WHERE id = old.id);
         DELETE FROM recording_search WHERE id = old.id;
       END""",
    """CREATE TRIGGER recordings_search_au AFTER UPDATE OF search_text ON recordings BEGIN
         INSERT INTO recording_search_fts (recording_search_fts, rowid, search_text)
           SELECT 'delete', s.n, old.search_text FROM recording_search s
            WHERE s.id = old.id AND NOT EXISTS (SELECT 1 FROM recording_search_pending p WHERE p.n = s.n);
         INSERT OR REPLACE INTO recording_search_pending (n, size)
           SELECT n, coalesce(length(new.search_text), 0) FROM recording_search WHERE id = new.id;
       END""",
]

# As migration 0002 made them.
_IMMEDIATE = [
    """CREATE TRIGGER recordings_search_ai AFTER INSERT ON recordings BEGIN
         INSERT INTO recording_search (id) VALUES (new.id);
         INSERT INTO recording_search_fts (rowid, search_text) VALUES (last_insert_rowid(), new.search_text);
       END""",
    """CREATE TRIGGER recordings_search_ad AFTER DELETE ON recordings BEGIN
         INSERT INTO recording_search_fts (recording_search_fts, rowid, search_text)
           SELECT 'delete', n, old.search_text FROM recording_search WHERE id = old.id;
         DELETE FROM recording_search WHERE id = old.id;
       END""",
    """CREATE TRIGGER recordings_search_au AFTER UPDATE OF search_text ON recordings BEGIN
         INSERT INTO recording_search_fts (recording_search_fts, rowid, search_text)
           SELECT 'delete', n, old.search_text FROM recording_search WHERE id = old.id;
         INSERT INTO recording_search_fts (rowid, search_text)
           SELECT n, new.search_text FROM recording_search WHERE id = new.id;
       END""",
]


def _drop_triggers() -> None:
    for name in _TRIGGERS:
        op.execute(f"DROP TRIGGER {name}")


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    _drop_triggers()
    for statement in _DEFERRED:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute(
        """INSERT INTO recording_search_fts (rowid, search_text)
             SELECT s.n, r.search_text FROM recording_search_pending p
               JOIN recording_search s ON s.n = p.n JOIN recordings r ON r.id = s.id"""
    )
    _drop_triggers()
    op.execute("DROP TABLE recording_search_pending")
    for statement in _IMMEDIATE:
        op.execute(statement)
