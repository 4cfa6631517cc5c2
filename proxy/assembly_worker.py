"""An assembly worker: ``python -m proxy.assembly_worker``, started by ``AssemblyPool``.

Reads length-prefixed pickled batches of packed recordings on stdin, writes each batch's replies
and notes back on stdout, and exits at the end of its input (its parent closed the pipe or died).
It imports the fold and nothing heavier (no asyncio, whose ssl alone weighs some 9 MB): it is a
second process on a small machine. The pool imports the frame format from here.
"""

from __future__ import annotations

import pickle
import struct
import sys
from collections.abc import Sequence
from typing import Any

from proxy.assemble import assemble
from proxy.prepare import PackedChunks, search_text, unpack_chunks

__all__ = ["LENGTH", "Assembled", "Packed", "assemble_packed", "read_frame", "write_frame"]

# What one recording sends: path, content type, request body, and its chunks packed as stored
# (compressed: a 50 KB stream crosses the pipe as ~1 KB, and the worker need not compress it again).
Packed = tuple[str, str | None, bytes, PackedChunks]
# What comes back: the reply, the notes, the search text.
Assembled = tuple[dict[str, Any] | None, list[str], str]

LENGTH = struct.Struct("<Q")


def write_frame(payload: bytes) -> bytes:
    return LENGTH.pack(len(payload)) + payload


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
    for path, content_type, request_body, packed in items:
        try:
            chunks, _ = unpack_chunks(*packed)
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
    while (frame := read_frame(read)) is not None:
        out.write(write_frame(pickle.dumps(assemble_packed(pickle.loads(frame)), protocol=5)))
        out.flush()


if __name__ == "__main__":
    main()
