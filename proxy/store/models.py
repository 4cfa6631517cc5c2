"""Tables. Changed only together with a migration in ``migrations/versions``.

A recording is one row in ``recordings`` (what listing and filtering read) and
one in ``recording_bodies`` (the response body and where each chunk ends and
when it arrived). Storing the chunks as one body plus two packed arrays keeps
a 200-chunk stream at two inserted rows instead of 201. The body is stored
zlib-compressed when that makes it smaller (``encoding``), which a stream of
events that all repeat the same JSON prefix nearly always does.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = ["Base", "RecordingBodyRow", "RecordingRow"]


class Base(DeclarativeBase):
    pass


class RecordingRow(Base):
    __tablename__ = "recordings"

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    method: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(String(1024))
    query: Mapped[str] = mapped_column(Text, default="")
    model: Mapped[str | None] = mapped_column(String(256))
    stream: Mapped[bool] = mapped_column(Boolean, default=False)
    key_fingerprint: Mapped[str | None] = mapped_column(String(12))
    match_key: Mapped[str] = mapped_column(String(64))
    request_headers: Mapped[dict[str, Any]] = mapped_column(JSON)
    request_body: Mapped[bytes] = mapped_column(LargeBinary)
    status: Mapped[int | None] = mapped_column(Integer)
    response_headers: Mapped[dict[str, Any]] = mapped_column(JSON)
    outcome: Mapped[str] = mapped_column(String(20))
    error: Mapped[str | None] = mapped_column(Text)
    ttfb_ms: Mapped[float | None] = mapped_column(Float)
    duration_ms: Mapped[float | None] = mapped_column(Float)
    reply: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    notes: Mapped[list[str] | None] = mapped_column(JSON)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    chunk_count: Mapped[int] = mapped_column(Integer, default=0)
    body_bytes: Mapped[int] = mapped_column(Integer, default=0)
    # Lower-cased request messages and reply text, for search.
    search_text: Mapped[str] = mapped_column(Text, default="")

    __table_args__ = (
        Index("ix_recordings_started_at", "started_at"),
        Index("ix_recordings_match_key", "match_key", "id"),
        Index("ix_recordings_model", "model", "id"),
        Index("ix_recordings_key_fingerprint", "key_fingerprint", "id"),
        Index("ix_recordings_outcome", "outcome", "id"),
        Index("ix_recordings_path", "path", "id"),
    )


class RecordingBodyRow(Base):
    __tablename__ = "recording_bodies"

    id: Mapped[str] = mapped_column(String(26), ForeignKey("recordings.id", ondelete="CASCADE"), primary_key=True)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    # How ``body`` is stored: "" raw (rows from before migration 0003 too), "zlib" compressed.
    encoding: Mapped[str] = mapped_column(String(16), server_default="")
    # Packed little-endian uint64 end positions and float64 offsets, one per chunk.
    chunk_ends: Mapped[bytes] = mapped_column(LargeBinary)
    chunk_offsets: Mapped[bytes] = mapped_column(LargeBinary)
