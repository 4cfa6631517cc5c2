"""full-text search index over recordings.search_text

One meaning on both backends: every search word must occur as a substring of
``search_text`` (already lower-cased). The index only narrows the candidates;
the ``LIKE`` on ``search_text`` stays the truth, so both backends return the same rows.

- PostgreSQL: a trigram GIN index (``pg_trgm``), which ``LIKE '%word%'`` uses directly.
- SQLite: a contentless FTS5 table with the trigram tokenizer, keyed by the
  ``INTEGER PRIMARY KEY`` of ``recording_search`` (which maps it to the recording id).
  ``recordings`` itself has no integer key, and its implicit rowids may change on
  ``VACUUM``, so the FTS index never refers to them. Triggers keep both tables in
  step with every insert and delete, whoever runs it.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_SQLITE_UP = [
    "CREATE TABLE recording_search (n INTEGER PRIMARY KEY, id VARCHAR(26) NOT NULL UNIQUE)",
    "CREATE VIRTUAL TABLE recording_search_fts USING fts5(search_text, content='', tokenize='trigram')",
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
    "INSERT INTO recording_search (id) SELECT id FROM recordings ORDER BY id",
    """INSERT INTO recording_search_fts (rowid, search_text)
         SELECT s.n, r.search_text FROM recording_search s JOIN recordings r ON r.id = s.id""",
]

_SQLITE_DOWN = [
    "DROP TRIGGER recordings_search_au",
    "DROP TRIGGER recordings_search_ad",
    "DROP TRIGGER recordings_search_ai",
    "DROP TABLE recording_search_fts",
    "DROP TABLE recording_search",
]


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        op.execute("CREATE INDEX ix_recordings_search_trgm ON recordings USING gin (search_text gin_trgm_ops)")
        return
    for statement in _SQLITE_UP:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX ix_recordings_search_trgm")
        return
    for statement in _SQLITE_DOWN:
        op.execute(statement)
