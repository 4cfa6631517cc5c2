"""proxy.assemble: every stream shape folds to its unstreamed object, however
its bytes were split and however badly the stream ends."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy import assemble as assemble_module
from proxy.assemble import Assembled, assemble, reply_text, usage_tokens
from proxy.render import render_recording
from proxy.sse import EventSplitter
from tests.shapes import (
    CHAT_MIDSTREAM_ERROR,
    CHAT_TRUNCATED,
    EDGES,
    RESPONSES_CUT,
    SHAPES,
    Edge,
    Shape,
    sse_data,
    stream_body,
)

SSE = "text/event-stream"


@pytest.fixture(scope="module", autouse=True, params=["c_scan", "python_loop"])
def fold_scan(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test here runs twice: with the C scan of a run of usual chunks, and with the
    pure-Python loop it stands in for (as where proxy._fold_scan was not built). Module-scoped,
    as hypothesis wants, and put back as it was afterwards."""
    saved = assemble_module._scan
    if request.param == "c_scan":
        if saved is None:
            pytest.skip("proxy._fold_scan is not built")
        yield
        return
    assemble_module._scan = None
    try:
        yield
    finally:
        assemble_module._scan = saved


ALL_SHAPES = list(SHAPES.values())
CHAT = SHAPES["chat_simple"]
RESPONSES = SHAPES["responses_text"]
# One shape per API, for the tests that vary the framing rather than the shape.
ONE_PER_API = [CHAT, SHAPES["completions"], RESPONSES]
SERVER_ERROR = {"message": "Upstream overloaded", "type": "server_error", "param": None, "code": None}


def by_name(shape: Shape | Edge) -> str:
    return shape.name


def resplit(body: bytes, cuts: list[int]) -> list[bytes]:
    """Feed ``body`` to an EventSplitter in pieces cut at ``cuts``, as the relay
    would receive it across reads, and return the events it makes."""
    splitter = EventSplitter()
    events: list[bytes] = []
    start = 0
    for cut in [*sorted(set(cuts)), len(body)]:
        events += splitter.feed(body[start:cut])
        start = cut
    return events + splitter.flush()


def data_of(event: bytes) -> Any:
    """The JSON of an event's (single) data line."""
    line = next(x for x in event.split(b"\n") if x.startswith(b"data: "))
    return orjson.loads(line[len(b"data: "):])


def assemble_sse(shape: Shape | Edge, events: list[bytes]) -> Assembled:
    return assemble(shape.path, SSE, events)


# --- every shape, every split --------------------------------------------------------------

@pytest.mark.parametrize("shape", ALL_SHAPES, ids=by_name)
def test_stream_assembles_to_the_unstreamed_object(shape: Shape) -> None:
    result = assemble_sse(shape, shape.events)
    assert result.reply == shape.full
    assert result.notes == []


@pytest.mark.parametrize("shape", ALL_SHAPES, ids=by_name)
@settings(max_examples=15, deadline=None, database=None)
@given(data=st.data())
def test_any_split_of_the_bytes_gives_the_same_events_and_reply(shape: Shape, data: st.DataObject) -> None:
    body = stream_body(shape)
    cuts = data.draw(st.lists(st.integers(0, len(body)), max_size=30), label="cuts")
    chunks = resplit(body, cuts)
    assert b"".join(chunks) == body
    assert chunks == shape.events
    assert assemble_sse(shape, chunks).reply == shape.full


@pytest.mark.parametrize("shape", ONE_PER_API, ids=by_name)
def test_one_byte_at_a_time_splits_inside_every_utf8_character(shape: Shape) -> None:
    body = stream_body(shape)
    assert any(b >= 0x80 for b in body), "the shape should carry multi-byte characters"
    chunks = resplit(body, list(range(len(body))))
    assert chunks == shape.events
    assert assemble_sse(shape, chunks) == Assembled(shape.full, [])


