"""PostgreSQL: a new recording waits to be added to the search index; the index catches up later

Keeping 0002's trigram GIN index on ``recordings.search_text`` up to date was most of what the
PostgreSQL server spent on a recording (under load at 100 streams, ~170 µs of its CPU a recording
with it, ~80 without: the trigrams of every search text, taken while streams were being relayed
on the same two cores). As migration 0006 did for SQLite's FTS5 table, the index now catches up
when it suits the writer:

- ``recording_search_index`` holds a copy of the search text of each indexed recording, and the
  trigram GIN index is on it. ``recordings`` keeps its own ``search_text``, which ``LIKE`` checks.
- ``recording_search_pending`` lists the recordings not yet (or no longer up to date) in it. A
  trigger adds every inserted recording (one statement-level trigger, so a batch pays once),
  and one whose search text changes.
- Whoever writes moves pending recordings into the index (``proxy.postgres_index``): serve when
  no batch has come for a moment or once the backlog passes a bound, and the in-process store
  right away. Several instances share the work (``FOR UPDATE SKIP LOCKED``).

Search stays exact: the index only narrows the candidates, a pending recording is always one,
and ``LIKE`` on ``recordings.search_text`` decides. Both tables follow their recording out
(``ON DELETE CASCADE``).

Upgrade indexes every recording there is (nothing starts pending); downgrade builds 0002's index
on ``recordings`` again. Both take as long as building a trigram index over the table does.
SQLite is left as it is.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_UP = [
    """CREATE TABLE recording_search_index (
         id VARCHAR(26) PRIMARY KEY REFERENCES recordings (id) ON DELETE CASCADE,
         search_text TEXT NOT NULL)""",
    """CREATE TABLE recording_search_pending (
         id VARCHAR(26) PRIMARY KEY REFERENCES recordings (id) ON DELETE CASCADE)""",
    "INSERT INTO recording_search_index (id, search_text) SELECT id, coalesce(search_text, '') FROM recordings",
    "CREATE INDEX ix_recording_search_index_trgm ON recording_search_index USING gin (search_text gin_trgm_ops)",
    "DROP INDEX ix_recordings_search_trgm",
    """CREATE FUNCTION recordings_search_pend_new() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         INSERT INTO recording_search_pending (id) SELECT id FROM inserted ON CONFLICT DO NOTHING;
         RETURN NULL;
       END $$""",
    """CREATE TRIGGER recordings_search_ai AFTER INSERT ON recordings
         REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION recordings_search_pend_new()""",
    """CREATE FUNCTION recordings_search_pend_changed() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         INSERT INTO recording_search_pending (id) VALUES (NEW.id) ON CONFLICT DO NOTHING;
         RETURN NULL;
       END $$""",
    """CREATE TRIGGER recordings_search_au AFTER UPDATE OF search_text ON recordings
         FOR EACH ROW WHEN (OLD.search_text IS DISTINCT FROM NEW.search_text)
         EXECUTE FUNCTION recordings_search_pend_changed()""",
]

_DOWN = [
    "DROP TRIGGER recordings_search_au ON recordings",
    "DROP TRIGGER recordings_search_ai ON recordings",
    "DROP FUNCTION recordings_search_pend_changed()",
    "DROP FUNCTION recordings_search_pend_new()",
    "DROP TABLE recording_search_pending",
    "DROP TABLE recording_search_index",
    "CREATE INDEX ix_recordings_search_trgm ON recordings USING gin (search_text gin_trgm_ops)",
]


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for statement in _UP:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for statement in _DOWN:
        op.execute(statement)
