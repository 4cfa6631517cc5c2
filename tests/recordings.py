"""Recordings built in memory for audit tests: a streamed chat completion with its chunks and reply;
and one written as an older streamproxy wrote it, for migration tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import accumulate
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.ids import new_id
from proxy.prepare import pack_body
from proxy.record import Outcome, Record
from proxy.store.models import RecordingRow
from proxy.rows import row_values

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def make_record(
    question: str = "Say hello",
    answer: str = "Hello!",
    *,
    model: str = "gpt-4o-mini",
    at: datetime = T0,
    key: str | None = "3f9a0c1b2d4e",
    outcome: Outcome = Outcome.COMPLETE,
    path: str = "/v1/chat/completions",
    ttfb_ms: float | None = 40.0,
    duration_ms: float | None = 400.0,
    usage: tuple[int, int] | None = (5, 10),
    offsets_ms: list[float] | None = None,
) -> Record:
    """One recording; the answer arrives as one chunk per word, at ``offsets_ms`` (evenly spread by default)."""
    words = answer.split(" ")
    pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1700000000, "model": model}
    chunks = [
        b"data: " + orjson.dumps({**base, "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]}) + b"\n\n"
        for p in pieces
    ] + [b"data: [DONE]\n\n"]
    if offsets_ms is None:
        first = ttfb_ms or 0.0
        step = ((duration_ms or first) - first) / max(1, len(chunks) - 1)
        offsets_ms = [first + i * step for i in range(len(chunks))]
    reply: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer, "refusal": None}, "logprobs": None, "finish_reason": "stop"}],
    }
    if usage is not None:
        reply["usage"] = {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)}
    body = {"model": model, "stream": True, "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": question}]}
    return Record(
        id=new_id(at.timestamp()),
        started_at=at,
        ended_at=at + timedelta(milliseconds=duration_ms or 0.0),
        method="POST",
        path=path,
        request_headers={"authorization": "[redacted]", "content-type": "application/json"},
        request_body=orjson.dumps(body),
        key_fingerprint=key,
        model=model,
        stream=True,
        match_key="k" * 64,
        status=200,
        response_headers={"content-type": "text/event-stream"},
        chunks=chunks,
        offsets_ms=offsets_ms,
        ttfb_ms=ttfb_ms,
        duration_ms=duration_ms,
        outcome=outcome,
        reply=reply,
        assembled=True,
    )


async def insert_as_before_0003(engine: AsyncEngine, rec: Record) -> None:
    """``rec`` written the way streamproxy wrote it before migration 0003: the body raw, in a
    ``recording_bodies`` table without an ``encoding`` column (revisions 0001 and 0002)."""
    row, packed = row_values(rec)
    bodies = sa.table(
        "recording_bodies",
        *(sa.column(name, sa.LargeBinary) for name in ("body", "chunk_ends", "chunk_offsets")),
        sa.column("id", sa.String),
    )
    async with engine.begin() as conn:
        await conn.execute(RecordingRow.__table__.insert(), [row])
        plain = pack_body(rec.body, accumulate(map(len, rec.chunks)), rec.offsets_ms, compress=False)  # arrays raw too
        raw = {"id": packed["id"], "body": plain.body, "chunk_ends": plain.chunk_ends, "chunk_offsets": plain.chunk_offsets}
        await conn.execute(bodies.insert(), [raw])
