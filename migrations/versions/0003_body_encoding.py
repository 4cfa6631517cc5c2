"""response bodies stored compressed: recording_bodies.encoding

``encoding`` says how ``recording_bodies.body`` is stored: ``''`` raw (every row written
before this revision), ``'zlib'`` zlib-compressed. A streamed reply repeats the same JSON
prefix in every event, so a 50 KB body shrinks to about 1 KB, and the database writes (and, on
PostgreSQL, TOASTs) that instead.

Downgrade decompresses every compressed body before dropping the column, so the code of
revision 0002, which reads ``body`` as the raw bytes, finds them raw again.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import zlib

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# Bodies decompressed per round trip on downgrade: enough to make round trips cheap, few
# enough that memory stays bounded whatever the table holds.
_DOWNGRADE_BATCH = 200


def upgrade() -> None:
    op.add_column("recording_bodies", sa.Column("encoding", sa.String(16), nullable=False, server_default=""))


def downgrade() -> None:
    bodies = sa.table(
        "recording_bodies",
        sa.column("id", sa.String),
        sa.column("body", sa.LargeBinary),
        sa.column("encoding", sa.String),
    )
    compressed = sa.select(bodies.c.id, bodies.c.body).where(bodies.c.encoding == "zlib").limit(_DOWNGRADE_BATCH)
    to_raw = bodies.update().where(bodies.c.id == sa.bindparam("b_id")).values(body=sa.bindparam("b_body"), encoding="")
    conn = op.get_bind()
    while rows := conn.execute(compressed).all():
        conn.execute(to_raw, [{"b_id": row.id, "b_body": zlib.decompress(row.body)} for row in rows])
    with op.batch_alter_table("recording_bodies") as batch:
        batch.drop_column("encoding")
