"""The IO-free SSE splitter and parser, at every split point."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.sse import EventSplitter, parse_event

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


@settings(max_examples=300)
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
