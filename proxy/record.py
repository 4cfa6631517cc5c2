"""One recording in memory, and its JSON form (SPEC "Recording JSON").

The same JSON object is served by the audit API, printed by ``show --json``,
written a line each by ``export`` and by the spool, and read back by ``import``.
"""

from __future__ import annotations

import base64
import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from proxy.prepare import PackedChunks, pack_chunks

__all__ = ["EXPORT_FORMAT", "Outcome", "Record", "from_json", "iso", "parse_iso", "to_json"]

EXPORT_FORMAT = 1


class Outcome(enum.StrEnum):
    """How the transport ended; says nothing about the answer's status."""

    COMPLETE = "complete"
    CLIENT_CLOSED = "client_closed"
    UPSTREAM_CLOSED = "upstream_closed"
    UPSTREAM_ERROR = "upstream_error"
    PROXY_ERROR = "proxy_error"


@dataclass(slots=True)
class Record:
    """A recording: request, response, chunks with their offsets, and the assembled reply.

    ``chunks`` concatenate to exactly the response body; ``offsets_ms[i]`` is when
    chunk ``i`` was complete, in milliseconds since the request started.
    """

    id: str
    started_at: datetime
    method: str
    path: str
    query: str = ""
    request_headers: dict[str, str] = field(default_factory=dict)
    request_body: bytes = b""
    key_fingerprint: str | None = None
    model: str | None = None
    stream: bool = False
    match_key: str = ""
    ended_at: datetime | None = None
    status: int | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    chunks: list[bytes] = field(default_factory=list)
    offsets_ms: list[float] = field(default_factory=list)
    ttfb_ms: float | None = None
    duration_ms: float | None = None
    outcome: Outcome = Outcome.COMPLETE
    error: str | None = None
    reply: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    assembled: bool = False
    # Sealed (by the relay at the end of an event stream, or when handed to the recorder): the chunks
    # and offsets, packed and compressed as the database stores them, while ``chunks`` and
    # ``offsets_ms`` stay empty: a recording waiting to be written takes a few KB instead of its
    # whole body in 200 separate objects.
    packed: PackedChunks | None = field(default=None, repr=False, compare=False)
    # The search text, when an assembly worker computed it ahead of the insert.
    search_text: str | None = field(default=None, repr=False, compare=False)

    @property
    def body(self) -> bytes:
        return b"".join(self.chunk_list()[0])

    def seal(self) -> None:
        """Pack the chunks and offsets into ``packed`` and let go of them."""
        if self.packed is None:
            self.packed = pack_chunks(self.chunks, self.offsets_ms)
            self.chunks = []
            self.offsets_ms = []

    @property
    def chunk_count(self) -> int:
        return self.packed.chunk_count if self.packed is not None else len(self.chunks)

    @property
    def body_bytes(self) -> int:
        return self.packed.body_bytes if self.packed is not None else sum(map(len, self.chunks))

    def chunk_list(self) -> tuple[list[bytes], list[float]]:
        """The chunks and their offsets, unpacked if the recording is sealed."""
        if self.packed is not None:
            return self.packed.unpack()
        return self.chunks, self.offsets_ms

    @property
    def content_type(self) -> str | None:
        return self.response_headers.get("content-type")


def iso(ts: datetime | None) -> str | None:
    """UTC ISO 8601 with microseconds and a ``Z``."""
    if ts is None:
        return None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(value: str) -> datetime:
    ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _body_json(body: bytes) -> dict[str, Any]:
    if not body:
        return {"body": None}
    try:
        return {"body": orjson.loads(body)}
    except orjson.JSONDecodeError:
        pass
    try:
        return {"body_text": body.decode("utf-8")}
    except UnicodeDecodeError:
        return {"body_b64": base64.b64encode(body).decode("ascii")}


