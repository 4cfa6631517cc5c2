"""proxy.sse.split_reads for a stream with no \\r, in C, packed (proxy/_sse_split.c)."""

from array import array

def split_packed(
    body: bytes | bytearray | memoryview, read_ends: bytes | array[int], read_times: bytes | array[float], /
) -> tuple[bytes, bytes] | None: ...

def cut(body: bytes | bytearray | memoryview, ends: bytes, /) -> list[bytes]: ...