@pytest.mark.parametrize("eol", [b"\r\n", b"\r"], ids=["crlf", "cr"])
@pytest.mark.parametrize("shape", ALL_SHAPES, ids=by_name)
def test_crlf_and_cr_line_ends(shape: Shape, eol: bytes) -> None:
    body = stream_body(shape).replace(b"\n", eol)
    chunks = resplit(body, [len(body) // 3, len(body) // 2])
    assert len(chunks) == len(shape.events)
    assert assemble_sse(shape, chunks) == Assembled(shape.full, [])


# --- valid SSE that is not OpenAI's usual framing: no notes ------------------------------------

@pytest.mark.parametrize("shape", ONE_PER_API, ids=by_name)
def test_data_without_the_space(shape: Shape) -> None:
    events = [e.replace(b"data: ", b"data:").replace(b"event: ", b"event:") for e in shape.events]
    assert assemble_sse(shape, events) == Assembled(shape.full, [])


@pytest.mark.parametrize("shape", ONE_PER_API, ids=by_name)
def test_multi_line_data(shape: Shape) -> None:
    def spread(event: bytes) -> bytes:
        if event.endswith(b"[DONE]\n\n"):
            return event
        head = b"".join(line + b"\n" for line in event.split(b"\n") if line.startswith(b"event:"))
        pretty = orjson.dumps(data_of(event), option=orjson.OPT_INDENT_2)
        return head + b"".join(b"data: " + line + b"\n" for line in pretty.split(b"\n")) + b"\n"

    events = [spread(e) for e in shape.events]
    assert sum(e.count(b"\ndata: ") for e in events) > 3 * len(events)
    assert assemble_sse(shape, events) == Assembled(shape.full, [])


@pytest.mark.parametrize("shape", ONE_PER_API, ids=by_name)
def test_keep_alive_comments_between_and_inside_events(shape: Shape) -> None:
    events = [b": OPENROUTER PROCESSING\n\n"]
    for e in shape.events:
        events += [b": ping - 2026-11-26 06:00:00\n" + e, b":\n\n"]
    assert assemble_sse(shape, events) == Assembled(shape.full, [])


def test_the_fold_is_chosen_by_the_events_before_the_path() -> None:
    assert assemble("/openai/deployments/x/chat", SSE, CHAT.events).reply == CHAT.full
    assert assemble("/v1/chat/completions", SSE, RESPONSES.events).reply == RESPONSES.full
    completions = SHAPES["completions"]
    assert assemble("/v1/responses", SSE, completions.events).reply == completions.full


def test_content_type_parameters_are_ignored() -> None:
    assert assemble(CHAT.path, "Text/Event-Stream; charset=utf-8", CHAT.events).reply == CHAT.full


# --- chat details --------------------------------------------------------------------------------

def test_parallel_tool_call_fragments_merge_by_index_even_interleaved() -> None:
    shape = SHAPES["chat_tools"]
    body_events = shape.events[:-4]  # the deltas, without finish, usage, [DONE]
    head, rest = body_events[0], body_events[1:]

    def call_index(event: bytes) -> int:
        return int(data_of(event)["choices"][0]["delta"]["tool_calls"][0]["index"])

    first = [e for e in rest if call_index(e) == 0]
    second = [e for e in rest if call_index(e) == 1]
    # The second call opens before the first finishes, then they alternate.
    interleaved = [head, second[0]]
    for a, b in zip(first, second[1:], strict=False):
        interleaved += [a, b]
    interleaved += first[len(second) - 1:] + second[len(first) + 1:]
    assert sorted(interleaved) == sorted(body_events)
    result = assemble_sse(shape, interleaved + shape.events[-4:])
    assert result == Assembled(shape.full, [])


def test_tool_calls_without_index_are_placed_by_id() -> None:
    def chunk(fragment: dict[str, Any]) -> bytes:
        return sse_data({"id": "c", "object": "chat.completion.chunk",
                         "choices": [{"index": 0, "delta": {"tool_calls": [fragment]}, "finish_reason": None}]})

    events = [
        chunk({"id": "call_a", "type": "function", "function": {"name": "f", "arguments": '{"x"'}}),
        chunk({"function": {"arguments": ": 1}"}}),
        chunk({"id": "call_b", "type": "function", "function": {"name": "g", "arguments": "{}"}}),
        # A server that repeats id and name in every fragment.
        chunk({"id": "call_a", "type": "function", "function": {"name": "f", "arguments": ""}}),
    ]
    message = assemble(CHAT.path, SSE, events).reply["choices"][0]["message"]  # type: ignore[index]
    assert message["tool_calls"] == [
        {"id": "call_a", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}},
        {"id": "call_b", "type": "function", "function": {"name": "g", "arguments": "{}"}},
    ]
    assert message["content"] is None


def test_usage_chunk_with_null_choices() -> None:
    edge = EDGES["chat_usage_null_choices"]
    assert b'"choices":null' in edge.events[-2]
    assert assemble_sse(edge, edge.events) == Assembled(edge.reply, [])


def test_extra_fields_are_kept_and_obfuscation_is_dropped() -> None:
    shape = SHAPES["chat_extra_fields"]
    assert all(b'"obfuscation"' in e for e in shape.events[:-1])
    reply = assemble_sse(shape, shape.events).reply
    assert reply is not None
    assert reply["provider"] == "DeepSeek"
    assert reply["service_tier"] == "default"
    assert reply["choices"][0]["native_finish_reason"] == "stop"
    assert reply["choices"][0]["message"]["reasoning_content"].startswith("The user asks")
    assert "obfuscation" not in reply


# --- errors mid-stream ------------------------------------------------------------------------------

@pytest.mark.parametrize("edge", list(EDGES.values()), ids=by_name)
def test_edge_streams_assemble_what_arrived(edge: Edge) -> None:
    result = assemble_sse(edge, edge.events)
    assert result.reply == edge.reply
    assert bool(result.notes) == (edge is CHAT_TRUNCATED)


def test_midstream_error_keeps_the_partial_answer() -> None:
    reply = assemble_sse(CHAT_MIDSTREAM_ERROR, CHAT_MIDSTREAM_ERROR.events).reply
    assert reply is not None
    assert reply["choices"][0]["message"]["content"] == "Hello! How"
    assert reply["error"]["type"] == "server_error"


def test_error_event_in_a_chat_stream() -> None:
    events = CHAT.events[:3] + [b"event: error\ndata: " + orjson.dumps({"error": SERVER_ERROR}) + b"\n\n"]
    reply = assemble_sse(CHAT, events).reply
    assert reply is not None
    assert reply["error"] == SERVER_ERROR
    assert reply["choices"][0]["message"]["content"] == "Hello!"


def test_a_stream_that_is_only_an_error() -> None:
    assert assemble_sse(CHAT, [sse_data({"error": SERVER_ERROR})]) == Assembled({"error": SERVER_ERROR}, [])


def test_error_chunk_that_also_finishes_a_choice() -> None:
    # OpenRouter sends the error together with finish_reason "error".
    last = {"id": "gen-1", "object": "chat.completion.chunk", "error": SERVER_ERROR,
            "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}]}
    reply = assemble_sse(CHAT, CHAT.events[:3] + [sse_data(last)]).reply
    assert reply is not None
    assert reply["error"] == SERVER_ERROR
    assert reply["choices"][0]["finish_reason"] == "error"


def test_responses_failed_is_the_reply() -> None:
    final = dict(RESPONSES.full, status="failed", error={"code": "server_error", "message": "boom"})
    failed = b"event: response.failed\ndata: " + orjson.dumps(
        {"type": "response.failed", "sequence_number": 99, "response": final}) + b"\n\n"
    assert assemble_sse(RESPONSES, RESPONSES.events[:-1] + [failed]) == Assembled(final, [])


# --- Responses streams cut short ---------------------------------------------------------------------

def _until_first_done(shape: Shape) -> list[bytes]:
    """The events before anything finishes: openings and deltas."""
    events = []
    for e in shape.events:
        if b".done\n" in e:
            break
        events.append(e)
    return events


def test_responses_cut_rebuilds_the_text() -> None:
    reply = assemble_sse(RESPONSES_CUT, RESPONSES_CUT.events).reply
    assert reply is not None
    assert reply["status"] == "in_progress"
    assert reply["output"][0]["content"][0]["text"] == "The Eiffel Tower is"


def test_responses_cut_rebuilds_function_call_arguments() -> None:
    shape = SHAPES["responses_tool"]
    result = assemble_sse(shape, _until_first_done(shape))
    assert result.notes == []
    assert result.reply is not None
    (item,) = result.reply["output"]
    assert item["type"] == "function_call"
    assert item["status"] == "in_progress"
    assert item["arguments"] == shape.full["output"][0]["arguments"]
    assert item["name"] == "get_weather"


def test_responses_cut_rebuilds_a_refusal() -> None:
    shape = SHAPES["responses_refusal"]
    reply = assemble_sse(shape, _until_first_done(shape)).reply
    assert reply is not None
    assert reply["output"][0]["content"] == [{"type": "refusal", "refusal": "I can't help with that."}]
    assert reply_text(reply) == shape.text


def test_responses_cut_after_items_finished_keeps_the_finished_items() -> None:
    # Everything but response.completed.
    reply = assemble_sse(RESPONSES, RESPONSES.events[:-1]).reply
    assert reply is not None
    assert reply["status"] == "in_progress"
    assert reply["output"] == RESPONSES.full["output"]


def test_responses_deltas_without_their_opening_events() -> None:
    deltas = [e for e in RESPONSES.events if b"output_text.delta" in e]
    reply = assemble_sse(RESPONSES, deltas).reply
    assert reply is not None
    (item,) = reply["output"]
    assert item["id"] == "msg_text000000000000009"
    assert item["content"][0]["text"] == "The Eiffel Tower is in Paris. 🗼"


def test_unread_response_events_are_not_noted() -> None:
    summary = b"event: response.reasoning_summary_text.delta\ndata: " + orjson.dumps(
        {"type": "response.reasoning_summary_text.delta", "sequence_number": 3, "delta": "x"}) + b"\n\n"
    events = RESPONSES.events[:2] + [summary] + RESPONSES.events[2:]
    assert assemble_sse(RESPONSES, events) == Assembled(RESPONSES.full, [])


# --- malformed input: noted, never fatal --------------------------------------------------------------

def test_non_json_data_is_noted_and_skipped() -> None:
    events = CHAT.events[:2] + [b"data: garbage\n\n"] + CHAT.events[2:]
    assert assemble_sse(CHAT, events) == Assembled(CHAT.full, ["chunk 2: data is not JSON: 'garbage'"])


def test_data_that_is_json_but_not_an_object() -> None:
    events = CHAT.events[:2] + [b"data: [1, 2]\n\n"] + CHAT.events[2:]
    result = assemble_sse(CHAT, events)
    assert result.reply == CHAT.full
    assert result.notes == ["chunk 2: data is not a JSON object: '[1, 2]'"]


def test_unknown_event_type_in_a_chat_stream() -> None:
    events = CHAT.events[:2] + [b"event: ping\ndata: {}\n\n"] + CHAT.events[2:]
    result = assemble_sse(CHAT, events)
    assert result.reply == CHAT.full
    assert result.notes == ["chunk 2: unknown event type 'ping' ignored"]


def test_unknown_event_type_in_a_responses_stream() -> None:
    odd = b'event: vendor.progress\ndata: {"type":"vendor.progress","sequence_number":2}\n\n'
    result = assemble_sse(RESPONSES, RESPONSES.events[:2] + [odd] + RESPONSES.events[2:])
    assert result.reply == RESPONSES.full
    assert result.notes == ["chunk 2: unknown event type 'vendor.progress' ignored"]


def test_unknown_field_line() -> None:
    events = [b"retry: 10\nbogus\n" + CHAT.events[0], *CHAT.events[1:]]
    result = assemble_sse(CHAT, events)
    assert result.reply == CHAT.full
    assert result.notes == ["chunk 0: unknown field line 'bogus'"]


def test_invalid_utf8_is_replaced_and_noted() -> None:
    events = list(CHAT.events)
    assert b'"content":"Hello"' in events[1]
    events[1] = events[1].replace(b'"content":"Hello"', b'"content":"Hell\xff"')
    result = assemble_sse(CHAT, events)
    assert result.reply is not None
    assert result.reply["choices"][0]["message"]["content"].startswith("Hell\ufffd!")
    assert result.notes == ["chunk 1: invalid UTF-8 replaced with U+FFFD"]


def test_genuine_replacement_character_is_not_noted() -> None:
    events = [e.replace(b"Hello", "Hell\ufffd".encode()) for e in CHAT.events]
    assert assemble_sse(CHAT, events).notes == []


def test_truncated_final_event() -> None:
    result = assemble_sse(CHAT_TRUNCATED, CHAT_TRUNCATED.events)
    assert result.reply == CHAT_TRUNCATED.reply
    n = len(CHAT_TRUNCATED.events) - 1
    assert result.notes[0] == f"chunk {n}: event cut short (no blank line at the end of the stream)"
    assert result.notes[1].startswith(f"chunk {n}: data is not JSON: ")


def test_final_event_missing_only_its_blank_line_still_counts() -> None:
    events = CHAT.events[:-1]  # no [DONE]
    events[-1] = events[-1].rstrip(b"\n")
    result = assemble_sse(CHAT, events)
    assert result.reply == CHAT.full
    assert result.notes == [f"chunk {len(events) - 1}: event cut short (no blank line at the end of the stream)"]


def test_data_after_done_is_ignored() -> None:
    events = CHAT.events + [sse_data({"choices": [{"index": 0, "delta": {"content": "late"}}]})]
    result = assemble_sse(CHAT, events)
    assert result.reply == CHAT.full
    assert result.notes == [f"chunk {len(CHAT.events)}: 1 event(s) with data after [DONE] ignored"]


def test_wrongly_typed_json_is_noted_not_raised() -> None:
    events = [
        sse_data({"object": "chat.completion.chunk", "choices": [{"index": [0], "delta": {"content": "x"}}]}),
        sse_data({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": 5}}]}),
        sse_data({"object": "chat.completion.chunk", "choices": 7}),
        *CHAT.events,
    ]
    result = assemble_sse(CHAT, events)
    assert result.reply is not None
    assert result.reply["choices"][0]["message"]["content"].startswith("Hello!")
    assert [n.split(":")[0] for n in result.notes] == ["chunk 0", "chunk 2"]


def test_unknown_shape_has_no_reply_and_no_note() -> None:
    events = [sse_data({"tokens": ["a"]}), b"data: [DONE]\n\n"]
    assert assemble("/v1/audio/speech", SSE, events) == Assembled(None, [])


def test_empty_stream() -> None:
    assert assemble(CHAT.path, SSE, []) == Assembled(None, [])


_KEYS = st.sampled_from([
    "choices", "delta", "index", "content", "refusal", "tool_calls", "function", "function_call", "arguments",
    "name", "id", "type", "logprobs", "text", "usage", "object", "error", "response", "output", "output_index",
    "content_index", "item", "part", "finish_reason", "message", "role", "sequence_number",
])
_SCALARS = (
    st.none() | st.booleans() | st.integers(-2, 3) | st.floats(allow_nan=False)
    | st.sampled_from(["chat.completion.chunk", "text_completion", "response.output_text.delta",
                       "response.output_item.added", "response.content_part.added", "response.refusal.done",
                       "response.function_call_arguments.delta", "response.completed", "error", "", "x"])
)
_JSON = st.recursive(
    _SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=4), max_leaves=16
)
_EVENT = st.tuples(
    st.sampled_from([None, "error", "message", "response.created", "response.output_text.delta"]),
    st.dictionaries(_KEYS, _JSON, max_size=5),
)


@settings(max_examples=150, deadline=None, database=None)
@given(events=st.lists(_EVENT, max_size=8), path=st.sampled_from(["/v1/chat/completions", "/v1/completions",
                                                                 "/v1/responses", "/v1/other"]))
def test_arbitrary_json_events_never_raise(events: list[tuple[str | None, dict[str, Any]]], path: str) -> None:
    raw = [(b"event: " + name.encode() + b"\n" if name else b"") + sse_data(obj) for name, obj in events]
    result = assemble(path, SSE, raw)
    reply_text(result.reply)
    usage_tokens(result.reply)
    render_recording({"reply": result.reply})


@settings(max_examples=150, deadline=None, database=None)
@given(body=st.binary(max_size=200), content_type=st.sampled_from([SSE, "application/json", None]))
def test_arbitrary_bytes_never_raise(body: bytes, content_type: str | None) -> None:
    assemble(CHAT.path, content_type, resplit(body, []) if content_type == SSE else [body])


# --- bodies that are not streams -----------------------------------------------------------------------

@pytest.mark.parametrize("shape", ALL_SHAPES, ids=by_name)
def test_json_body_is_the_reply(shape: Shape) -> None:
    body = orjson.dumps(shape.full)
    assert assemble(shape.path, "application/json", [body]) == Assembled(shape.full, [])


def test_json_body_in_several_chunks() -> None:
    body = orjson.dumps(CHAT.full)
    assert assemble(CHAT.path, "application/json", [body[:10], body[10:]]).reply == CHAT.full


def test_upstream_error_body_is_the_reply() -> None:
    body = orjson.dumps({"error": SERVER_ERROR})
    assert assemble(CHAT.path, "application/json; charset=utf-8", [body]) == Assembled({"error": SERVER_ERROR}, [])


def test_non_json_body() -> None:
    result = assemble(CHAT.path, "text/html", [b"<html>502 Bad Gateway</html>"])
    assert result == Assembled(None, ["body is not JSON: b'<html>502 Bad Gateway</html>'"])


def test_json_body_that_is_not_an_object() -> None:
    assert assemble(CHAT.path, "application/json", [b"[1]"]) == Assembled(None, ["body is JSON but not an object: b'[1]'"])


@pytest.mark.parametrize("chunks", [[], [b""], [b"  \n"]], ids=["none", "empty", "blank"])
def test_empty_body(chunks: list[bytes]) -> None:
    assert assemble(CHAT.path, "application/json", chunks) == Assembled(None, [])


def test_event_stream_under_a_wrong_content_type() -> None:
    result = assemble(CHAT.path, None, [stream_body(CHAT)])
    assert result == Assembled(CHAT.full, ["body is an event stream sent as None"])


# --- usage_tokens and reply_text ------------------------------------------------------------------------

EXPECTED_TOKENS = {
    "chat_simple": (19, 8),
    "chat_n2": (23, 9),
    "chat_refusal": (31, 9),
    "chat_tools": (64, 9),
    "chat_function_call": (58, 4),
    "chat_logprobs": (15, 5),
    "chat_extra_fields": (12, 13),
    "completions": (4, 11),
    "responses_text": (27, 7),
    "responses_tool": (52, 5),
    "responses_refusal": (18, 6),
}


def test_every_shape_has_expected_token_counts() -> None:
    assert set(EXPECTED_TOKENS) == set(SHAPES)


@pytest.mark.parametrize("shape", ALL_SHAPES, ids=by_name)
def test_usage_tokens(shape: Shape) -> None:
    assert usage_tokens(shape.full) == EXPECTED_TOKENS[shape.name]
    assert usage_tokens(assemble_sse(shape, shape.events).reply) == EXPECTED_TOKENS[shape.name]


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (None, (None, None)),
        ({}, (None, None)),
        ({"usage": None}, (None, None)),
        ({"usage": {"prompt_tokens": True, "completion_tokens": "7"}}, (None, None)),
        ({"usage": {"prompt_tokens": None, "input_tokens": 3, "output_tokens": 4}}, (3, 4)),
    ],
)
def test_usage_tokens_tolerates_odd_usage(reply: dict[str, Any] | None, expected: tuple[int | None, int | None]) -> None:
    assert usage_tokens(reply) == expected


@pytest.mark.parametrize("shape", ALL_SHAPES, ids=by_name)
def test_reply_text(shape: Shape) -> None:
    assert reply_text(shape.full) == shape.text
    assert reply_text(assemble_sse(shape, shape.events).reply) == shape.text


def test_reply_text_of_odd_replies() -> None:
    assert reply_text(None) == ""
    assert reply_text({"error": SERVER_ERROR}) == ""
    parts = {"choices": [{"message": {"content": [{"type": "text", "text": "a"}, {"type": "image_url"}]}}, None]}
    assert reply_text(parts) == "a"
    assert "tool" not in reply_text(SHAPES["chat_tools"].full)


def test_negative_content_index_is_not_an_index() -> None:
    ev = b"event: response.output_text.delta\ndata: " + orjson.dumps(
        {"type": "response.output_text.delta", "delta": "x", "content_index": -1, "output_index": 0}
    ) + b"\n\n"
    result = assemble("/v1/responses", "text/event-stream", [ev])
    assert result.reply is not None


# --- the fast paths read every stream as the general path does ------------------------------------
#
# assemble() takes the usual one-line ``data:`` event on fast paths: the chunk read whole, or
# only what follows the top-level members it shares byte for byte with the chunks before it,
# or only the content string of OpenAI's usual choice. A comment line in front of an event
# means nothing to SSE but sends it down the general path (event parser, general fold), so
# each stream below is assembled both ways and must come out the same, notes included.


def general(events: list[bytes]) -> list[bytes]:
    return [b":\n" + e for e in events]


def same(a: Assembled, b: Assembled) -> bool:
    """Equal down to key order and number types (``0`` is not ``0.0`` in a reply)."""
    return repr(a) == repr(b)


class Members(list[tuple[str, Any]]):
    """A JSON object written member by member, so that a key may repeat."""


def write_json(value: Any, spelled: dict[str, bytes] | None = None) -> bytes:
    """``value`` as compact JSON, OpenAI's layout; ``Members`` keep their repeats, and
    ``spelled`` writes some keys another way (``"\\u0069d"`` for ``"id"``)."""
    if isinstance(value, Members):
        spelled = spelled or {}
        return b"{" + b",".join(
            spelled.get(k, orjson.dumps(k)) + b":" + write_json(v, spelled) for k, v in value
        ) + b"}"
    if isinstance(value, list):
        return b"[" + b",".join(write_json(v, spelled) for v in value) + b"]"
    return orjson.dumps(value)


_TEXT = st.text(alphabet=st.sampled_from(['a', ' ', 'é', '🗼', '"', '\\', '\n', '}', ',', ':', '\ufffd']), max_size=6)
_ODD = st.none() | st.booleans() | st.integers(-1, 2) | st.just(0.0) | _TEXT | st.lists(st.integers(0, 2), max_size=2)
_INDEX = st.sampled_from([0, 0, 0, 0, 1, 0.0, False, None, "0", [0]])
_DELTA = st.one_of(
    st.builds(lambda t: {"content": t}, _TEXT),
    st.builds(lambda t: {"content": t}, _ODD),
    st.builds(lambda t: {"content": t}, _TEXT),
    st.just({"role": "assistant", "content": "", "refusal": None}),
    st.just({}),
    st.builds(lambda t: {"refusal": t}, _TEXT),
    st.builds(lambda t: {"content": None, "reasoning_content": t}, _TEXT),
    st.builds(lambda i, t: {"tool_calls": [{"index": i, "function": {"arguments": t}}]}, st.integers(0, 1), _TEXT),
    st.builds(lambda t: {"content": t, "tool_calls": None}, _TEXT),
    st.dictionaries(_KEYS, _ODD, max_size=2),
    _ODD,
)
_LOGPROBS = st.none() | st.builds(lambda t: {"content": [{"token": t, "logprob": -0.5}], "refusal": None}, _TEXT)


@st.composite
def _choice(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 30)) == 0:
        return draw(_ODD)
    members = Members()
    if draw(st.integers(0, 9)):
        members.append(("index", draw(_INDEX)))
    members.append(("delta", draw(_DELTA)))
    if draw(st.integers(0, 5)):
        members.append(("logprobs", draw(_LOGPROBS) if draw(st.integers(0, 5)) == 0 else None))
    members.append(("finish_reason", draw(st.sampled_from([None, None, None, None, "stop", "length"]))))
    if draw(st.integers(0, 8)) == 0:
        members.append(draw(st.tuples(st.sampled_from(["delta", "index", "text", "native_finish_reason"]), _ODD)))
    return members


