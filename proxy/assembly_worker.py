"""An assembly worker: ``python -m proxy.assembly_worker``, started by ``AssemblyPool``.

Reads length-prefixed batches of packed recordings on stdin, writes each batch's replies and notes
back on stdout, and exits at the end of its input (its parent closed the pipe or died). A frame is
pickled, then compressed: a batch's answer (200 replies and search texts, ~0.7 MB) no longer fits
the pipe's buffer (uvloop's are socketpairs of ~200 KB), and every refill waited for a turn of the
relay's busy event loop; compressed, it crosses in one (tens of KB, ~1 ms to pack and unpack).
It imports the fold and nothing heavier (no asyncio, whose ssl alone weighs some 9 MB): it is a
second process on a small machine. What crosses the pipes is in ``proxy.worker_frames``.

With a SQLite file, a batch comes with its rows (``WriteTo``), and the worker writes them itself
once it has assembled them, with its own connection: then only whether that worked comes back.
Serve's thread neither unpacks 200 replies nor binds and inserts them, and no insert waits on
the GIL of a busy event loop (the slowest stage under load when serve wrote every batch).

When no other batch waits for it, the worker paces itself: after every ``BURST`` of work it
pauses as long as it worked. On a two-core machine the relay, its client and upstream share the
cores with it, and a batch assembled and written in one go (~5 ms at one stream, 45 recordings)
held up whichever request was under way: at one stream that set the p99 of time to first byte
and of chunk latency. Paced, a batch takes twice as long and holds nothing up for more than
``BURST``; with work waiting it does not pause, so under load it writes as fast as before.

What it writes waits to join the search index (migration 0006): once no batch has come for
``QUIET_SECONDS`` the worker adds pending recordings to the index, a slice at a time, until the
next batch comes; a backlog past the bound (``sqlite_batch.BACKLOG_ROWS``) is indexed with the
batches as they come. A burst of streams thus pays no index upkeep while it is relayed.
"""

from __future__ import annotations

import os
import select
import sqlite3
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from proxy.assemble import assemble, usage_tokens
from proxy.prepare import json_text, search_text, unpack_chunks
from proxy.sqlite_batch import BACKLOG_BYTES, BACKLOG_ROWS, INDEX_SLICE, connect, index_backlog, index_some, index_statements, write_batch
from proxy.worker_frames import LENGTH, Answer, Assembled, Job, Packed, WriteTo, frame, unframe

__all__ = ["BURST", "QUIET_SECONDS", "Pacer", "assemble_packed", "index_while_quiet", "read_frame", "run_job"]

# No batch for this long, and the relay is between bursts: time to catch up on the search index.
QUIET_SECONDS = 0.5
# Work between pauses while nothing else waits (the module's docstring). Alternating pairs at one
# stream (bench, 8 pairs): pacing at 0.5 ms cut the p99 of time to first byte by 23 % and of chunk
# latency by 33 %, in every pair; 0.2 ms a little more (6 pairs: a further 4 % and 8 %).
BURST = 0.0002


