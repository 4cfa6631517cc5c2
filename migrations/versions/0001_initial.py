"""recordings and their bodies

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "recordings",
        sa.Column("id", sa.String(26), primary_key=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("path", sa.String(1024), nullable=False),
        sa.Column("query", sa.Text, nullable=False),
        sa.Column("model", sa.String(256), nullable=True),
        sa.Column("stream", sa.Boolean, nullable=False),
        sa.Column("key_fingerprint", sa.String(12), nullable=True),
        sa.Column("match_key", sa.String(64), nullable=False),
        sa.Column("request_headers", sa.JSON, nullable=False),
        sa.Column("request_body", sa.LargeBinary, nullable=False),
        sa.Column("status", sa.Integer, nullable=True),
        sa.Column("response_headers", sa.JSON, nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("ttfb_ms", sa.Float, nullable=True),
        sa.Column("duration_ms", sa.Float, nullable=True),
        sa.Column("reply", sa.JSON, nullable=True),
        sa.Column("notes", sa.JSON, nullable=True),
        sa.Column("prompt_tokens", sa.Integer, nullable=True),
        sa.Column("completion_tokens", sa.Integer, nullable=True),
        sa.Column("chunk_count", sa.Integer, nullable=False),
        sa.Column("body_bytes", sa.Integer, nullable=False),
        sa.Column("search_text", sa.Text, nullable=False),
    )
    op.create_index("ix_recordings_started_at", "recordings", ["started_at"])
    op.create_index("ix_recordings_match_key", "recordings", ["match_key", "id"])
    op.create_index("ix_recordings_model", "recordings", ["model", "id"])
    op.create_index("ix_recordings_key_fingerprint", "recordings", ["key_fingerprint", "id"])
    op.create_index("ix_recordings_outcome", "recordings", ["outcome", "id"])
    op.create_index("ix_recordings_path", "recordings", ["path", "id"])
    op.create_table(
        "recording_bodies",
        sa.Column("id", sa.String(26), sa.ForeignKey("recordings.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("chunk_ends", sa.LargeBinary, nullable=False),
        sa.Column("chunk_offsets", sa.LargeBinary, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("recording_bodies")
    op.drop_table("recordings")
