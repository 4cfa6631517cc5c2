"""IO-free Server-Sent Events handling.

Two halves, kept apart on purpose:

* :class:`EventSplitter` only finds event boundaries in the byte stream (a
  blank line, with ``\\n``, ``\\r\\n`` or ``\\r`` line ends) and hands back
  each complete event's raw bytes, the blank line included, so the
  concatenation of everything it returns is exactly the bytes it was fed.
  :func:`split_reads` gives what it would have given read by read, for a whole
  stream at once, when the stream has ended: the relay only keeps each read
  and its time while the stream passes.
* :func:`parse_event` turns one raw event into fields. It runs later, off the
  write path, for assembly.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from typing import NamedTuple

__all__ = ["EventSplitter", "SSEEvent", "SplitStream", "parse_event", "split_reads"]

# A blank line ends an event. Any two consecutive line ends form one, in any
# mix of \n, \r\n and \r.
_EVENT_END = re.compile(rb"(?:\r\n|\r(?!\n)|\n)(?:\r\n|\r(?!\n)|\n)")


class EventSplitter:
    """Splits a byte stream into complete SSE events, raw.

    ``feed`` returns the events that the new bytes completed; ``flush`` returns
    whatever is left at end of stream (an event cut short, or trailing bytes).
    A ``\\r`` at the very end of the buffer is ambiguous (it may be the first
    half of ``\\r\\n``), so a boundary ending in it waits for the next read.
    """

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf + data if self._buf else data
        if b"\r" in buf:
            return self._feed_any(buf)
        # Fast path, the usual case: with no \r about, every blank line is b"\n\n", and
        # one bytes.split (in C) is several times cheaper per event than the regex.
        *parts, self._buf = buf.split(b"\n\n")
        return [p + b"\n\n" for p in parts]

    def _feed_any(self, buf: bytes) -> list[bytes]:
        events: list[bytes] = []
        start = 0
        n = len(buf)
        while True:
            m = _EVENT_END.search(buf, start)
            if m is None:
                break
            end = m.end()
            if buf[end - 1 : end] == b"\r" and end == n:
                # Could still become \r\n: decide on the next read.
                break
            events.append(buf[start:end])
            start = end
        self._buf = buf[start:]
        return events

    def flush(self) -> list[bytes]:
        rest, self._buf = self._buf, b""
        return [rest] if rest else []

    @property
    def pending(self) -> int:
        """Bytes held back waiting for the end of their event."""
        return len(self._buf)


class SplitStream(NamedTuple):
    """A whole event stream: its bytes, where each event ends in them, and when each was complete."""

    body: bytes
    ends: list[int]
    offsets: list[float]


def split_reads(reads: Sequence[bytes], times: Sequence[float]) -> SplitStream:
    """The events of a stream that arrived in ``reads`` (read ``i`` at ``times[i]``), each timed by
    the read that completed it, and the unfinished rest, if any, at the last read's time: exactly
    what feeding an :class:`EventSplitter` read by read, then flushing it, gives.

    Once, at the end, it costs less than splitting at every read: the relay's loop stays two
    appends, a stream without ``\\r`` is split by one ``bytes.split``, and no event becomes an
    object of its own until something reads it (the recording stores the body and the ends)."""
    body = b"".join(reads)
    if b"\r" in body:
        return _split_read_by_read(body, reads, times)
    # Split at every line end, which CPython does with memchr, twice as fast as at every blank
    # line: when every other piece is empty, each event is one line and a blank one (as OpenAI's
    # are), and the pieces between are the events without their blank lines, as the slower split
    # at blank lines would give them.
    parts = body.split(b"\n")
    if len(parts) & 1 and not any(parts[1::2]):
        parts = parts[::2]
    else:
        parts = body.split(b"\n\n")
    ends = list(accumulate(map((2).__add__, map(len, parts))))
    ends.pop()  # the rest, after the last blank line: no blank line ends it
    read_ends = list(accumulate(map(len, reads)))
    if ends == read_ends:  # one event a read
        return SplitStream(body, ends, list(times))
    offsets: list[float] = []
    done = 0
    for read_end, at in zip(read_ends, times, strict=True):
        upto = bisect_right(ends, read_end, done)
        offsets.extend([at] * (upto - done))
        done = upto
    if parts[-1]:  # flushed at the end of the stream
        ends.append(len(body))
        offsets.append(times[-1])
    return SplitStream(body, ends, offsets)


def _split_read_by_read(body: bytes, reads: Sequence[bytes], times: Sequence[float]) -> SplitStream:
    splitter = EventSplitter()
    events: list[bytes] = []
    offsets: list[float] = []
    for data, at in zip(reads, times, strict=True):
        done = splitter.feed(data)
        events.extend(done)
        offsets.extend([at] * len(done))
    rest = splitter.flush()
    if rest:
        events.extend(rest)
        offsets.append(times[-1])
    return SplitStream(body, list(accumulate(map(len, events))), offsets)


@dataclass(slots=True)
class SSEEvent:
    """The fields of one event, per the WHATWG event-stream rules."""

    event: str | None = None
    data: str | None = None
    id: str | None = None
    retry: str | None = None
    comments: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)


_LINE_SPLIT = re.compile(r"\r\n|\r|\n")


def parse_event(raw: bytes) -> SSEEvent:
    """Parse one raw event. Never raises: invalid UTF-8 is replaced."""
    end = len(raw) - 2
    if raw.startswith(b"data: ") and raw.find(b"\n", 6) == end and raw[end:] == b"\n\n" and b"\r" not in raw:
        # The usual event (one ``data:`` line, then the blank line): the same fields for a
        # fraction of the general path's cost, which assembly pays for every chunk.
        return SSEEvent(data=raw[6:end].decode("utf-8", errors="replace"))
    return _parse_lines(raw)


def _parse_lines(raw: bytes) -> SSEEvent:
    text = raw.decode("utf-8", errors="replace")
    ev = SSEEvent()
    data_lines: list[str] = []
    for line in _LINE_SPLIT.split(text):
        if not line:
            continue
        if line.startswith(":"):
            comment = line[1:]
            ev.comments.append(comment[1:] if comment.startswith(" ") else comment)
            continue
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            data_lines.append(value)
        elif name == "event":
            ev.event = value
        elif name == "id":
            ev.id = value
        elif name == "retry":
            ev.retry = value
        else:
            ev.unknown.append(line)
    if data_lines:
        ev.data = "\n".join(data_lines)
    return ev
