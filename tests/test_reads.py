"""proxy.reads: what the relay keeps of an answer while it streams. Folding the reads into
blocks, wherever it happens, packs the same recording as keeping every read to the end."""

from __future__ import annotations

import os
from itertools import accumulate, pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.prepare import pack_body, unpack_chunks
from proxy.reads import BLOCK, RAW_BYTES, RAW_SECONDS, Reads
from proxy.sse import split_reads

_PIECES = st.sampled_from([b"\n", b"\n\n", b"data: ", b"x" * 40, b"\xc3\xa9", b'data: {"a":1}\n\n', b"\r\n"])


def _kept(
    reads: list[bytes], times: list[float], folds: set[int], *, compress: bool = True, squeezes: frozenset[int] = frozenset()
) -> tuple[Reads, list[bytes], list[float]]:
    """Feed ``reads`` as the relay does, folding after each read whose index is in ``folds``
    (at the read's time), and compressing what is held raw after those in ``squeezes``, as the
    relay's timer would."""
    kept = Reads(compress=compress)
    recent: list[bytes] = []
    recent_times: list[float] = []
    for i, (data, at) in enumerate(zip(reads, times, strict=True)):
        recent.append(data)
        recent_times.append(at)
        if i in folds:
            kept.fold(recent, recent_times, at)
            assert recent == [] and recent_times == []
        if i in squeezes:
            kept.squeeze()
    return kept, recent, recent_times


@settings(max_examples=600, deadline=None)  # properties, not timings: a busy CI machine must not fail one
@given(
    st.lists(_PIECES, max_size=80).map(b"".join),
    st.lists(st.integers(min_value=0), max_size=15),
    st.sets(st.integers(min_value=0, max_value=20)),
    st.booleans(),
    st.lists(st.sampled_from([0.0, 0.01, RAW_SECONDS]), min_size=20, max_size=20),
    st.frozensets(st.integers(min_value=0, max_value=20)),
)
def test_folding_anywhere_packs_as_keeping_every_read(
    data: bytes, cuts: list[int], folds: set[int], compress: bool, gaps: list[float], squeezes: frozenset[int]
) -> None:
    """Folded, held raw or compressed (by age at a fold, or by the relay's timer), in any mix."""
    bounds = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    reads = [data[a:b] for a, b in pairwise(bounds)]
    times = list(accumulate(gaps[: len(reads)]))
    kept, recent, recent_times = _kept(reads, times, folds, compress=compress, squeezes=squeezes)
    assert kept.pack(recent, recent_times) == pack_body(
        *split_reads(reads, times), compress=compress, reads=len(reads)
    )


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
    chunks, offsets = unpack_chunks(*kept.pack(recent, recent_times)[:4])
    assert chunks == events
    assert offsets == [(i // 7) * 0.5 for i in range(len(events))]


def _held(kept: Reads) -> int:
    """Bytes the blocks take as held (compressed or not)."""
    return sum(map(len, kept._blocks))


def test_blocks_of_a_burst_stay_raw_until_the_timer_the_first_fold_asks_for() -> None:
    """A burst folds without compressing (its body is packed moments later); a stream that then
    goes quiet has its blocks compressed when the relay's timer calls ``squeeze``."""
    block = b'data: {"choices":[{"delta":{"content":"tok"}}]}\n\n' * (BLOCK // 48 + 1)
    kept = Reads()
    recent = [block]
    due = kept.fold(recent, [1.0], 5.0)
    assert due == 5.0 + RAW_SECONDS
    recent = [block]
    assert kept.fold(recent, [1.0], 5.0 + RAW_SECONDS / 2) is None  # the timer is armed already
    assert _held(kept) == 2 * len(block)
    kept.squeeze()
    assert _held(kept) < len(block) // 10
    assert kept.body([]) == block * 2


def test_blocks_are_compressed_at_a_fold_once_old_or_many() -> None:
    block = b"data: x\n\n" * (BLOCK // 9 + 1)
    old = Reads()
    assert old.fold([block], [], 0.0) is not None
    assert old.fold([block], [], RAW_SECONDS) is None  # the first has waited its time: both compressed
    assert _held(old) < len(block) // 10
    many = Reads()
    for _ in range(RAW_BYTES // len(block) + 1):
        many.fold([block], [], 0.0)
    assert _held(many) < len(block) // 10
    assert many.body([]) == block * (RAW_BYTES // len(block) + 1)


def test_an_answer_never_stored_is_never_compressed() -> None:
    block = b"data: x\n\n" * (BLOCK // 9 + 1)
    kept = Reads(compress=False)
    assert kept.fold([block], [], 0.0) is None
    assert kept.fold([block], [], 10.0) is None
    assert _held(kept) == 2 * len(block)


def test_offsets_are_compressed_only_when_events_share_their_reads() -> None:
    """The ends of eight chunks or more are always stored compressed; the offsets (the reads'
    times) only when four or more events came to a read, else they would hardly shrink."""
    events = [b'data: {"n":%d}\n\n' % i for i in range(40)]
    body = b"".join(events)
    ends = list(accumulate(map(len, events)))
    burst = pack_body(body, ends, [1.5] * 20 + [2.5] * 20, reads=2)
    trickle = pack_body(body, ends, [float(i) for i in range(40)], reads=40)
    unknown = pack_body(body, ends, [1.5] * 40)
    short = pack_body(body[: ends[6]], ends[:7], [1.0] * 7, reads=1)
    assert [p.encoding for p in (burst, trickle, unknown, short)] == ["zlib/z", "zlib/e", "zlib/e", "zlib"]
    assert len(burst.chunk_offsets) < 8 * 40 // 4 and len(trickle.chunk_offsets) == 8 * 40
    for p, offsets in ((burst, [1.5] * 20 + [2.5] * 20), (trickle, [float(i) for i in range(40)]), (unknown, [1.5] * 40)):
        assert unpack_chunks(*p[:4]) == (events, offsets)
        assert (p.chunk_count, p.body_bytes) == (40, len(body))
