"""An assembly worker: ``python -m proxy.assembly_worker``, started by ``AssemblyPool``.

Reads length-prefixed batches of packed recordings on stdin, writes each batch's replies and notes
back on stdout, and exits at the end of its input (its parent closed the pipe or died). A frame is
pickled, then compressed: a batch's answer (200 replies and search texts, ~0.7 MB) no longer fits
the pipe's buffer (uvloop's are socketpairs of ~200 KB), and every refill waited for a turn of the
relay's busy event loop; compressed, it crosses in one (tens of KB, ~1 ms to pack and unpack).
It imports the fold and nothing heavier (no asyncio, whose ssl alone weighs some 9 MB): it is a
second process on a small machine. The pool imports the frame format from here.
"""

from __future__ import annotations

import pickle
import struct
import sys
import zlib
from collections.abc import Sequence
from typing import Any

from proxy.assemble import assemble
from proxy.prepare import deflate, search_text, unpack_chunks

__all__ = ["LENGTH", "Assembled", "Packed", "assemble_packed", "frame", "read_frame", "unframe"]

# What one recording sends: path, content type, request body, and its body and chunk ends as stored
# (compressed: a 50 KB stream crosses the pipe as ~1 KB); not the chunk offsets, which the fold
# does not need.
Packed = tuple[str, str | None, bytes, bytes, str, bytes]
# What comes back: the reply, the notes, the search text.
Assembled = tuple[dict[str, Any] | None, list[str], str]

LENGTH = struct.Struct("<Q")


def frame(obj: Any) -> bytes:
    """``obj`` as one frame: its length, then it pickled and compressed."""
    payload = deflate(pickle.dumps(obj, protocol=5))
    return LENGTH.pack(len(payload)) + payload


def unframe(payload: bytes) -> Any:
    """What :func:`frame` was given. Raises ``zlib.error`` or ``pickle.UnpicklingError`` on garbage."""
    return pickle.loads(zlib.decompress(payload))


def read_frame(read: Any) -> bytes | None:
    """One length-prefixed frame from a blocking ``read(n)``; None at a clean end of input."""
    head = read(LENGTH.size)
    if not head:
        return None
    (size,) = LENGTH.unpack(head)
    return bytes(read(size))


def assemble_packed(items: Sequence[Packed]) -> list[Assembled]:
    """Each packed recording's reply, notes and search text. Never raises for one recording."""
    out: list[Assembled] = []
    for path, content_type, request_body, body, encoding, chunk_ends in items:
        try:
            chunks, _ = unpack_chunks(body, encoding, chunk_ends, b"")
            result = assemble(path, content_type, chunks)
            reply, notes = result.reply, result.notes
        except Exception as exc:  # noqa: BLE001 - a bug in assembly must not cost the batch
            reply, notes = None, [f"assembly failed: {exc!r}"]
        out.append((reply, notes, search_text(request_body, reply)))
    return out


def main() -> None:
    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # the pipe carries frames only
    read = sys.stdin.buffer.read
    while (payload := read_frame(read)) is not None:
        out.write(frame(assemble_packed(unframe(payload))))
        out.flush()


if __name__ == "__main__":
    main()
