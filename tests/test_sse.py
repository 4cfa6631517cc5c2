"""The SSE splitter at every split point: the events it returns are the same however the stream
is cut into reads, and they concatenate to exactly the bytes fed."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from proxy.sse import EventSplitter, parse_event


def reference(data: bytes) -> list[bytes]:
    """Events of a whole stream, one byte at a time by the WHATWG line rules: an event ends at
    a line end that directly follows another (``\\r\\n``, ``\\r`` or ``\\n``, mixed freely)."""
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


def split(pieces: list[bytes]) -> list[bytes]:
    s = EventSplitter()
    out: list[bytes] = []
    for p in pieces:
        out.extend(s.feed(p))
    return out + s.flush()


def cut(data: bytes, points: list[int]) -> list[bytes]:
    bounds = [0, *sorted(p % (len(data) + 1) for p in points), len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


CHAT = (
    'data: {"choices":[{"delta":{"content":"Gr\u00fc\u00df "}}]}\n\n'
    ": keep-alive\n\n"
    'data: {"choices":[{"delta":{"content":"\U0001f600"}}]}\n\n'
    "data: [DONE]\n\n"
).encode()
RESPONSES = (
    'event: response.created\r\ndata: {"type":"response.created"}\r\n\r\n'
    'event: response.output_text.delta\r\ndata: {"delta":"\u00e9"}\r\n\r\n'
    "event: response.completed\rdata: {}\r\r"
).encode()


def test_chat_stream_at_every_split_point() -> None:
    expected = reference(CHAT)
    assert len(expected) == 4
    for i in range(len(CHAT) + 1):
        assert split([CHAT[:i], CHAT[i:]]) == expected, i


def test_cr_and_crlf_stream_at_every_pair_of_split_points() -> None:
    expected = reference(RESPONSES)
    assert len(expected) == 3
    for i in range(len(RESPONSES) + 1):
        for j in range(i, len(RESPONSES) + 1):
            assert split([RESPONSES[:i], RESPONSES[i:j], RESPONSES[j:]]) == expected, (i, j)


def test_one_byte_at_a_time() -> None:
    for stream in (CHAT, RESPONSES, CHAT + RESPONSES):
        assert split([stream[i : i + 1] for i in range(len(stream))]) == reference(stream)


def test_cr_at_the_end_of_a_read_waits_for_the_next() -> None:
    s = EventSplitter()
    assert s.feed(b"data: a\r\r") == []  # the second \r may be the start of \r\n
    assert s.feed(b"\ndata: b\n\n") == [b"data: a\r\r\n", b"data: b\n\n"]


def test_an_event_split_inside_a_utf8_character_is_whole_and_parses() -> None:
    event = 'data: {"c":"\u00e9\U0001f600"}\n\n'.encode()
    inside = event.index(b"\xf0") + 2
    s = EventSplitter()
    assert s.feed(event[:inside]) == []
    assert s.feed(event[inside:]) == [event]
    assert parse_event(event).data == '{"c":"\u00e9\U0001f600"}'


def test_a_stream_cut_short_flushes_what_is_left() -> None:
    s = EventSplitter()
    assert s.feed(b"data: 1\n\ndata: 2") == [b"data: 1\n\n"]
    assert s.pending == len(b"data: 2")
    assert s.flush() == [b"data: 2"]
    assert s.flush() == []


_ALPHABET = st.sampled_from([b"\n", b"\r", b"\r\n", b"data: ", b":", b"x", b"\xc3\xa9", b"\xf0\x9f\x98\x80"])


@given(st.lists(_ALPHABET, max_size=60).map(b"".join), st.lists(st.integers(min_value=0), max_size=8))
def test_any_bytes_any_reads_match_the_reference(data: bytes, points: list[int]) -> None:
    events = split(cut(data, points))
    assert events == reference(data)
    assert b"".join(events) == data
