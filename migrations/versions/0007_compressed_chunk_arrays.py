"""chunk ends and offsets stored compressed: recording_bodies.encoding may end in ``/e`` or ``/z``

No change to the schema. From this revision on, a recording of eight chunks or more is written
with its ``chunk_ends`` zlib-compressed, and its ``chunk_offsets`` too when they repeat (events
that came four or more to a read), and ``encoding`` says so: the body's codec (``''`` or
``'zlib'``), then ``/e`` (the ends) or ``/z`` (both). Together the two arrays were 3.2 KB of a
200-chunk recording, more than half of what one weighs while it waits to be written, crosses
the pipe to the assembly worker, and is stored. Rows written before stay as they are and read
as before.

Downgrade stores the arrays of every such row raw again, so that revision 0006's code, which
knows only ``''`` and ``'zlib'``, reads them.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27
"""

from __future__ import annotations

import zlib

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# Rows rewritten per round trip on downgrade: memory stays bounded whatever the table holds.
_DOWNGRADE_BATCH = 200


def upgrade() -> None:
    pass


def downgrade() -> None:
    bodies = sa.table(
        "recording_bodies",
        sa.column("id", sa.String),
        sa.column("encoding", sa.String),
        sa.column("chunk_ends", sa.LargeBinary),
        sa.column("chunk_offsets", sa.LargeBinary),
    )
    packed = (
        sa.select(bodies.c.id, bodies.c.encoding, bodies.c.chunk_ends, bodies.c.chunk_offsets)
        .where(bodies.c.encoding.in_(["/e", "zlib/e", "/z", "zlib/z"]))
        .limit(_DOWNGRADE_BATCH)
    )
    to_raw = (
        bodies.update()
        .where(bodies.c.id == sa.bindparam("b_id"))
        .values(encoding=sa.bindparam("b_encoding"), chunk_ends=sa.bindparam("b_ends"), chunk_offsets=sa.bindparam("b_offsets"))
    )
    conn = op.get_bind()
    while rows := conn.execute(packed).all():
        conn.execute(
            to_raw,
            [
                {
                    "b_id": row.id,
                    "b_encoding": row.encoding.partition("/")[0],
                    "b_ends": zlib.decompress(row.chunk_ends),
                    "b_offsets": zlib.decompress(row.chunk_offsets) if row.encoding.endswith("/z") else row.chunk_offsets,
                }
                for row in rows
            ],
        )
