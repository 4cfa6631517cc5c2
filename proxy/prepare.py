"""What a recording's rows need that costs CPU: the response body packed (and compressed) as
``recording_bodies`` stores it, and the text that search looks through.

Pure functions over bytes, importing nothing heavier than the fold: a recording is packed when it
is handed to the recorder (``Record.seal``), and an assembly worker (``proxy.assembly_worker``)
computes the search text beside the reply; the store computes whatever arrives without them.
"""

from __future__ import annotations

import sys
import zlib
from array import array
from collections.abc import Callable, Iterable, Sequence
from itertools import accumulate, pairwise
from types import ModuleType
from typing import Any, NamedTuple, cast

import orjson

from proxy.assemble import reply_text
from proxy.sse import split_reads

__all__ = [
    "PackedChunks", "deflate", "inflate", "json_text", "pack_body", "pack_chunks", "pack_reads",
    "search_text", "shrink", "unpack_chunks",
]

_BIG = sys.byteorder == "big"

# How ``recording_bodies.body`` is stored (its ``encoding`` column): the body's codec, then
# ``/e`` when the chunk ends are zlib-compressed too, ``/z`` when the ends and the offsets are
# (migration 0007).
_RAW = ""
_ZLIB = "zlib"
_ENDS_ZLIB = "e"
_ARRAYS_ZLIB = "z"
# Arrays shorter than this (bytes: eight chunks) are stored as they are.
_ARRAYS_MIN = 64
# Stdlib zlib crawls through bytes it cannot shrink (some 40 MB/s at level 1: audio, images): a body
# longer than this is compressed to the end only if its first this-many bytes shrink by a tenth or more.
_PROBE = 16 * 1024


def _isal() -> tuple[Callable[[bytes, int], bytes] | None, Callable[[bytes], bytes]]:
    """ISA-L's deflate and inflate, in zlib's own format (either reads what the other wrote).
    Deflate is some 3x faster than stdlib zlib's at level 1, and 20x faster through bytes it cannot
    shrink; packing runs on the relay's thread for every recording. Inflate is 2x faster: the
    assembly worker unpacks every recording. Where the package has no build for the platform,
    no fast deflate (stdlib zlib, probed, instead) and stdlib inflate."""
    try:
        from isal import isal_zlib
    except ImportError:
        return None, zlib.decompress
    return cast(Callable[[bytes, int], bytes], isal_zlib.compress), cast(Callable[[bytes], bytes], isal_zlib.decompress)


_FAST_DEFLATE, _INFLATE = _isal()


class PackedChunks(NamedTuple):
    """A recording's chunks as ``recording_bodies`` stores them (the field names are its columns),
    and what the ``recordings`` row says of them."""

    body: bytes
    encoding: str
    chunk_ends: bytes
    chunk_offsets: bytes
    chunk_count: int  # as the ``recordings`` row says: chunks
    body_bytes: int  # and the body's length, uncompressed

    def columns(self) -> dict[str, Any]:
        """The ``recording_bodies`` columns."""
        return {"body": self.body, "encoding": self.encoding, "chunk_ends": self.chunk_ends, "chunk_offsets": self.chunk_offsets}

    def unpack(self) -> tuple[list[bytes], list[float]]:
        """The chunks and their offsets (:func:`unpack_chunks`)."""
        return unpack_chunks(self.body, self.encoding, self.chunk_ends, self.chunk_offsets)


def shrink(body: bytes, fast: Callable[[bytes, int], bytes] | None = _FAST_DEFLATE) -> bytes | None:
    """``body`` compressed at zlib level 1 (a 200-event, 51 KB chat stream to under 1 KB, in ~13 µs
    with ISA-L, ~40 µs with stdlib zlib), or None when that would not make it smaller."""
    if fast is not None:
        out = fast(body, 1)
        return out if len(out) < len(body) else None
    z = zlib.compressobj(1)
    view = memoryview(body)
    out = z.compress(view[:_PROBE])
    if len(body) > _PROBE:
        out += z.flush(zlib.Z_SYNC_FLUSH)
        if len(out) > _PROBE * 9 // 10:
            return None
        out += z.compress(view[_PROBE:])
    out += z.flush()
    return out if len(out) < len(body) else None


def deflate(data: bytes) -> bytes:
    """``data`` in zlib's format at level 1 (stdlib ``zlib.decompress`` reads it back)."""
    return _FAST_DEFLATE(data, 1) if _FAST_DEFLATE is not None else zlib.compress(data, 1)


def inflate(data: bytes) -> bytes:
    """What :func:`deflate` or :func:`shrink` was given."""
    return _INFLATE(data)


def pack_chunks(chunks: Sequence[bytes], offsets_ms: Sequence[float]) -> PackedChunks:
    """The chunks as one body (compressed when that makes it smaller) and packed chunk ends and offsets."""
    return pack_body(b"".join(chunks), accumulate(map(len, chunks)), offsets_ms)


def pack_body(
    body: bytes, ends: Iterable[int], offsets_ms: Sequence[float], *, compress: bool = True, reads: int | None = None
) -> PackedChunks:
    """:func:`pack_chunks` for chunks given as the body and where each ends in it. Uncompressed
    (``compress=False``) for a recording that is only counted, never stored. ``reads``: how many
    reads the events came in, when known (see :func:`_packed`)."""
    ends_arr = array("Q", ends)
    offs = array("d", offsets_ms)
    if _BIG:
        ends_arr.byteswap()
        offs.byteswap()
    return _packed(body, ends_arr.tobytes(), offs.tobytes(), compress, reads)


