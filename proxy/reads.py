"""An upstream answer as the relay reads it, held until the stream ends.

The relay keeps every read of an answer (it is recorded at the end), but not every read as it
came: once the latest reads pass ``BLOCK`` bytes they are joined and compressed into a block,
and for an event stream only where each read ended and when it came stays beside them, eight
bytes each. A 50 KB stream then holds at most 16 KB as it came, plus a few KB; kept as reads, 500
slow streams held their bodies whole, 13 MB of serve's memory. At the end the blocks are inflated
and the body packed as before (``proxy.prepare.pack_reads``), ~0.2 µs a chunk more.

The relay appends to its own two lists (its hot loop stays two appends and an addition) and
hands them over with :meth:`Reads.fold` when they pass ``BLOCK``.
"""

from __future__ import annotations

from array import array
from itertools import accumulate, islice

from proxy.prepare import PackedChunks, inflate, pack_reads, shrink

__all__ = ["BLOCK", "Reads"]

# Bytes of reads a block takes. ISA-L compresses 16 KB in ~8 µs, 8 KB in ~6.5: smaller blocks
# hold less, at more CPU a chunk.
BLOCK = 16 * 1024


class Reads:
    """What came before the latest reads of one answer: blocks, compressed where that shrinks
    them, and (for an event stream) where each read ended and when it came."""

    __slots__ = ("_blocks", "_compress", "_ends", "_shrunk", "_size", "_times")

    def __init__(self, *, compress: bool = True) -> None:
        self._blocks: list[bytes] = []
        self._shrunk: list[bool] = []
        self._ends = array("Q")
        self._times = array("d")
        self._size = 0
        self._compress = compress  # False for an answer only counted, never stored

    def __bool__(self) -> bool:
        return bool(self._blocks)

    def fold(self, reads: list[bytes], times: list[float]) -> None:
        """Take ``reads`` (and ``times``, when each came, for an event stream: else empty) into a
        block; both lists are emptied for the next."""
        block = b"".join(reads)
        if times:
            self._ends.extend(islice(accumulate(map(len, reads), initial=self._size), 1, None))
            self._times.extend(times)
        self._size += len(block)
        small = shrink(block) if self._compress else None
        self._blocks.append(block if small is None else small)
        self._shrunk.append(small is not None)
        reads.clear()
        times.clear()

    def body(self, reads: list[bytes]) -> bytes:
        """The whole answer: the blocks, then ``reads`` (those read since the last fold)."""
        if not self._blocks:
            return b"".join(reads)
        parts = [inflate(b) if shrunk else b for b, shrunk in zip(self._blocks, self._shrunk, strict=True)]
        parts.extend(reads)
        return b"".join(parts)

    def pack(self, reads: list[bytes], times: list[float], *, compress: bool = True) -> PackedChunks:
        """The whole event stream packed as ``recording_bodies`` stores it, each event timed by the
        read that completed it; ``reads`` and ``times`` are those since the last fold."""
        body = self.body(reads)
        self._ends.extend(islice(accumulate(map(len, reads), initial=self._size), 1, None))
        self._times.extend(times)
        return pack_reads(body, self._ends, self._times, compress=compress)