_HEADS = [
    Members([("id", "chatcmpl-1"), ("object", "chat.completion.chunk"), ("created", 1764136800),
             ("model", "gpt-4o-mini"), ("service_tier", "default"), ("system_fingerprint", "fp_1")]),
    Members([("id", "chatcmpl-1"), ("object", "chat.completion.chunk"), ("created", 1764136801),
             ("model", "gpt-4o-mini"), ("system_fingerprint", None)]),
    Members([("id", "cmpl-2"), ("object", "text_completion"), ("created", True), ("model", "m")]),
    Members([("id", "chatcmpl-1"), ("created", 1764136800.0), ("usage", None), ("id", "chatcmpl-3")]),
    Members([("provider", "DeepSeek"), ("choices", None), ("error", None)]),
]
_AFTER = st.lists(st.tuples(
    st.sampled_from(["obfuscation", "ts", "usage", "id", "created", "model", "error", "type", "choices", "x"]),
    _ODD | st.just({"prompt_tokens": 3, "completion_tokens": 2}) | st.just({"message": "boom"}),
), max_size=2)


@st.composite
def _chunk(draw: st.DrawFn) -> bytes:
    """One event of a chat-like stream: mostly OpenAI's usual chunks with the same head,
    and now and then anything that could trip a fast path up."""
    kind = draw(st.integers(0, 19))
    if kind == 0:
        return draw(st.sampled_from([b"data: [DONE]\n\n", b": keep-alive\n\n", b"data: garbage\n\n",
                                     b'data: {"id":\n\n', b"data: [1]\n\n", b"event: ping\ndata: {}\n\n",
                                     b'data: {"id":"x",\r"choices":[]}\n\n', b"data: {}\r\n\r\n"]))
    if kind == 1:
        # An event of the general path amid the fast ones.
        return b":\n" + draw(_chunk())
    head = _HEADS[0] if draw(st.integers(0, 5)) else draw(st.sampled_from(_HEADS))
    if kind < 12:
        usual = Members([("index", 0), ("delta", {"content": draw(_TEXT)}), ("logprobs", None), ("finish_reason", None)])
        after = [("obfuscation", draw(_TEXT))] if draw(st.integers(0, 5)) else draw(_AFTER)
        members = Members([*head, ("choices", [usual]), *after])
    else:
        choices = [draw(_choice())] if draw(st.integers(0, 8)) else draw(st.lists(_choice(), max_size=3))
        members = Members([*head, ("choices", choices), *draw(_AFTER)])
    spelled = {"id": b'"\\u0069d"', "choices": b'"\\u0063hoices"'} if draw(st.integers(0, 30)) == 0 else None
    body = write_json(members, spelled)
    if draw(st.integers(0, 30)) == 0:
        body = body.replace(b":", b": ", 1).replace(b',"', b', "', 2)
    if draw(st.integers(0, 30)) == 0:
        body = body.replace("é".encode(), b"\xff")
    return b"data: " + body + b"\n\n"


