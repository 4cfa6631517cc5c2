"""PostgreSQL's search index upkeep: pending recordings into ``recording_search_index`` (migration 0008).

A new recording is only listed as pending; this moves pending recordings into the index table,
whose trigram GIN index search uses. One statement a slice, so a search sees each recording
either pending or indexed, never neither. Several writers (one per streamproxy instance) take
disjoint slices: rows another writer is moving are skipped, not waited for.
"""

from __future__ import annotations

__all__ = ["BACKLOG_ROWS", "DEFERS_INDEX", "INDEX_SLICE", "PENDING_TABLE", "QUIET_SECONDS", "index_statement"]

PENDING_TABLE = "recording_search_pending"
# True once the database is at migration 0008 or later (before it, the index on ``recordings``
# keeps up by itself and there is nothing to move).
DEFERS_INDEX = f"SELECT to_regclass('{PENDING_TABLE}') IS NOT NULL"

# No batch for this long: serve is between bursts, time to catch up (the SQLite worker's too).
QUIET_SECONDS = 0.5
# Recordings a writer lets wait, past which it indexes with each batch (twice the batch) too.
# Pending ones are read whole by every search (``LIKE`` on each), so the wait stays bounded.
BACKLOG_ROWS = 5000
# Recordings moved per statement while quiet, between looks at whether a batch has come.
INDEX_SLICE = 256

# $1: how many at most (NULL: all). Answers how many were moved.
_MOVE = f"""WITH picked AS (
    SELECT id FROM {PENDING_TABLE} ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED
  ), moved AS (
    DELETE FROM {PENDING_TABLE} p USING picked WHERE p.id = picked.id RETURNING p.id
  ), indexed AS (
    INSERT INTO recording_search_index (id, search_text)
    SELECT r.id, coalesce(r.search_text, '') FROM recordings r JOIN moved ON r.id = moved.id
    ON CONFLICT (id) DO UPDATE SET search_text = EXCLUDED.search_text
  )
  SELECT count(*) FROM moved"""


def index_statement(most: int | None) -> tuple[str, tuple[int | None]]:
    """The statement (asyncpg's ``$1`` style) that indexes up to ``most`` of the oldest pending
    recordings (None: every one) and answers how many it took."""
    return _MOVE, (most,)
