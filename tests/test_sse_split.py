"""proxy._sse_split, the relay's split of an event stream into its events, in C: every stream
packs byte for byte as splitting it in Python and packing it does, and the relay uses it."""

from __future__ import annotations

import os
from array import array
from itertools import accumulate, pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy import prepare
from proxy.prepare import pack_body, pack_reads, unpack_chunks
from proxy.sse import split_reads

try:
    from proxy import _sse_split
except ImportError:
    _sse_split = None  # type: ignore[assignment]

needs_split = pytest.mark.skipif(_sse_split is None, reason="proxy._sse_split is not built")


def test_the_accelerator_is_built_where_required() -> None:
    """CI sets STREAMPROXY_REQUIRE_C_EXTENSIONS=1: there a missing build fails instead of leaving
    every stream to the slower Python split unnoticed."""
    if _sse_split is None:
        if os.environ.get("STREAMPROXY_REQUIRE_C_EXTENSIONS") == "1":
            pytest.fail("proxy._sse_split is not built (STREAMPROXY_REQUIRE_C_EXTENSIONS=1)", pytrace=False)
        pytest.skip("proxy._sse_split is not built")
    assert prepare._SPLIT_PACKED is _sse_split.split_packed
    assert prepare.cut_chunks is _sse_split.cut


def in_python(reads: list[bytes], times: list[float], compress: bool = True) -> prepare.PackedChunks:
    return pack_body(*split_reads(reads, times), compress=compress, reads=len(reads))


def as_read(reads: list[bytes], times: list[float]) -> tuple[bytes, array[int], array[float]]:
    """What the relay keeps of ``reads``: the body, where each read ended, when each came."""
    return b"".join(reads), array("Q", accumulate(map(len, reads))), array("d", times)


def c_split(reads: list[bytes], times: list[float]) -> tuple[bytes, bytes, bytes] | None:
    body, ends, at = as_read(reads, times)
    done = _sse_split.split_packed(body, ends, at)
    return None if done is None else (body, *done)


# Mostly \n, so that blank lines, lone line ends and runs of three or more all come up often.
_PIECES = st.sampled_from([b"\n", b"\n\n", b"\n\n\n", b"data: ", b"x", b"\xc3\xa9", b"data: {}\n\n", b"\r", b"\r\n"])


@needs_split
@settings(max_examples=1500, deadline=None)  # properties, not timings: a busy CI machine must not fail one
@given(
    st.one_of(st.lists(_PIECES, max_size=60), st.lists(_PIECES.filter(lambda p: b"\r" not in p), max_size=60)).map(b"".join),
    st.lists(st.integers(min_value=0), max_size=12),
    st.lists(st.floats(allow_nan=False, allow_infinity=True, width=64), min_size=13, max_size=13),
    st.booleans(),
)
def test_every_stream_packs_as_the_python_split_packs_it(
    data: bytes, points: list[int], clock: list[float], compress: bool
) -> None:
    bounds = [0, *sorted(p % (len(data) + 1) for p in points), len(data)]
    reads = [data[a:b] for a, b in pairwise(bounds)]  # empty reads too, where two cuts meet
    times = clock[: len(reads)]
    assert pack_reads(*as_read(reads, times), compress=compress) == in_python(reads, times, compress)
    assert pack_reads(*as_read(reads, times), compress=compress, split=None) == in_python(reads, times, compress)


@needs_split
def test_events_are_timed_by_the_read_that_completes_them_and_the_rest_by_the_last() -> None:
    reads = [b"data: a\n\ndata: b\n\nda", b"ta: c\n", b"\ndata: cut", b""]
    body, ends, offsets = c_split(reads, [1.0, 2.0, 3.0, 4.0]) or (b"", b"", b"")
    chunks, times = unpack_chunks(body, "", ends, offsets)
    assert chunks == [b"data: a\n\n", b"data: b\n\n", b"data: c\n\n", b"data: cut"]
    assert times == [1.0, 1.0, 3.0, 4.0]


@needs_split
def test_a_stream_with_a_carriage_return_is_left_to_python() -> None:
    reads = [b"data: a\r\n\r\n", b"data: b\n\n"]
    assert c_split(reads, [1.0, 2.0]) is None
    assert pack_reads(*as_read(reads, [1.0, 2.0])) == in_python(reads, [1.0, 2.0])
    assert unpack_chunks(*pack_reads(*as_read(reads, [1.0, 2.0]))[:4])[0] == [b"data: a\r\n\r\n", b"data: b\n\n"]


@needs_split
def test_nothing_read_packs_to_nothing() -> None:
    assert c_split([], []) == (b"", b"", b"")
    assert c_split([b""], [1.0]) == (b"", b"", b"")


@needs_split
def test_bad_arguments_raise_instead_of_packing_nonsense() -> None:
    split = _sse_split.split_packed
    with pytest.raises(ValueError, match="differ in length"):
        split(b"a", array("Q", [1]), array("d"))
    with pytest.raises(ValueError, match="8 bytes each"):
        split(b"a", b"\x01", array("d", [1.0]))
    with pytest.raises(ValueError, match="go backwards"):
        split(b"ab", array("Q", [2, 1, 2]), array("d", [1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="do not end where the body does"):
        split(b"abc", array("Q", [1, 2]), array("d", [1.0, 2.0]))
    with pytest.raises(ValueError, match="do not end where the body does"):
        split(b"a", array("Q"), array("d"))
    with pytest.raises(TypeError):
        split("a", array("Q", [1]), array("d", [1.0]))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        split(b"a", [1], [1.0])  # type: ignore[arg-type]


@needs_split
@settings(max_examples=400, deadline=None)  # properties, not timings: a busy CI machine must not fail one
@given(st.binary(max_size=300), st.lists(st.integers(min_value=0, max_value=400), max_size=30), st.booleans())
def test_a_body_is_cut_at_its_chunk_ends_as_python_slices_it(body: bytes, ends: list[int], in_order: bool) -> None:
    """Stored recordings are cut into their chunks in C where it is built: the same chunks as
    Python's slicing, for ends in order and, in a damaged row, out of order or past the body."""
    packed = array("Q", sorted(ends) if in_order else ends).tobytes()
    assert _sse_split.cut(body, packed) == prepare._cut_in_python(body, packed)


@needs_split
def test_cut_refuses_ends_that_are_not_eight_bytes_each() -> None:
    with pytest.raises(ValueError, match="8 bytes"):
        _sse_split.cut(b"abc", b"\x01\x00")
