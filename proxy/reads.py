"""An upstream answer as the relay reads it, held until the stream ends.

The relay keeps every read of an answer (it is recorded at the end), but not every read as it
came: once the latest reads pass ``BLOCK`` bytes they are joined into a block, and for an event
stream only where each read ended and when it came stays beside them, eight bytes each.

Blocks are compressed once they have been held a while (``RAW_SECONDS``) or pass ``RAW_BYTES``
together: 500 slow streams kept as reads held their bodies whole, 13 MB of serve's memory. An
answer that comes in a burst (the bench's end within 0.1 s of their first byte, even at 500
streams) ends before that, and compressing its blocks would only have meant inflating them
again to pack the body (``proxy.prepare.pack_reads``): ~50 µs a recording of serve's thread
for nothing. The relay arms a timer (:meth:`Reads.fold` says when) so that a stream that goes
quiet with raw blocks held still has them compressed.

The relay appends to its own two lists (its hot loop stays two appends and an addition) and
hands them over with :meth:`Reads.fold` when they pass ``BLOCK``.
"""

from __future__ import annotations

from array import array
from itertools import accumulate, islice

from proxy.prepare import PackedChunks, inflate, pack_reads, shrink

__all__ = ["BLOCK", "RAW_BYTES", "RAW_SECONDS", "Reads"]

# Bytes of reads a block takes. ISA-L compresses 16 KB in ~8 µs, 8 KB in ~6.5: smaller blocks
# hold less, at more CPU a chunk.
BLOCK = 16 * 1024
# How long blocks may stay uncompressed, and how many bytes of them at most.
RAW_SECONDS = 0.1
RAW_BYTES = 4 * BLOCK


class Reads:
    """What came before the latest reads of one answer: blocks, compressed once held a while or
    past a size, and (for an event stream) where each read ended and when it came."""

    __slots__ = ("_blocks", "_compress", "_ends", "_raw", "_raw_since", "_settled", "_shrunk", "_size", "_times")

    def __init__(self, *, compress: bool = True) -> None:
        self._blocks: list[bytes] = []
        self._shrunk: list[bool] = []  # compressed (to be inflated for the body)
        self._settled = 0  # the blocks before this one were offered to the compressor
        self._ends = array("Q")
        self._times = array("d")
        self._size = 0
        self._raw = 0  # bytes of blocks not yet compressed
        self._raw_since = 0.0  # when the oldest of them was folded
        self._compress = compress  # False for an answer only counted, never stored

    def __bool__(self) -> bool:
        return bool(self._blocks)

    def fold(self, reads: list[bytes], times: list[float], now: float = 0.0) -> float | None:
        """Take ``reads`` (and ``times``, when each came, for an event stream: else empty) into a
        block; both lists are emptied for the next. ``now`` is the relay's clock: when this
        fold starts holding uncompressed blocks, it returns by when :meth:`squeeze` should run
        (the relay arms a timer for it); else None."""
        block = b"".join(reads)
        if times:
            self._ends.extend(islice(accumulate(map(len, reads), initial=self._size), 1, None))
            self._times.extend(times)
        self._size += len(block)
        self._blocks.append(block)
        self._shrunk.append(False)
        reads.clear()
        times.clear()
        if not self._compress:
            return None
        first = not self._raw
        if first:
            self._raw_since = now
        self._raw += len(block)
        if self._raw > RAW_BYTES or now - self._raw_since >= RAW_SECONDS:
            self.squeeze()
            return None
        return now + RAW_SECONDS if first else None

    def squeeze(self) -> None:
        """Compress every block not yet compressed (those that shrink)."""
        for i in range(self._settled, len(self._blocks)):
            small = shrink(self._blocks[i])
            if small is not None:  # else it stays as it came
                self._blocks[i] = small
                self._shrunk[i] = True
        self._settled = len(self._blocks)
        self._raw = 0

    def body(self, reads: list[bytes]) -> bytes:
        """The whole answer: the blocks, then ``reads`` (those read since the last fold)."""
        if not self._blocks:
            return b"".join(reads)
        parts = [inflate(b) if shrunk else b for b, shrunk in zip(self._blocks, self._shrunk, strict=True)]
        parts.extend(reads)
        return b"".join(parts)

    def pack(self, reads: list[bytes], times: list[float]) -> PackedChunks:
        """The whole event stream packed as ``recording_bodies`` stores it (compressed unless
        only counted), each event timed by the read that completed it; ``reads`` and ``times``
        are those since the last fold."""
        body = self.body(reads)
        self._ends.extend(islice(accumulate(map(len, reads), initial=self._size), 1, None))
        self._times.extend(times)
        return pack_reads(body, self._ends, self._times, compress=self._compress)
