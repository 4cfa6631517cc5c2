"""proxy.reads: what the relay keeps of an answer while it streams. Folding the reads into
blocks, wherever it happens, packs the same recording as keeping every read to the end."""

from __future__ import annotations

import os
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.prepare import pack_body, unpack_chunks
from proxy.reads import Reads
from proxy.sse import split_reads

_PIECES = st.sampled_from([b"\n", b"\n\n", b"data: ", b"x" * 40, b"\xc3\xa9", b'data: {"a":1}\n\n', b"\r\n"])


def _kept(reads: list[bytes], times: list[float], folds: set[int], *, compress: bool = True) -> tuple[Reads, list[bytes], list[float]]:
    """Feed ``reads`` as the relay does, folding after each read whose index is in ``folds``."""
    kept = Reads(compress=compress)
    recent: list[bytes] = []
    recent_times: list[float] = []
    for i, (data, at) in enumerate(zip(reads, times, strict=True)):
        recent.append(data)
        recent_times.append(at)
        if i in folds:
            kept.fold(recent, recent_times)
            assert recent == [] and recent_times == []
    return kept, recent, recent_times


@settings(max_examples=600)
@given(
    st.lists(_PIECES, max_size=80).map(b"".join),
    st.lists(st.integers(min_value=0), max_size=15),
    st.sets(st.integers(min_value=0, max_value=20)),
    st.booleans(),
)
def test_folding_anywhere_packs_as_keeping_every_read(data: bytes, cuts: list[int], folds: set[int], compress: bool) -> None:
    bounds = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    reads = [data[a:b] for a, b in pairwise(bounds)]
    times = [float(i) for i in range(len(reads))]
    kept, recent, recent_times = _kept(reads, times, folds, compress=compress)
    assert kept.pack(recent, recent_times, compress=compress) == pack_body(*split_reads(reads, times), compress=compress)


def test_an_answer_that_is_not_an_event_stream_comes_back_whole() -> None:
    reads = [os.urandom(5000), b"{" + b'"k": 1, ' * 3000, b"}", os.urandom(20000)]  # some blocks shrink, some cannot
    kept = Reads()
    recent: list[bytes] = []
    for data in reads:
        recent.append(data)
        kept.fold(recent, [])
    assert kept.body(recent) == b"".join(reads)
    assert Reads().body([b"a", b"b"]) == b"ab"


def test_a_long_event_stream_keeps_every_event_and_its_time() -> None:
    events = [b'data: {"choices":[{"delta":{"content":"tok%04d"}}]}\n\n' % i for i in range(2000)]
    reads = [b"".join(events[i : i + 7]) for i in range(0, len(events), 7)]
    times = [i * 0.5 for i in range(len(reads))]
    kept, recent, recent_times = _kept(reads, times, set(range(0, len(reads), 30)))
    chunks, offsets = unpack_chunks(*kept.pack(recent, recent_times))
    assert chunks == events
    assert offsets == [(i // 7) * 0.5 for i in range(len(events))]