def _packed(body: bytes, ends: bytes, offsets: bytes, compress: bool, reads: int | None = None) -> PackedChunks:
    """Packed, compressed where asked: the body when that shrinks it, and the chunk ends and
    offsets, 3.2 KB raw for 200 chunks, more than half of what a recording waiting to be written
    weighs. The ends always shrink (to ~0.3-0.7 KB, ~17 µs). The offsets are the times of the
    reads the events came in: they shrink only when events share reads (four or more a read,
    as in a burst), and compressing doubles that do not repeat costs ~23 µs for nothing."""
    count = len(ends) // 8
    compressed = shrink(body) if compress else None
    encoding = _RAW if compressed is None else _ZLIB
    if compress and len(ends) >= _ARRAYS_MIN:
        ends = deflate(ends)
        if reads is not None and reads * 4 <= count:
            offsets, encoding = deflate(offsets), f"{encoding}/{_ARRAYS_ZLIB}"
        else:
            encoding = f"{encoding}/{_ENDS_ZLIB}"
    return PackedChunks(body if compressed is None else compressed, encoding, ends, offsets, count, len(body))


# proxy._sse_split.split_packed: body, read ends, read times -> (event ends, event offsets), packed.
SplitPacked = Callable[[bytes, "array[int]", "array[float]"], tuple[bytes, bytes] | None]


def _c_module() -> ModuleType | None:
    """``proxy._sse_split``: its split for the relay, its cut for every unpacking."""
    try:
        from proxy import _sse_split
    except ImportError:  # not built (no compiler where it was installed): Python splits and cuts, alike
        return None
    return _sse_split


_C = _c_module()
_SPLIT_PACKED: SplitPacked | None = None if _C is None else _C.split_packed


def pack_reads(
    body: bytes,
    read_ends: array[int],
    read_times: array[float],
    *,
    compress: bool = True,
    split: SplitPacked | None = _SPLIT_PACKED,
) -> PackedChunks:
    """An event stream's ``body``, read by reads that ended at ``read_ends`` (``read_ends[i]``
    came at ``read_times[i]``), split into its events as :func:`~proxy.sse.split_reads` splits
    those reads and packed by :func:`pack_body`; in one pass in C (``proxy._sse_split``) where it
    is built and the stream has no ``\\r``: the relay does this for every stream, on its thread."""
    done = split(body, read_ends, read_times) if split is not None else None
    if done is None:
        reads = [body[a:b] for a, b in pairwise([0, *read_ends])]
        return pack_body(*split_reads(reads, read_times), compress=compress, reads=len(reads))
    ends, offsets = done
    return _packed(body, ends, offsets, compress, len(read_ends))


def _codecs(encoding: str) -> tuple[str, str]:
    """The body's codec, and which chunk arrays are compressed: ``""`` none, ``"e"`` the ends,
    ``"z"`` both."""
    codec, slash, arrays = encoding.partition("/")
    if codec not in (_RAW, _ZLIB) or (slash and arrays not in (_ENDS_ZLIB, _ARRAYS_ZLIB)):
        raise ValueError(f"a recording body is stored as {encoding!r}, which this version of streamproxy cannot read")
    return codec, arrays


def unpack_chunks(body: bytes, encoding: str, ends_raw: bytes, offsets_raw: bytes) -> tuple[list[bytes], list[float]]:
    """The chunks and their offsets back from what ``pack_chunks`` made of them (no offsets,
    given ``b""`` for them)."""
    codec, arrays = _codecs(encoding)
    if arrays:
        ends_raw = inflate(ends_raw)
        if arrays == _ARRAYS_ZLIB and offsets_raw:
            offsets_raw = inflate(offsets_raw)
    offs = array("d")
    offs.frombytes(offsets_raw)
    if _BIG:
        offs.byteswap()
    if codec == _ZLIB:
        body = inflate(body)
    return cut_chunks(body, ends_raw), list(offs)


def _cut_in_python(body: bytes, ends_raw: bytes) -> list[bytes]:
    """``body`` cut at each of the packed ``ends``; ``proxy._sse_split.cut`` where it is built."""
    ends = array("Q")
    ends.frombytes(ends_raw)
    if _BIG:
        ends.byteswap()
    chunks: list[bytes] = []
    start = 0
    for end in ends:
        chunks.append(body[start:end])
        start = end
    return chunks


cut_chunks: Callable[[bytes, bytes], list[bytes]] = _cut_in_python if _C is None else _C.cut


def json_text(value: Any) -> str:
    """A JSON column's value as stored (the engine's serializer, and the assembly worker's)."""
    return orjson.dumps(value).decode()


def search_text(request_body: bytes, reply: dict[str, Any] | None) -> str:
    """Lower-cased request messages and reply text, without NUL (PostgreSQL text cannot hold it)."""
    parts: list[str] = []
    body = _request_json(request_body)
    if isinstance(body, dict):
        for key in ("messages", "input", "prompt", "instructions"):
            _collect_text(body.get(key), parts)
    parts.append(reply_text(reply))
    return "\n".join(p for p in parts if p).lower().replace("\x00", "")


def _collect_text(value: Any, out: list[str]) -> None:
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, list):
        for item in value:
            _collect_text(item, out)
    elif isinstance(value, dict):
        for k in ("content", "text", "input_text", "arguments"):
            if k in value:
                _collect_text(value[k], out)


def _request_json(body: bytes) -> Any:
    try:
        return orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None