@settings(max_examples=400, deadline=None, database=None)
@given(
    events=st.lists(_chunk(), max_size=12),
    path=st.sampled_from(["/v1/chat/completions", "/v1/completions", "/v1/responses"]),
    cut=st.booleans(),
)
def test_fast_paths_read_chat_streams_as_the_general_path(events: list[bytes], path: str, cut: bool) -> None:
    if cut and events:
        events[-1] = events[-1][:-1]
    expected = assemble(path, SSE, general(events))
    assert same(assemble(path, SSE, events), expected)
    crlf = [e.replace(b"\n", b"\r\n") for e in events]
    assert same(assemble(path, SSE, crlf), expected)


@pytest.mark.parametrize("shape", ALL_SHAPES + list(EDGES.values()), ids=by_name)
def test_fast_paths_read_every_shape_as_the_general_path(shape: Shape | Edge) -> None:
    assert same(assemble_sse(shape, shape.events), assemble_sse(shape, general(shape.events)))


def _usual(content: str, head: bytes = b'"id":"c","object":"chat.completion.chunk","created":1,"model":"m"',
           after: bytes = b',"obfuscation":"x"') -> bytes:
    return (b'data: {' + head + b',"choices":[{"index":0,"delta":{"content":' + orjson.dumps(content)
            + b'},"logprobs":null,"finish_reason":null}]' + after + b'}\n\n')


