"""proxy._fold_scan, the C steady state of the run of usual chat chunks: it takes exactly what
the Python loop would take alike and stops at the first chunk it is not sure of, and
assemble() reads every stream the same with it and without it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy import assemble as assemble_module
from proxy.assemble import Assembled, assemble

try:
    from proxy import _fold_scan
except ImportError:
    _fold_scan = None  # type: ignore[assignment]

SSE = "text/event-stream"
PATH = "/v1/chat/completions"

needs_scan = pytest.mark.skipif(_fold_scan is None, reason="proxy._fold_scan is not built")


def test_the_accelerator_is_built_where_required() -> None:
    """CI sets STREAMPROXY_REQUIRE_C_EXTENSIONS=1: there a missing build fails instead of
    leaving every stream to the slower pure-Python loop unnoticed."""
    if _fold_scan is None:
        if os.environ.get("STREAMPROXY_REQUIRE_C_EXTENSIONS") == "1":
            pytest.fail("proxy._fold_scan is not built (STREAMPROXY_REQUIRE_C_EXTENSIONS=1)", pytrace=False)
        pytest.skip("proxy._fold_scan is not built")
    assert assemble_module._scan is _fold_scan.scan


@contextmanager
def python_loop() -> Iterator[None]:
    saved = assemble_module._scan
    assemble_module._scan = None
    try:
        yield
    finally:
        assemble_module._scan = saved


def both_ways(chunks: list[bytes], path: str = PATH) -> tuple[Assembled, Assembled]:
    with_scan = assemble(path, SSE, chunks)
    with python_loop():
        without = assemble(path, SSE, chunks)
    return with_scan, without


def assert_same(a: Assembled, b: Assembled) -> None:
    assert a.reply == b.reply
    assert a.notes == b.notes
    # Equal is not enough: 0 == 0.0 == False, and key order counts in a reply.
    assert repr(a) == repr(b)


# --- the function on its own -------------------------------------------------------------------

HEAD = (b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,'
        b'"delta":{"content":"')
CLOSE = b'"},"logprobs":null,"finish_reason":null}]'


def chunk(content: bytes, after: bytes = b"", end: bytes = b"}\n\n") -> bytes:
    return HEAD + content + CLOSE + after + end


def scan(chunks: Any, keyed: bool, close: bytes = CLOSE, last_tail: bytes | None = b"}",
         n: int = 0) -> tuple[int, Any, list[str]]:
    assert _fold_scan is not None
    parts: list[str] = []
    stop, value = _fold_scan.scan(chunks, n, HEAD, close, len(close) if keyed else 0, last_tail, parts)
    return stop, value, parts


@needs_scan
def test_same_tail_takes_the_chunks_whose_tail_repeats() -> None:
    chunks = [chunk(b"a"), chunk("é🗼\u2028\x7f".encode()), chunk(b""), chunk(b"b", b',"x":1')]
    assert scan(chunks, keyed=False) == (3, None, ["a", "é🗼\u2028\x7f", ""])
    assert scan(chunks, keyed=False, n=3, last_tail=b',"x":1}') == (4, None, ["b"])
    assert scan(tuple(chunks), keyed=False) == (3, None, ["a", "é🗼\u2028\x7f", ""])
    # None never equals a tail.
    assert scan(chunks, keyed=False, last_tail=None) == (0, None, [])


@needs_scan
def test_keyed_takes_the_last_value() -> None:
    close = CLOSE + b',"obfuscation":'
    chunks = [chunk(b"a", b',"obfuscation":"xy"'), chunk(b"b", b',"obfuscation":""'), chunk(b"c", b',"obfuscation":-0')]
    stop, value, parts = scan(chunks, keyed=True, close=close)
    assert (stop, parts) == (3, ["a", "b", "c"])
    assert value == 0 and type(value) is int
    stop, value, parts = scan(chunks[:2], keyed=True, close=close)
    assert (stop, value, parts) == (2, "", ["a", "b"])
    # Nothing taken: no value.
    assert scan([chunk(b"a", b',"obfuscation":1.5')], keyed=True, close=close) == (0, None, [])


def _stops(content: bytes = b"x", after: bytes = b',"ts":1', end: bytes = b"}\n\n") -> bytes:
    return chunk(content, after, end)


# Chunks the scan must stop at, in either mode: the Python loop decides.
STOPS = {
    "other head": HEAD.replace(b'"m"', b'"n"') + b"x" + CLOSE + b',"ts":1}\n\n',
    "no }\\n\\n": _stops(end=b"\n\n"),
    "a space before the end": _stops(end=b" }\n\n"),
    "\\r\\n end": _stops(end=b"}\r\n\r\n"),
    "backslash": _stops(b"a\\nb"),
    "escaped quote": _stops(b'a\\"b'),
    "\\u escape": _stops(b"\\u00e9"),
    "control byte": _stops(b"a\x01"),
    "tab": _stops(b"a\tb"),
    "line end": _stops(b"a\nb"),
    "NUL": _stops(b"\x00"),
    "invalid UTF-8": _stops(b"\xff"),
    "cut UTF-8": _stops(b"\xc3"),
    "surrogate in UTF-8": _stops(b"\xed\xa0\x80"),
    "overlong": _stops(b"\xc0\x80"),
    "overlong 3 bytes": _stops(b"\xe0\x80\x80"),
    "past U+10FFFF": _stops(b"\xf4\x90\x80\x80"),
    "quote inside, close after": _stops(b'a"b'),
    "close at the opening quote": HEAD[:-1] + CLOSE + b',"ts":1}\n\n',
    "the close twice": _stops(CLOSE[1:]),
    "not bytes": bytearray(_stops()),
}


@needs_scan
@pytest.mark.parametrize("bad", list(STOPS.values()), ids=list(STOPS))
@pytest.mark.parametrize("keyed", [False, True], ids=["same_tail", "keyed"])
def test_stops_at_what_it_is_not_sure_of(bad: bytes, keyed: bool) -> None:
    close = CLOSE + b',"ts":' if keyed else CLOSE
    good = chunk(b"ok", b',"ts":1')
    stop, value, parts = scan([good, bad, good], keyed=keyed, close=close, last_tail=b',"ts":1}')
    assert (stop, value, parts) == (1, 1 if keyed else None, ["ok"])


@needs_scan
def test_a_tail_is_equal_only_whole() -> None:
    """A tail that is the start of the last one (or runs on past it) is another tail."""
    last_tail = b',"a":"}","b":1}'
    assert scan([chunk(b"x", b',"a":"')], keyed=False, last_tail=last_tail) == (0, None, [])
    assert scan([chunk(b"x", b',"a":"}","b":1}')], keyed=False, last_tail=last_tail) == (0, None, [])
    assert scan([chunk(b"x", b',"a":"}","b":1')], keyed=False, last_tail=last_tail) == (1, None, ["x"])


@needs_scan
def test_a_close_found_at_the_opening_quote_stops() -> None:
    """find(close, start) finds a close that begins at the content's opening quote: the content
    would be a lone quote, which orjson refuses. (With the real close the first quote after
    it could not begin a close either; a shorter one shows the check.)"""
    assert scan([HEAD + b'x"x}\n\n'], keyed=False, close=b'"x') == (0, None, [])
    assert scan([HEAD + b'y"x}\n\n'], keyed=False, close=b'"x') == (1, None, ["y"])


# Values after the learnt key that the scan must leave to Python (orjson reads some of them, not
# all alike: floats, an int past 2**64 as a float, "-0.0" …).
BAD_VALUES = [
    b"", b"-", b"+1", b"01", b"-01", b"00", b"-00", b"1.5", b"1e5", b"1E+2", b"-0.0", b"0.0", b" 1", b"1 ", b"1\n",
    b"9223372036854775808", b"-9223372036854775808", b"18446744073709551615", b"18446744073709551616",
    b"12345678901234567890", b"NaN", b"Infinity", b"true", b"false", b"null", b"[1]", b'{"a":1}', b"0x1",
    b'"a" ', b'"a"b"', b'"a\\"b"', b'"\\u0041"', b'"\xff"', b'"\xed\xa0\x80"', b'"\x01"', b'"a', b'a"', b'"',
    b'"x","ts":2', b"1,",
]
GOOD_VALUES = [
    b"0", b"-0", b"7", b"-7", b"123456789012345678", b"1234567890123456789", b"-1234567890123456789",
    b"9223372036854775807", b"-9223372036854775807", b'""', b'"abc"', '"é🗼\u2028\x7f"'.encode(),
]


@needs_scan
@pytest.mark.parametrize("raw_value", BAD_VALUES)
def test_keyed_stops_at_values_it_does_not_read(raw_value: bytes) -> None:
    close = CLOSE + b',"ts":'
    assert scan([chunk(b"a", b',"ts":' + raw_value)], keyed=True, close=close) == (0, None, [])


@needs_scan
@pytest.mark.parametrize("raw_value", GOOD_VALUES)
def test_keyed_values_read_as_orjson_reads_them(raw_value: bytes) -> None:
    close = CLOSE + b',"ts":'
    stop, value, parts = scan([chunk(b"a", b',"ts":' + raw_value)], keyed=True, close=close)
    expected = orjson.loads(raw_value)
    assert (stop, value, parts) == (1, expected, ["a"])
    assert type(value) is type(expected)


@needs_scan
def test_content_bytes_read_as_orjson_reads_them() -> None:
    """Every one- and two-byte content, and three- and four-byte ones around every edge of
    UTF-8: taken exactly when orjson reads the string, and then as the same str."""
    edges = [0x00, 0x1F, 0x20, 0x22, 0x5C, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF, 0xE0,
             0xED, 0xEE, 0xEF, 0xF0, 0xF4, 0xF5, 0xFF]
    contents = [bytes([a]) for a in range(256)]
    contents += [bytes([a, b]) for a in range(256) for b in range(256)]
    contents += [bytes([a, b, c]) for a in range(0xE0, 0x100) for b in edges for c in edges]
    contents += [bytes([a, b, c, d]) for a in range(0xF0, 0x100) for b in edges for c in edges[6:12] for d in edges]
    taken = 0
    for content in contents:
        stop, _, parts = scan([chunk(content)], keyed=False)
        try:
            expected = orjson.loads(b'"' + content + b'"')
        except orjson.JSONDecodeError:
            # Stopping at a string orjson reads is allowed (escapes are left to Python);
            # taking one it does not read is not.
            assert stop == 0, content
            continue
        if stop:
            taken += 1
            assert parts == [expected], content
        else:
            assert b"\\" in content or b'"' in content, content
    assert taken > 12_000


@needs_scan
def test_odd_containers_are_left_to_python() -> None:
    class Chunks(list[bytes]):
        def __getitem__(self, i: Any) -> Any:
            return b"not what list indexing sees"

    chunks = [chunk(b"a"), chunk(b"b")]
    assert scan(Chunks(chunks), keyed=False) == (0, None, [])
    assert scan(iter(chunks), keyed=False) == (0, None, [])
    assert scan(chunks, keyed=False, n=5) == (5, None, [])


@needs_scan
def test_wrong_arguments_raise() -> None:
    assert _fold_scan is not None
    with pytest.raises(TypeError):
        _fold_scan.scan([], 0, HEAD, CLOSE, 0, b"}")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        _fold_scan.scan([], 0, HEAD, CLOSE, 0, b"}", ())  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        _fold_scan.scan([], 0, b"no quote", CLOSE, 0, b"}", [])
    with pytest.raises(ValueError):
        _fold_scan.scan([], -1, HEAD, CLOSE, 0, b"}", [])


# --- assemble() with the scan and without it -------------------------------------------------

_HEADS = [
    b'"id":"chatcmpl-CXw","object":"chat.completion.chunk","created":1764136800,"model":"gpt-4o-mini-2024-07-18",'
    b'"service_tier":"default","system_fingerprint":"fp_560af6e559"',
    b'"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1764000000,"model":"bench-model",'
    b'"system_fingerprint":"fp_bench"',
]
_OPEN = b',"choices":[{"index":0,"delta":{"content":"'
_CLOSE = b'"},"logprobs":null,"finish_reason":null}]'

# Pieces of content as they lie in the chunk's bytes: plain, escaped, and bytes orjson refuses.
_PLAIN = st.sampled_from([b"a", b" word", b"}", b",", b":", "é".encode(), "🗼".encode(), "\u2028".encode(),
                          "\uffff".encode(), b"\x7f", b""])
_NASTY = st.sampled_from([
    b"\\n", b'\\"', b"\\\\", b"\\u00e9", b"\\ud83d\\uddfc", b"\\ud800", b"\\x", b'"', b"\\",
    b"\x01", b"\x1f", b"\t", b"\n", b"\r", b"\x00", b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xc0\x80", b"\xe0\x80\x80",
    b"\xf4\x90\x80\x80", b"\xf8\x88\x80\x80\x80", b'"},"logprobs":null,"finish_reason":null}]',
])
_KEYS = st.sampled_from([b'"obfuscation"', b'"ts"', b'"usage"', b'"x"', b'"type"', b'"id"', b'"error"', b'"t\\u0073"'])
# Where orjson's ints end (an int past 2**64 - 1 or below -2**63 is a float) and the scan's do.
_EDGE_INTS = sorted({s * (e + d) for e in (0, 10**18, 10**19, 2**63, 2**64) for d in (-1, 0, 1) for s in (1, -1)})
_INTS = st.one_of(st.sampled_from(_EDGE_INTS), st.integers(-(10**6), 10**6), st.integers(-(2**65), 2**65))


def _text(pieces: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    return st.lists(pieces, max_size=3).map(b"".join)


# The last member's value as it changes from chunk to chunk: an int, a plain string.
_FRESH = st.one_of(_INTS.map(lambda i: str(i).encode()), _text(_PLAIN).map(lambda t: b'"' + t + b'"'))
# Now and then anything.
_ANY_VALUE = st.one_of(
    _FRESH,
    st.sampled_from(BAD_VALUES + GOOD_VALUES + [b'"error"', b'{"total_tokens":3}']),
    st.floats(allow_nan=False).map(lambda f: repr(f).encode()),
    _text(_NASTY).map(lambda t: b'"' + t + b'"'),
)


def _event(head: bytes, content: bytes, members: list[tuple[bytes, bytes]], end: bytes = b"}\n\n") -> bytes:
    return b"data: {" + head + _OPEN + content + _CLOSE + b"".join(b"," + k + b":" + v for k, v in members) + end


@st.composite
def _stream(draw: st.DrawFn) -> list[bytes]:
    """OpenAI-like usual chunks (a role chunk, then a run of content chunks whose members
    after the choice repeat, or change only in their last value), mutated at a few places:
    content with escapes or bytes orjson refuses, odd last values, other members, another
    head, no ``}\\n\\n``, a general event, a \\r …"""
    head = draw(st.sampled_from(_HEADS))
    members = draw(st.sampled_from([
        [], [(b'"obfuscation"', b'"xY3"')], [(b'"ts"', b"1795708122060440546")], [(b'"x"', b"1"), (b'"ts"', b"2")],
        [(b'"usage"', b"null"), (b'"obfuscation"', b'"ab"')],
    ]))
    fresh = draw(st.booleans()) and bool(members)
    count = draw(st.integers(4, 40))
    mutations = draw(st.dictionaries(st.integers(1, count - 1), st.integers(0, 16), max_size=6))
    events = [_event(head, b"", members).replace(b'"delta":{"content":""}', b'"delta":{"role":"assistant","content":""}')]
    for i in range(1, count):
        if fresh and members:
            members = [*members[:-1], (members[-1][0], draw(_FRESH))]
        content = draw(_text(_PLAIN))
        raw_head, end = head, b"}\n\n"
        mutation = mutations.get(i)
        if mutation is None:
            pass
        elif mutation < 4:
            content = draw(_text(_PLAIN)) + draw(_NASTY) + draw(_text(_PLAIN))
        elif mutation < 7:
            members = [*members[:-1], (members[-1][0] if members else draw(_KEYS), draw(_ANY_VALUE))]
        elif mutation < 8:
            members = [*members, (draw(_KEYS), draw(_ANY_VALUE))][-3:]
        elif mutation < 9:
            members = [(draw(_KEYS), draw(_ANY_VALUE))]
        elif mutation < 10:
            members = []
        elif mutation < 11:
            raw_head = head.replace(b'"created":1764', b'"created":1765')
        elif mutation < 12:
            end = draw(st.sampled_from([b"\n\n", b" }\n\n", b"}\n", b"}\r\n\r\n", b"}}\n\n", b"}\n\n\n"]))
        raw = _event(raw_head, content, members, end)
        if mutation == 12:
            raw = b":\n" + raw
        elif mutation == 13:
            raw = raw.replace(b'"finish_reason":null', b'"finish_reason":"stop"')
        elif mutation == 14:
            raw = raw.replace(b'"index":0', b'"index":0.0')
        elif mutation == 15:
            raw = draw(st.sampled_from([b"data: [DONE]\n\n", b": keep-alive\n\n", b"data: garbage\n\n"]))
        elif mutation == 16:
            raw = raw.replace(b'"model"', b'"model"\r')
        events.append(raw)
    if draw(st.integers(0, 3)) == 0:
        events.append(_event(head, b"", []).replace(b'"delta":{"content":""}', b'"delta":{}'))
    return events


@needs_scan
@settings(max_examples=1500, deadline=None, database=None)
@given(events=_stream(), cut=st.booleans())
def test_assemble_reads_every_stream_alike_with_and_without_the_scan(events: list[bytes], cut: bool) -> None:
    if cut:
        events[-1] = events[-1][:-1]
    assert_same(*both_ways(events))
    assert_same(*both_ways(tuple(events)))  # type: ignore[arg-type]


def _counting(scan_module: ModuleType) -> tuple[list[int], Any]:
    taken: list[int] = []

    def counted(chunks: Any, n: int, *args: Any) -> Any:
        stop, value = scan_module.scan(chunks, n, *args)
        taken.append(stop - n)
        return stop, value

    return taken, counted


@needs_scan
@pytest.mark.parametrize("after", [
    b"", b',"obfuscation":"%d"', b',"ts":%d', b',"usage":null,"obfuscation":"x%d"', b',"ts":1795708122060%d'
], ids=["none", "obfuscation", "ts", "usage null", "ts in ns"])
def test_the_scan_takes_the_usual_run(after: bytes) -> None:
    """The differential tests would pass with a scan that takes nothing: this one does not."""
    assert _fold_scan is not None
    head = _HEADS[0]
    events = [b"data: {" + head + _OPEN + b"w%d" % i + _CLOSE + (after % i if b"%" in after else after) + b"}\n\n"
              for i in range(200)]
    taken, counted = _counting(_fold_scan)
    saved = assemble_module._scan
    assemble_module._scan = counted
    try:
        result = assemble(PATH, SSE, events)
    finally:
        assemble_module._scan = saved
    assert sum(taken) >= 190
    assert_same(result, both_ways(events)[1])
    assert result.reply is not None
    assert result.reply["choices"][0]["message"]["content"] == "".join(f"w{i}" for i in range(200))
