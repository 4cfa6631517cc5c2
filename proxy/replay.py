"""Replay: answer a request from its recordings (modes ``replay`` and ``auto``), or re-emit one
recording by id, byte for byte and paced by the recorded offsets.

The n-th identical request (same match key) in this process gets the n-th recording with that
key, oldest first; after the last one, the last repeats. Replayed answers are not recorded again.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Sequence

from aiohttp import web

from proxy.credentials import REDACTED
from proxy.errors import error_response
from proxy.faults import FaultError, Faults, Piece, parse_faults, plan
from proxy.lazy_store import LazyStore
from proxy.matching import differences
from proxy.record import Outcome, Record
from proxy.relay import HOP_BY_HOP, Relay, cut
from proxy.settings import Settings

__all__ = ["FAULT_HEADER", "Replayer", "ended_cleanly", "paced", "serve"]

FAULT_HEADER = "X-Streamproxy-Fault"
_MISSES_KEPT = 100


def ended_cleanly(rec: Record) -> bool:
    """Whether the recorded body had a clean end. A body the proxy made itself before upstream
    answered (no first byte) did; a stream that broke off, for whatever reason, did not."""
    return rec.outcome is Outcome.COMPLETE or (rec.ttfb_ms is None and bool(rec.chunks))


def _event_stream(rec: Record) -> bool:
    return (rec.content_type or "").startswith("text/event-stream")


async def paced(pieces: Sequence[Piece], speed: float, *, join: bool = False) -> AsyncIterator[bytes]:
    """Yield each piece at its recorded offset divided by ``speed`` (0: no pauses), after its
    stall. With ``join`` at speed 0, the pieces between stalls come as one: same bytes, a
    fraction of the writes."""
    if speed == 0 and join:
        run: list[bytes] = []
        for piece in pieces:
            if piece.stall_ms:
                if run:
                    yield b"".join(run)
                    run = []
                await asyncio.sleep(piece.stall_ms / 1000.0)
            run.append(piece.data)
        if run:
            yield b"".join(run)
        return
    loop = asyncio.get_running_loop()
    base = loop.time()
    for piece in pieces:
        if speed > 0 and piece.at_ms is not None:
            delay = base + piece.at_ms / 1000.0 / speed - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        if piece.stall_ms:
            await asyncio.sleep(piece.stall_ms / 1000.0)
            base += piece.stall_ms / 1000.0
        yield piece.data


async def serve(request: web.Request, rec: Record, speed: float, faults: Faults) -> web.StreamResponse:
    """Re-emit ``rec``: its status, headers and body bytes, chunk by chunk, with ``faults`` applied."""
    if rec.status is None:
        return error_response(
            502, f"recording {rec.id} has no response to replay ({rec.outcome}: {rec.error})",
            "invalid_request_error", "recording_incomplete", recording_id=rec.id,
        )
    p = plan(rec.chunks, rec.offsets_ms, faults, clean_end=ended_cleanly(rec))
    resp = web.StreamResponse(status=rec.status)
    for name, value in rec.response_headers.items():
        if name not in HOP_BY_HOP and name != "content-length" and value != REDACTED:
            resp.headers[name] = value
    resp.headers["X-Recording-Id"] = rec.id
    if p.clean_end and "content-length" in rec.response_headers:
        resp.content_length = sum(len(piece.data) for piece in p.pieces)
    await resp.prepare(request)
    try:
        async for data in paced(p.pieces, speed, join=True):
            await resp.write(data)
        if p.clean_end:
            await resp.write_eof()
            return resp
    except ConnectionError:  # the client hung up; nothing to record
        return resp
    # Break off without the chunked body's end, as the recorded upstream (or the fault) did.
    cut(request)
    return resp


class Replayer:
    """Finds the recording for a request and serves it; one per app."""

    def __init__(self, settings: Settings, store: LazyStore, relay: Relay) -> None:
        self.settings = settings
        self.store = store
        self.relay = relay
        self._served: dict[str, int] = {}
        # The latest misses, for the pytest plugin to fail a test with; bounded for long runs.
        self.misses: deque[str] = deque(maxlen=_MISSES_KEPT)
        self.miss_count = 0

    async def find(self, key: str) -> Record | None:
        """The recording for the next request with this match key, or None."""
        if not key:
            return None
        # Counted at arrival, before any await, so concurrent identical requests keep their order.
        n = self._served.get(key, 0)
        self._served[key] = n + 1
        store = await self.store.get()
        ids = await store.ids_for_match_key(key)
        if not ids:
            self._served.pop(key, None)  # a miss counts nothing: keys of misses are not kept
            return None
        return await store.get(ids[min(n, len(ids) - 1)], chunks=True)

    async def explain_miss(self, rec: Record) -> str:
        """Why nothing matched: the key, the nearest recording and the fields it differs in."""
        head = f"streamproxy has no recording for {rec.method} {rec.path} with match key {rec.match_key}"
        ignore = self.settings.match_ignore
        store = await self.store.get()
        candidates = [c for c in await store.candidates(rec.method, rec.path) if c.match_key]
        if not candidates:
            total = await store.count()
            return f"{head}; there is no recording of {rec.method} {rec.path} at all ({total} recordings in the database)"
        scored = [(differences(c.request_body, rec.request_body, ignore), c) for c in candidates]
        diffs, nearest = min(scored, key=lambda pair: len(pair[0]))
        if not diffs:
            why = "its body is the same, so it was recorded with a different --match-ignore"
        else:
            why = "it differs in " + "; ".join(diffs)
        return f"{head}. Nearest recording: {nearest.id}; {why}"

    async def handle(self, request: web.Request, rec: Record, loop_start: float) -> web.StreamResponse:
        """A ``/v1`` request in replay or auto mode. ``rec`` is the request's own recording,
        used only when the proxy answers itself (a miss, a bad fault) or forwards (auto)."""
        record = self.settings.mode.records
        try:
            faults = parse_faults(request.headers.get(FAULT_HEADER))
        except FaultError as exc:
            return self.relay.reject(rec, loop_start, record, 400, str(exc), "invalid_request_error", "invalid_fault")
        hit = await self.find(rec.match_key)
        if hit is None:
            if self.settings.mode.forwards:
                return await self.relay.forward(request, rec, loop_start, record=record)
            message = await self.explain_miss(rec)
            self.misses.append(message)
            self.miss_count += 1
            return self.relay.reject(rec, loop_start, record, 404, message, "invalid_request_error", "recording_not_found")
        try:
            faults.check(hit.chunks, _event_stream(hit))
        except FaultError as exc:
            return self.relay.reject(rec, loop_start, record, 400, str(exc), "invalid_request_error", "invalid_fault")
        return await serve(request, hit, self.settings.replay_speed, faults)

    async def replay_by_id(self, request: web.Request) -> web.StreamResponse:
        """``GET /recordings/{id}/replay?speed=S&fault=…``."""
        rec_id = request.match_info["id"]
        try:
            speed = _speed(request.query.get("speed"), self.settings.replay_speed)
            faults = parse_faults(request.query.get("fault"))
        except ValueError as exc:  # FaultError too
            return error_response(400, str(exc), "invalid_request_error", "invalid_parameter")
        store = await self.store.get()
        rec = await store.get(rec_id, chunks=True)
        if rec is None:
            return error_response(404, f"no recording {rec_id}", "invalid_request_error", "not_found")
        try:
            faults.check(rec.chunks, _event_stream(rec))
        except FaultError as exc:
            return error_response(400, str(exc), "invalid_request_error", "invalid_fault")
        return await serve(request, rec, speed, faults)


def _speed(value: str | None, default: float) -> float:
    if value is None or not value.strip():
        return default
    try:
        speed = float(value)
    except ValueError:
        speed = -1.0
    if not speed >= 0:  # also refuses NaN
        raise ValueError(f"speed={value!r}: use a number, 0 (no pauses) or more")
    return speed