FIRST = _usual("")
# The chunks before a run of usual chunks has begun and is ready to learn the members after
# the choice: one to start the content, one to learn the head, two usual content chunks in a
# row to start the run, and the run's first.
LEAD = [FIRST, _usual("0"), _usual("1"), _usual("2"), _usual("3"), _usual("4")]


def _probes(*afters: bytes, end: bytes = b"}\n\n") -> list[bytes]:
    """After LEAD, usual chunks with each of ``afters`` after the choice (and ``end`` after
    that) in a run that has learnt ``"ts"`` as its one member after the choice: five chunks
    before each, as LEAD's last five, should the one before have left the run."""
    events = list(LEAD)
    for n, after in enumerate(afters):
        events += [_usual(c, after=b',"ts":%d' % (n + i)) for i, c in enumerate("abcde")]
        events.append(_usual("f", after=after)[:-3] + end)
    return [*events, _usual("g", after=b',"ts":7'), _usual("h", after=b',"ts":8')]


TRICKY = {
    # A repeat after the choices replaces the head's value, as orjson reads it.
    "repeated id after": [FIRST, _usual("a"), _usual("b"), _usual("c", after=b',"id":"other"'), _usual("d")],
    "repeated model inside the head": [FIRST, _usual("a"), _usual("b", head=b'"id":"c","model":"m","model":"n"')],
    "escaped key": [FIRST, _usual("a"), _usual("b"), _usual("c", after=b',"\\u0069d":"other"')],
    "the close inside the content": [FIRST, _usual("a"), _usual('"},"logprobs":null,"finish_reason":null}]')],
    "escaped content": [FIRST, _usual("a"), _usual("\\\"\n\u00e9"), _usual("b")],
    "two strings where one belongs": [FIRST, _usual("a"), FIRST.replace(b'"content":""', b'"content":"x","content":"y"')],
    "whitespace before the end": [FIRST, _usual("a"), _usual("b", after=b' '), _usual("c", after=b', "ts" : 1 ')],
    "error after the head": [FIRST, _usual("a"), _usual("b", after=b',"error":{"message":"boom"}'), _usual("c")],
    "type error after the head": [FIRST, _usual("a"), _usual("b", after=b',"type":"error","message":"x"')],
    "usage after the head": [FIRST, _usual("a"), _usual("b", after=b',"usage":{"total_tokens":3}'), _usual("c")],
    "choices again after": [FIRST, _usual("a"), _usual("b", after=b',"choices":[]'), _usual("c")],
    "empty members after": [FIRST, _usual("a"), _usual("b", after=b",")],
    "head changes": [FIRST, _usual("a"), _usual("b", head=b'"id":"c","created":2'), _usual("c", head=b'"id":"c","created":2'),
                     _usual("d")],
    "index of another type": [FIRST, _usual("a"), _usual("b").replace(b'"index":0', b'"index":0.0'), _usual("c"),
                              _usual("d").replace(b'"index":0', b'"index":false')],
    "invalid UTF-8 in the content": [FIRST, _usual("a"), _usual("é").replace("é".encode(), b"\xc3"), _usual("c")],
    "not JSON after the head": [FIRST, _usual("a"), _usual("b", after=b',"ts":1,}')],
    "no end after the choices": [FIRST, _usual("a"), _usual("b"), _usual("c", after=b"")[:-3] + b"\n\n",
                                 _usual("d", after=b"")[:-3] + b' \n\n', _usual("e")],
    "members after without a comma": [FIRST, _usual("a"), _usual("b"), _usual("c", after=b' "ts":1')],
    "content not a string": [FIRST, _usual("a"), _usual("b"), _usual("zz").replace(b'"zz"', b'[1]'),
                             _usual("zz").replace(b'"zz"', b'7'), _usual("d")],
    "choice with one more key": [FIRST, _usual("a"), _usual("b"),
                                 _usual("c").replace(b'null}]', b'null,"stop_reason":7}]'), _usual("d")],
    "general event between": [FIRST, _usual("a"), _usual("b"), b":\n" + _usual("c", head=b'"id":"c","model":"n"'),
                              _usual("d")],
    "one \\r in the stream": [FIRST, _usual("a"), _usual("b", after=b',\r"ts":1'), _usual("c")],
    "content first, role later": [_usual("a"), _usual("b"), FIRST, _usual("c")],
    # A run of usual chunks (from LEAD's last chunk on) reads the members after the choice
    # once while they repeat, and only the last value while the bytes before it repeat.
    "same members after, then others": [*LEAD, *[_usual(c, after=b',"ts":1,"x":null') for c in "abc"],
                                        _usual("d", after=b',"ts":2,"x":null'), _usual("e", after=b',"ts":2')],
    "one key after, then two": _probes(b',"ts":3,"ts":null', b',"ts":4,"x":1', b',"ts":5,"obfuscation":"q"'),
    "one key after, then a null": _probes(b',"ts":null'),
    "one key after, a list, a number, the list again": [*LEAD, _usual("a", after=b',"ts":[1]'),
                                                         _usual("b", after=b',"ts":2'), _usual("c", after=b',"ts":[1]'),
                                                         _usual("d", after=b',"ts":3'), _usual("e", after=b',"ts":[1]')],
    "one key after, then a list and an object": _probes(b',"ts":[2]', b',"ts":{"a":[]}', b',"ts":"3"'),
    # orjson reads 1024 nested lists alone, not as a member of an object.
    "one key after, then orjson's depth limit": _probes(b',"ts":' + b"[" * 1024 + b"]" * 1024,
                                                        b',"ts":' + b"[" * 1023 + b"]" * 1023),
    "one key after, then not one value": _probes(b',"ts":3}', b',"ts":4,', b',"ts":', b',"ts":5 "x"', b',"ts":6]'),
    "one key after, then no end": _probes(b',"ts":56', b',"ts":5 ', end=b"\n\n"),
    "one key after, then spelled otherwise": _probes(b',"ts": 2 ', b',"t\\u0073":3', b',"tsx":3', b',"t":3'),
    "one key after, then numbers orjson may not read": _probes(
        b',"ts":18446744073709551616', b',"ts":-9223372036854775809', b',"ts":1e400', b',"ts":-0.0', b',"ts":01',
        b',"ts":NaN', b',"ts":true', b',"ts":1.5E+2'),
    "one key after, then a line end in it": _probes(b',"ts":2\n', b',"ts":2\n\n'),
    "one key after, then invalid UTF-8": _probes(b',"ts":"\xff"', b',"ts":"\xed\xa0\x80"', b',"ts":"\x00"'),
    "one key after, then the close in it": _probes(b',"ts":"},\\"logprobs\\":null,\\"finish_reason\\":null}]"'),
    # OpenAI's chunks with stream_options.include_usage: "usage":null, then the obfuscation.
    "usage null, then the last value changes": [
        *LEAD, *[_usual(c, after=b',"usage":null,"obfuscation":"%s"' % (c.encode() * 2)) for c in "abcd"],
        _usual("e", after=b',"usage":{"total_tokens":3},"obfuscation":"e"'), _usual("f", after=b',"usage":null,"o":"f"'),
        _usual("g", after=b',"usage":null,"obfuscation":"g","x":1'), _usual("h", after=b',"usage":null,"obfuscation":7'),
        _usual("i", after=b',"usage":null,"obfuscation":[7]'), _usual("j", after=b',"usage":null,"obfuscation":null')],
    "repeated keys after, then the last value changes": [
        *LEAD, _usual("a", after=b',"x":2,"ts":1,"ts":2'), _usual("b", after=b',"x":2,"ts":1,"ts":3'),
        _usual("c", after=b',"x":2,"ts":1,"ts":null'), _usual("d", after=b',"ts":1,"x":2,"ts":2'),
        _usual("e", after=b',"ts":1,"x":2,"ts":3'), _usual("f", after=b',"ts":1,"x":2,"ts":2'),
        _usual("g", after=b',"ts":1,"x":2,"ts":4')],
    "last value not as orjson writes it": [
        *LEAD, _usual("a", after=b',"x":1,"ts":1.5E+2'), _usual("b", after=b',"x":1,"ts":2'),
        _usual("c", after=b',"x":1,"ts":"\\u00e9"'), _usual("d", after=b',"x":1,"ts":"e"'),
        _usual("e", after=b',"x":1,"t\\u0073":"f"'), _usual("f", after=b',"x":1,"t\\u0073":"g"'),
        _usual("g", after=b',"x":1,"a\\"b":1'), _usual("h", after=b',"x":1,"a\\"b":2')],
    "a key and colon inside a string after": [
        *LEAD, _usual("a", after=b',"x":"y,\\"ts\\":","ts":1'), _usual("b", after=b',"x":"y,\\"ts\\":","ts":2'),
        _usual("c", after=b',"x":"y,\\"ts\\":3"'), _usual("d", after=b',"x":"y,\\"ts\\":","ts":4')],
    "type after, then an error type": [*LEAD, _usual("a", after=b',"type":"x"'), _usual("b", after=b',"type":"y"'),
                                       _usual("c", after=b',"type":"error"'), _usual("d", after=b',"type":"z"')],
    "usage after, changing": [*LEAD, _usual("a", after=b',"usage":null'), _usual("b", after=b',"usage":{"n":1}'),
                              _usual("c", after=b',"usage":7'), _usual("d", after=b',"usage":8'),
                              _usual("e", after=b',"usage":null')],
    "error after, once seen as one key": [*LEAD, _usual("a", after=b',"x":1'), _usual("b", after=b',"x":2'),
                                          _usual("c", after=b',"error":"boom"'), _usual("d", after=b',"x":3')],
    "obfuscation, then a kept key": [*LEAD, _usual("a", after=b',"obfuscation":"q"'),
                                     _usual("b", after=b',"obfuscation":"qq"'), _usual("c", after=b',"ts":1'),
                                     _usual("d", after=b',"ts":2'), _usual("e", after=b',"obfuscation":"q"')],
}


