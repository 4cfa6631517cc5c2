"""PostgreSQL: TOAST compresses the large columns with lz4 instead of pglz

A recording's search text, reply and chunk arrays are each large enough for PostgreSQL to
compress them when the row is stored (TOAST), with pglz by default: sampled with ``perf`` while
recordings were inserted, ``pglz_compress`` was half of the server's CPU, ~0.3 ms a recording
(on the same cores as the relay). lz4 does the same job at a fraction of the cost: the server's
CPU a recording went from ~0.62 to ~0.34 ms (``tests``' recordings, batches of 200), the trigram
index unchanged.

Only values written from now on are compressed with lz4; stored ones stay as they are and read
alike. A server built without lz4 keeps pglz (a notice says so), as does one before 14, which
has no per-column compression. SQLite has no TOAST: nothing to do there.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_COLUMNS = {
    "recordings": ("request_headers", "request_body", "response_headers", "error", "reply", "notes", "search_text"),
    "recording_bodies": ("body", "chunk_ends", "chunk_offsets"),
}


def _set(method: str) -> None:
    statements = "; ".join(
        f"ALTER TABLE {table} " + ", ".join(f"ALTER COLUMN {c} SET COMPRESSION {method}" for c in columns)
        for table, columns in _COLUMNS.items()
    )
    op.execute(
        f"""DO $$ BEGIN {statements};
        EXCEPTION WHEN feature_not_supported OR syntax_error THEN
            RAISE NOTICE 'streamproxy: this PostgreSQL cannot compress columns with {method}; TOAST keeps its default';
        END $$"""
    )


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _set("lz4")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _set("pglz")
