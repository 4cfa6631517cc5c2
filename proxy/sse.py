"""IO-free Server-Sent Events handling.

Two halves, kept apart on purpose:

* :class:`EventSplitter` sits on the relay's hot path. It only finds event
  boundaries in the byte stream (a blank line, with ``\\n``, ``\\r\\n`` or
  ``\\r`` line ends) and hands back each complete event's raw bytes, the blank
  line included, so the concatenation of everything it returns is exactly the
  bytes it was fed.
* :func:`parse_event` turns one raw event into fields. It runs later, off the
  write path, for assembly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["EventSplitter", "SSEEvent", "parse_event"]

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