_AFTER_KEYS = st.sampled_from([b'"ts"', b'"obfuscation"', b'"type"', b'"usage"', b'"error"', b'"id"', b'"choices"',
                                b'"t\\u0073"', b'"a\\"b"'])
_AFTER_VALUES = st.sampled_from([
    b"1", b"2", b"-0", b"1.5", b"null", b"true", b'"x"', b'"\\u0041"', b'"error"', b'"error"', b"[1]", b'{"a":1}',
    b"1 ", b" 1", b"1,", b"1}", b"", b'"x","ts":2', b'"\xff"', b"1e400", b"18446744073709551616", b"01", b"1\n",
    b"[" * 1024 + b"]" * 1024, b"[" * 1023 + b"]" * 1023,
])


@st.composite
def _run(draw: st.DrawFn) -> list[bytes]:
    """LEAD, then mostly usual chunks whose members after the choice now repeat, now change
    only their last value, now change otherwise, by the bytes."""
    events = list(LEAD)
    members = [(b'"ts"', b"0")]
    for _ in range(draw(st.integers(0, 25))):
        kind = draw(st.integers(0, 12))
        if kind == 0:
            events.append(draw(_chunk()))
            continue
        if kind < 4:
            pass
        elif kind < 8:
            members = [*members[:-1], (members[-1][0] if members else b'"ts"', draw(_AFTER_VALUES))]
        elif kind < 9:
            members = [*members[:-1], (draw(_AFTER_KEYS), draw(_AFTER_VALUES))]
        elif kind < 10:
            members = [(draw(_AFTER_KEYS), draw(_AFTER_VALUES))]
        elif kind < 11:
            members = [*members, (draw(_AFTER_KEYS), draw(_AFTER_VALUES))][-3:]
        else:
            members = [(write_json(k), write_json(v)) for k, v in draw(_AFTER)]
        event = _usual(draw(_TEXT), after=b"".join(b"," + k + b":" + v for k, v in members))
        if draw(st.integers(0, 12)) == 0:
            event = event[:-3] + b"\n\n"
        events.append(event)
    return events


@settings(max_examples=300, deadline=None, database=None)
@given(events=_run())
def test_runs_of_usual_chunks_read_as_the_general_path(events: list[bytes]) -> None:
    assert same(assemble(CHAT.path, SSE, events), assemble(CHAT.path, SSE, general(events)))


@pytest.mark.parametrize("events", list(TRICKY.values()), ids=list(TRICKY))
def test_fast_paths_on_streams_made_to_trip_them(events: list[bytes]) -> None:
    result = assemble(CHAT.path, SSE, events)
    assert same(result, assemble(CHAT.path, SSE, general(events)))
    assert result.reply is not None


@settings(max_examples=200, deadline=None, database=None)
@given(events=st.lists(_EVENT, max_size=8), path=st.sampled_from(["/v1/chat/completions", "/v1/completions",
                                                                 "/v1/responses", "/v1/other"]))
def test_fast_paths_read_any_json_events_as_the_general_path(
    events: list[tuple[str | None, dict[str, Any]]], path: str
) -> None:
    raw = [(b"event: " + name.encode() + b"\n" if name else b"") + sse_data(obj) for name, obj in events]
    assert same(assemble(path, SSE, raw), assemble(path, SSE, general(raw)))
