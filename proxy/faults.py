"""Fault injection on replay (SPEC "Fault syntax"): parse ``cut=N,no-done,error=N,stall=N:MS`` and
turn a recording's chunks into what a failing server would have sent.

Pure: no IO here. ``N`` is a chunk's ``seq``, counted from 0.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import orjson

__all__ = ["FaultError", "Faults", "Piece", "Plan", "error_event", "is_done", "parse_faults", "plan"]

_INT = re.compile(r"^\d+$")
_NUM = re.compile(r"^\d+(?:\.\d+)?$")
_DONE = (b"data: [DONE]", b"data:[DONE]")


class FaultError(ValueError):
    """A fault spec that cannot be applied; the message says why, for a 400."""


@dataclass(frozen=True, slots=True)
class Faults:
    """What to break. ``stalls`` maps a chunk's seq to milliseconds of silence before it."""

    cut: int | None = None
    no_done: bool = False
    error: int | None = None
    stalls: Mapping[int, float] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return self.cut is not None or self.no_done or self.error is not None or bool(self.stalls)

    def check(self, chunks: Sequence[bytes], event_stream: bool) -> None:
        """Refuse a fault that would silently do nothing on this recording."""
        chunk_count = len(chunks)
        last = chunk_count - 1
        for name, seq in [("cut", self.cut), ("error", self.error), *(("stall", s) for s in self.stalls)]:
            if seq is not None and seq > last:
                raise FaultError(
                    f"fault {name}={seq}: the recording has {chunk_count} chunk(s), seq 0 to {last}"
                    if chunk_count
                    else f"fault {name}={seq}: the recording has no chunks"
                )
        if self.error is not None and not event_stream:
            raise FaultError("fault error=N needs a streamed (text/event-stream) recording")
        if self.no_done and not any(is_done(c) for c in chunks):
            raise FaultError("fault no-done: the recording has no data: [DONE] to leave out")


def _seq(name: str, value: str) -> int:
    if not _INT.match(value):
        raise FaultError(f"fault {name}={value!r}: N must be a chunk number (0, 1, 2, …)")
    return int(value)


def parse_faults(spec: str | None) -> Faults:
    """``cut=N``, ``no-done``, ``error=N``, ``stall=N:MS``, comma separated; raises FaultError."""
    if spec is None or not spec.strip():
        return Faults()
    cut: int | None = None
    error: int | None = None
    no_done = False
    stalls: dict[int, float] = {}
    for raw in spec.split(","):
        item = raw.strip()
        name, sep, value = item.partition("=")
        name = name.strip().lower()
        value = value.strip()
        if name == "no-done" and not sep:
            no_done = True
        elif name in ("cut", "error") and sep:
            if (cut if name == "cut" else error) is not None:
                raise FaultError(f"fault {name} given twice in {spec!r}")
            if name == "cut":
                cut = _seq(name, value)
            else:
                error = _seq(name, value)
        elif name == "stall" and sep:
            seq_text, colon, ms_text = value.partition(":")
            if not colon or not _NUM.match(ms_text.strip()):
                raise FaultError(f"fault stall={value!r}: use stall=N:MS (MS milliseconds of silence before chunk N)")
            stalls[_seq(name, seq_text.strip())] = float(ms_text)
        else:
            raise FaultError(
                f"unknown fault {item!r} in {spec!r} (use cut=N, no-done, error=N, stall=N:MS, comma separated)"
            )
    return Faults(cut=cut, no_done=no_done, error=error, stalls=stalls)


def is_done(chunk: bytes) -> bool:
    """The SSE terminator ``data: [DONE]``."""
    return chunk.strip() in _DONE


def error_event(seq: int) -> bytes:
    """An SSE event carrying an error in OpenAI's shape, as upstream sends one mid-stream."""
    err = {
        "message": f"streamproxy fault injection: error after chunk {seq}",
        "type": "server_error",
        "param": None,
        "code": "injected_fault",
    }
    return b"data: " + orjson.dumps({"error": err}) + b"\n\n"


@dataclass(frozen=True, slots=True)
class Piece:
    """One write: its bytes, when it was recorded (ms since the request started; None for an
    injected piece, which goes out at once) and the silence to keep before it."""

    data: bytes
    at_ms: float | None
    stall_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class Plan:
    """What a replay writes, and whether the body then ends cleanly or breaks off."""

    pieces: list[Piece]
    clean_end: bool


def plan(chunks: Sequence[bytes], offsets_ms: Sequence[float], faults: Faults, *, clean_end: bool = True) -> Plan:
    """The recorded chunks with ``faults`` applied. ``clean_end`` is how the recording itself ended."""
    pieces: list[Piece] = []
    for seq, (data, at) in enumerate(zip(chunks, offsets_ms, strict=True)):
        if faults.no_done and is_done(data):
            continue
        pieces.append(Piece(data, at, faults.stalls.get(seq, 0.0)))
        if seq == faults.error:
            pieces.append(Piece(error_event(seq), None))
            return Plan(pieces, clean_end=faults.cut != seq)
        if seq == faults.cut:
            return Plan(pieces, clean_end=False)
    return Plan(pieces, clean_end=clean_end)