class Pacer:
    """Called between pieces of a batch's work: once ``BURST`` has passed since the last pause,
    it pauses as long, unless ``waiting()`` (another batch has come: the worker is behind)."""

    def __init__(
        self,
        waiting: Callable[[], bool],
        clock: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._waiting = waiting
        self._clock = clock
        self._sleep = sleep
        self._since = clock()

    def start(self) -> None:
        """A new batch: what came before it (waiting for input) was no work."""
        self._since = self._clock()

    def __call__(self) -> None:
        worked = self._clock() - self._since
        if worked < BURST:
            return
        if not self._waiting():
            self._sleep(worked)
        self._since = self._clock()


def _unpaced() -> None:
    pass


def read_frame(read: Any) -> bytes | None:
    """One length-prefixed frame from a blocking ``read(n)``; None at a clean end of input."""
    head = read(LENGTH.size)
    if not head:
        return None
    (size,) = LENGTH.unpack(head)
    return bytes(read(size))


def assemble_packed(items: Sequence[Packed], pace: Callable[[], None] = _unpaced) -> list[Assembled]:
    """Each packed recording's reply, notes and search text, ``pace()`` before each. Never raises
    for one recording."""
    out: list[Assembled] = []
    for path, content_type, request_body, body, encoding, chunk_ends in items:
        pace()
        try:
            chunks, _ = unpack_chunks(body, encoding, chunk_ends, b"")
            result = assemble(path, content_type, chunks)
            reply, notes = result.reply, result.notes
        except Exception as exc:  # noqa: BLE001 - a bug in assembly must not cost the batch
            reply, notes = None, [f"assembly failed: {exc!r}"]
        out.append((reply, notes, search_text(request_body, reply)))
    return out


def _filled(write: WriteTo, results: Sequence[Assembled]) -> list[tuple[Any, ...]]:
    """The ``recordings`` rows with what assembly made, bound as the store binds them."""
    reply_at, notes_at, prompt_at, completion_at, text_at = write.assembled_at
    out: list[tuple[Any, ...]] = []
    for row, (reply, notes, text) in zip(write.rows, results, strict=True):
        values = list(row)
        values[prompt_at], values[completion_at] = usage_tokens(reply)
        values[reply_at] = json_text(reply)
        values[notes_at] = json_text([*values[notes_at], *notes] or None)
        values[text_at] = text
        out.append(tuple(values))
    return out


def run_job(job: Job, connections: dict[str, sqlite3.Connection], pace: Callable[[], None] = _unpaced) -> Answer:
    """Assemble a batch and, when asked, write it (``connections`` keeps one per file between
    batches); ``pace()`` between pieces of the work."""
    items, write = job
    results = assemble_packed(items, pace)
    if write is None:
        return results, None
    pace()
    try:
        db = connections.get(write.database)
        if db is None:
            db = connections[write.database] = connect(write.database)
        statements = write.recordings.statements(_filled(write, results)) + write.bodies.statements(write.body_rows)
        pending, size = index_backlog(db)
        if pending + len(items) > BACKLOG_ROWS or size > BACKLOG_BYTES:
            # Twice what comes in, until the backlog is back under its bound.
            statements += index_statements(2 * len(items))
        write_batch(db, statements)
    except sqlite3.Error as exc:
        # A fresh connection next time: this one may be what is wrong (a file replaced under it).
        bad = connections.pop(write.database, None)
        if bad is not None:
            bad.close()
        outage = isinstance(exc, (sqlite3.OperationalError, sqlite3.InterfaceError))
        return results, ((str(exc).splitlines() or [repr(exc)])[0], outage)
    return None, None


def index_while_quiet(connections: dict[str, sqlite3.Connection], busy: Callable[[], bool]) -> None:
    """Add pending recordings to the search index a slice at a time, until none is left or
    ``busy()`` (a batch has come). A failure drops the connection and waits for the next batch."""
    for path, db in list(connections.items()):
        try:
            while not busy() and index_some(db, INDEX_SLICE) == INDEX_SLICE:
                pass
        except sqlite3.Error as exc:
            print(f"streamproxy assembly worker: search index upkeep failed: {exc}", file=sys.stderr)
            del connections[path]
            db.close()


def _input(fd: int, timeout: float) -> bool:
    return bool(select.select([fd], [], [], timeout)[0])


def _read_exactly(fd: int, n: int) -> bytes:
    """``n`` bytes from ``fd``, fewer only at the end of input (unbuffered: ``select`` must see
    every byte that has not been read)."""
    parts: list[bytes] = []
    while n > 0 and (part := os.read(fd, n)):
        parts.append(part)
        n -= len(part)
    return b"".join(parts)


def main() -> None:
    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # the pipe carries frames only
    fd = sys.stdin.fileno()
    connections: dict[str, sqlite3.Connection] = {}

    def batch_waiting() -> bool:
        return _input(fd, 0)

    pace = Pacer(batch_waiting)
    while True:
        if not _input(fd, QUIET_SECONDS):
            index_while_quiet(connections, batch_waiting)
        payload = read_frame(lambda n: _read_exactly(fd, n))
        if payload is None:
            break
        pace.start()
        out.write(frame(run_job(unframe(payload), connections, pace)))
        out.flush()


if __name__ == "__main__":
    main()
