"""The IO-free SSE splitter and parser, at every split point."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.sse import EventSplitter, SplitStream, parse_event, split_reads

STREAM = (
    b"data: {\"a\": 1}\n\n"
    b"event: response.created\r\ndata: {\"b\": \"\xc3\xa9\xe2\x9c\x93\"}\r\n\r\n"
    b": keep-alive\r\r"
    b"data: one\ndata: two\n\r\n"
    b"data:nospace\r\n\n"
    b"data: [DONE]\n\n"
)
EVENTS = [
    b"data: {\"a\": 1}\n\n",
    b"event: response.created\r\ndata: {\"b\": \"\xc3\xa9\xe2\x9c\x93\"}\r\n\r\n",
    b": keep-alive\r\r",
    b"data: one\ndata: two\n\r\n",
    b"data:nospace\r\n\n",
    b"data: [DONE]\n\n",
]


def split_all(writes: list[bytes]) -> list[bytes]:
    s = EventSplitter()
    out: list[bytes] = []
    for w in writes:
        out.extend(s.feed(w))
    return out + s.flush()


def test_whole_stream_splits_into_events() -> None:
    assert split_all([STREAM]) == EVENTS


def test_every_single_split_point() -> None:
    for i in range(1, len(STREAM)):
        assert split_all([STREAM[:i], STREAM[i:]]) == EVENTS, i


def test_one_byte_at_a_time() -> None:
    assert split_all([STREAM[i : i + 1] for i in range(len(STREAM))]) == EVENTS


@settings(max_examples=300, deadline=None)  # properties, not timings: a busy CI machine must not fail one
@given(st.sets(st.integers(1, len(STREAM) - 1), max_size=30))
def test_any_splits(cuts: set[int]) -> None:
    points = sorted(cuts)
    writes = [STREAM[a:b] for a, b in zip([0, *points], [*points, len(STREAM)], strict=True)]
    assert split_all(writes) == EVENTS


def test_cr_at_the_end_of_a_read_waits_for_a_possible_lf() -> None:
    s = EventSplitter()
    assert s.feed(b"data: x\r\n\r") == []
    assert s.feed(b"\ndata: y\n\n") == [b"data: x\r\n\r\n", b"data: y\n\n"]


def test_truncated_tail_comes_out_on_flush() -> None:
    s = EventSplitter()
    assert s.feed(b"data: 1\n\ndata: {\"cut") == [b"data: 1\n\n"]
    assert s.pending == len(b"data: {\"cut")
    assert s.flush() == [b"data: {\"cut"]
    assert s.flush() == []


def test_parse_fields() -> None:
    ev = parse_event(EVENTS[1])
    assert ev.event == "response.created" and ev.data == '{"b": "é✓"}'
    assert parse_event(EVENTS[3]).data == "one\ntwo"
    assert parse_event(EVENTS[4]).data == "nospace"
    assert parse_event(b":  two spaces\n\n").comments == [" two spaces"]
    assert parse_event(b"id: 7\nretry: 10\nweird: x\n\n").unknown == ["weird: x"]


def test_parse_never_raises_on_bad_utf8() -> None:
    assert parse_event(b"data: \xff\n\n").data == "\ufffd"


# The splitter has a fast path for reads with no \r about; these pin it to a reference
# that follows the line rules one byte at a time.


def reference(data: bytes) -> list[bytes]:
    """Events of a whole stream by the WHATWG line rules: an event ends at a line end that
    directly follows another (``\\r\\n``, ``\\r`` or ``\\n``, mixed freely)."""
    events: list[bytes] = []
    start = i = 0
    after_line_end = False
    while i < len(data):
        c = data[i : i + 1]
        width = (2 if data[i + 1 : i + 2] == b"\n" else 1) if c == b"\r" else 1 if c == b"\n" else 0
        if not width:
            i += 1
            after_line_end = False
            continue
        i += width
        if after_line_end:
            events.append(data[start:i])
            start = i
        after_line_end = not after_line_end
    if start < len(data):
        events.append(data[start:])
    return events


CHAT_LF = (
    'data: {"choices":[{"delta":{"content":"Gr\u00fc\u00df "}}]}\n\n'
    ": keep-alive\n\n\n"
    'data: {"choices":[{"delta":{"content":"\U0001f600"}}]}\n\n'
    "data: [DONE]\n\n"
).encode()


def test_lf_only_stream_at_every_split_point() -> None:
    expected = reference(CHAT_LF)
    assert len(expected) == 4
    for i in range(len(CHAT_LF) + 1):
        assert split_all([CHAT_LF[:i], CHAT_LF[i:]]) == expected, i


def test_an_lf_event_split_inside_a_utf8_character_is_whole_and_parses() -> None:
    event = 'data: {"c":"\u00e9\U0001f600"}\n\n'.encode()
    inside = event.index(b"\xf0") + 2
    s = EventSplitter()
    assert s.feed(event[:inside]) == []
    assert s.feed(event[inside:]) == [event]
    assert parse_event(event).data == '{"c":"\u00e9\U0001f600"}'


def test_a_cr_arriving_after_lf_only_reads_is_still_honoured() -> None:
    s = EventSplitter()
    assert s.feed(b"data: a\n") == []
    assert s.feed(b"\r\ndata: b\r") == [b"data: a\n\r\n"]
    assert s.feed(b"\r") == []
    assert s.flush() == [b"data: b\r\r"]


_PIECES = st.sampled_from([b"\n", b"\r", b"\r\n", b"data: ", b":", b"x", b"\xc3\xa9", b"\xf0\x9f\x98\x80"])


@given(st.lists(_PIECES, max_size=60).map(b"".join), st.lists(st.integers(min_value=0), max_size=8))
def test_any_bytes_any_reads_match_the_reference(data: bytes, points: list[int]) -> None:
    bounds = [0, *sorted(p % (len(data) + 1) for p in points), len(data)]
    events = split_all([data[a:b] for a, b in pairwise(bounds)])
    assert events == reference(data)
    assert b"".join(events) == data


_EVENT_PIECES = st.sampled_from(
    [b"data: ", b"data:", b"event: ", b"id: 1", b": c", b"x", b" ", b"\n", b"\r", b"\xff", b"\xc3\xa9", b"{}"]
)


@given(st.lists(_EVENT_PIECES, max_size=12).map(lambda p: b"".join(p) + b"\n\n"))
def test_the_one_data_line_fast_path_parses_as_the_general_rules_do(raw: bytes) -> None:
    from proxy.sse import _parse_lines

    assert parse_event(raw) == _parse_lines(raw)
    assert parse_event(b"data: " + raw) == _parse_lines(b"data: " + raw)


def split_timed(reads: list[bytes], times: list[float]) -> tuple[list[bytes], list[float]]:
    """What the relay used to do: feed every read as it arrives, each event timed by its read."""
    s = EventSplitter()
    events: list[bytes] = []
    offsets: list[float] = []
    for data, at in zip(reads, times, strict=True):
        done = s.feed(data)
        events += done
        offsets += [at] * len(done)
    rest = s.flush()
    return events + rest, offsets + [times[-1]] * len(rest)


_LF_PIECES = st.sampled_from([b"\n", b"\n\n", b"data: ", b"x", b"\xc3\xa9", b"data: {}\n\n"])


def events_of(split: SplitStream) -> tuple[list[bytes], list[float]]:
    return [split.body[a:b] for a, b in pairwise([0, *split.ends])], split.offsets


@settings(max_examples=400, deadline=None)  # properties, not timings: a busy CI machine must not fail one
@given(
    st.one_of(st.lists(_PIECES, max_size=60), st.lists(_LF_PIECES, max_size=60)).map(b"".join),
    st.lists(st.integers(min_value=0), max_size=12),
)
def test_a_whole_stream_split_at_the_end_is_what_splitting_read_by_read_gives(data: bytes, points: list[int]) -> None:
    bounds = [0, *sorted(p % (len(data) + 1) for p in points), len(data)]
    reads = [data[a:b] for a, b in pairwise(bounds)]
    times = [float(i) for i in range(len(reads))]
    split = split_reads(reads, times)
    assert split.body == data
    assert events_of(split) == split_timed(reads, times)


def test_one_event_a_read_and_several_a_read_get_their_reads_times() -> None:
    one_each = [b"data: a\n\n", b"data: b\n\n", b"data: [DONE]\n\n"]
    assert events_of(split_reads(one_each, [1.0, 2.0, 3.0])) == (one_each, [1.0, 2.0, 3.0])
    coalesced = [b"data: a\n\ndata: b\n\nda", b"ta: c\n", b"\ndata: cut"]
    assert events_of(split_reads(coalesced, [1.0, 2.0, 3.0])) == (
        [b"data: a\n\n", b"data: b\n\n", b"data: c\n\n", b"data: cut"],
        [1.0, 1.0, 3.0, 3.0],
    )