def _body_from_json(request: dict[str, Any]) -> bytes:
    if "body_b64" in request:
        return base64.b64decode(request["body_b64"])
    if "body_text" in request:
        return str(request["body_text"]).encode("utf-8")
    if request.get("body") is None:
        return b""
    return orjson.dumps(request["body"])


def _chunk_json(seq: int, offset: float, data: bytes) -> dict[str, Any]:
    out: dict[str, Any] = {"seq": seq, "offset_ms": round(offset, 3)}
    try:
        out["data"] = data.decode("utf-8")
    except UnicodeDecodeError:
        out["data_b64"] = base64.b64encode(data).decode("ascii")
    return out


def to_json(rec: Record, *, chunks: bool = False, export: bool = False) -> dict[str, Any]:
    """The SPEC's Recording JSON object. Key order is fixed, so exports are stable."""
    out: dict[str, Any] = {}
    if export:
        out["format"] = EXPORT_FORMAT
    out.update(
        {
            "id": rec.id,
            "started_at": iso(rec.started_at),
            "ended_at": iso(rec.ended_at),
            "method": rec.method,
            "path": rec.path,
            "query": rec.query,
            "model": rec.model,
            "stream": rec.stream,
            "key_fingerprint": rec.key_fingerprint,
            "match_key": rec.match_key,
            "request": {"headers": dict(sorted(rec.request_headers.items())), **_body_json(rec.request_body)},
            "response": {"status": rec.status, "headers": dict(sorted(rec.response_headers.items()))},
            "outcome": str(rec.outcome),
            "error": rec.error,
            "ttfb_ms": None if rec.ttfb_ms is None else round(rec.ttfb_ms, 3),
            "duration_ms": None if rec.duration_ms is None else round(rec.duration_ms, 3),
            "reply": rec.reply,
            "notes": rec.notes,
        }
    )
    if chunks or export:
        data, offsets = rec.chunk_list()
        out["chunks"] = [_chunk_json(i, o, d) for i, (o, d) in enumerate(zip(offsets, data, strict=True))]
    return out


def from_json(obj: dict[str, Any]) -> Record:
    """A Record from its JSON form (export line, spool line). Raises ValueError on a bad object."""
    fmt = obj.get("format", EXPORT_FORMAT)
    if fmt != EXPORT_FORMAT:
        raise ValueError(f"unsupported recording format {fmt!r} (this version reads {EXPORT_FORMAT})")
    try:
        request = obj.get("request") or {}
        response = obj.get("response") or {}
        chunk_list = sorted(obj.get("chunks") or [], key=lambda c: c["seq"])
        chunk_bytes = [
            base64.b64decode(c["data_b64"]) if "data_b64" in c else str(c["data"]).encode("utf-8") for c in chunk_list
        ]
        return Record(
            id=str(obj["id"]),
            started_at=parse_iso(obj["started_at"]),
            ended_at=parse_iso(obj["ended_at"]) if obj.get("ended_at") else None,
            method=str(obj["method"]),
            path=str(obj["path"]),
            query=str(obj.get("query") or ""),
            model=obj.get("model"),
            stream=bool(obj.get("stream")),
            key_fingerprint=obj.get("key_fingerprint"),
            match_key=str(obj.get("match_key") or ""),
            request_headers={str(k).lower(): str(v) for k, v in (request.get("headers") or {}).items()},
            request_body=_body_from_json(request),
            status=response.get("status"),
            response_headers={str(k).lower(): str(v) for k, v in (response.get("headers") or {}).items()},
            chunks=chunk_bytes,
            offsets_ms=[float(c["offset_ms"]) for c in chunk_list],
            ttfb_ms=obj.get("ttfb_ms"),
            duration_ms=obj.get("duration_ms"),
            outcome=Outcome(obj.get("outcome") or "complete"),
            error=obj.get("error"),
            reply=obj.get("reply"),
            notes=list(obj.get("notes") or []),
            assembled=True,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a recording: {exc!r}") from exc
