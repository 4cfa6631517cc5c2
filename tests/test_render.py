"""proxy.render: a recording reads as a conversation, whatever it is missing."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.render import render_recording
from tests.shapes import RESPONSES_ERROR, SHAPES


def recording(shape_name: str, body: dict[str, Any], **fields: Any) -> dict[str, Any]:
    shape = SHAPES[shape_name]
    rec: dict[str, Any] = {
        "id": "01JDQ7Z8M4X3V5K2N9P6R1T0AB",
        "started_at": "2026-11-26T06:00:00.123456Z",
        "method": "POST",
        "path": shape.path,
        "query": "",
        "model": body.get("model"),
        "stream": True,
        "key_fingerprint": "3f9a0c1b2d4e",
        "request": {"headers": {"authorization": "[redacted]"}, "body": body},
        "response": {"status": 200, "headers": {"content-type": "text/event-stream"}},
        "outcome": "complete",
        "error": None,
        "ttfb_ms": 41.2,
        "duration_ms": 812.5,
        "reply": shape.full,
    }
    rec.update(fields)
    return rec


def chat_with_tools() -> dict[str, Any]:
    body = dict(SHAPES["chat_tools"].request)
    body["messages"] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [
            {"type": "text", "text": "Weather in Oslo? See the photo."},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 5000}},
        ]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_oslo", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}},
        ]},
        {"role": "tool", "tool_call_id": "call_oslo", "content": '{"temp_c": 3}'},
        {"role": "user", "content": "Now Paris and Tōkyō."},
    ]
    return recording("chat_tools", body)


def test_chat_recording_shows_messages_by_role_with_tool_calls() -> None:
    text = render_recording(chat_with_tools())
    for expected in (
        "[system]\n  Be brief.",
        "[user]\n  Weather in Oslo? See the photo.",
        "[assistant]\n  tool call get_weather [call_oslo]: {\"city\":\"Oslo\"}",
        "[tool call_oslo]\n  {\"temp_c\": 3}",
        "Now Paris and Tōkyō.",
        "tools: get_weather",
    ):
        assert expected in text
    # A data URL is shortened, not dumped.
    assert "[image: data:image/png;base64,AAA" in text
    assert "A" * 200 not in text


def test_chat_recording_shows_the_reply_and_its_tool_arguments() -> None:
    reply = render_recording(chat_with_tools()).split("=== reply ===")[1]
    assert 'tool call get_weather [call_Paris0000000000000001]: {"city": "Paris"}' in reply
    assert 'tool call get_weather [call_Tokyo000000000000002]: {"city": "Tōkyō"}' in reply
    assert "finish_reason: tool_calls" in reply


def test_footer_has_status_outcome_timing_tokens_and_key() -> None:
    footer = render_recording(chat_with_tools()).split("\n---\n")[1]
    assert "status 200" in footer
    assert "outcome complete" in footer
    assert "time to first byte 41.2 ms" in footer
    assert "duration 812.5 ms" in footer
    assert "tokens: prompt 64, completion 9" in footer
    # 9 tokens over the 771.3 ms after the first byte.
    assert "(11.7 tokens/s)" in footer
    assert "key 3f9a0c1b2d4e" in footer


def test_header_names_the_recording() -> None:
    first = render_recording(chat_with_tools()).splitlines()[0]
    assert first == "recording 01JDQ7Z8M4X3V5K2N9P6R1T0AB  POST  /v1/chat/completions  model gpt-4o-mini-2024-07-18  streamed"


def test_chat_reply_with_several_choices_numbers_them() -> None:
    body = SHAPES["chat_n2"].request
    text = render_recording(recording("chat_n2", body))
    assert "[assistant #0]\n  Bonjour le monde." in text
    assert "[assistant #1]\n  Salut à tous ! 👋\n  finish_reason: length" in text


def test_chat_refusal_and_reasoning() -> None:
    refusal = render_recording(recording("chat_refusal", SHAPES["chat_refusal"].request))
    assert "refusal: I'm sorry, I can't help with that." in refusal
    reasoning = render_recording(recording("chat_extra_fields", SHAPES["chat_extra_fields"].request))
    assert "(reasoning) The user asks about France's capital." in reasoning
    assert "Paris is the capital." in reasoning


def test_responses_recording() -> None:
    body = dict(SHAPES["responses_text"].request)
    body["input"] = [
        {"role": "user", "content": [{"type": "input_text", "text": "Where is the Eiffel Tower?"}]},
        {"type": "function_call", "call_id": "call_1", "name": "lookup", "arguments": '{"q":"Eiffel"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "Paris, France"},
    ]
    text = render_recording(recording("responses_text", body, outcome="client_closed", ttfb_ms=100.0,
                                      duration_ms=1100.0))
    for expected in (
        "[instructions]\n  Answer in one sentence.",
        "[user]\n  Where is the Eiffel Tower?",
        'tool call lookup [call_1]: {"q":"Eiffel"}',
        "[tool call_1]\n  Paris, France",
        "[assistant]\n  The Eiffel Tower is in Paris. 🗼",
        "status: completed",
        "outcome client_closed",
        "tokens: prompt 27, completion 7  (7.0 tokens/s)",
    ):
        assert expected in text


def test_responses_tool_call_reply_and_plain_string_input() -> None:
    shape = SHAPES["responses_tool"]
    body = dict(shape.request, input="Weather in Paris?")
    text = render_recording(recording("responses_tool", body))
    assert "[user]\n  Weather in Paris?" in text
    assert 'tool call get_weather [call_Weather000000000010]: {"city":"Paris"}' in text


def test_completions_recording() -> None:
    text = render_recording(recording("completions", SHAPES["completions"].request))
    assert "[prompt]\n  Once upon a time" in text
    assert "[completion #0]\n  , there was a fox" in text
    assert "in a land far away — naïve" in text


def test_a_failed_stream_shows_its_error_and_outcome() -> None:
    rec = recording("responses_text", SHAPES["responses_text"].request, reply=RESPONSES_ERROR.reply,
                    outcome="upstream_closed", error="upstream closed the connection mid-body")
    text = render_recording(rec)
    assert "outcome upstream_closed (upstream closed the connection mid-body)" in text
    assert "error: The server had an error while processing your request. Sorry about that! (server_error)" in text
    assert "status: in_progress" in text


def test_plain_text_only() -> None:
    text = render_recording(chat_with_tools())
    assert "\x1b" not in text
    assert text.endswith("\n")


@pytest.mark.parametrize(
    "rec",
    [
        {},
        {"request": None, "response": None, "reply": None},
        {"request": {"body": "not an object"}, "reply": [], "ttfb_ms": "soon", "duration_ms": True},
        {"request": {"body": {"messages": [None, 3, {"role": None, "content": {"odd": 1}}]}},
         "reply": {"choices": [None, {"message": "text"}], "output": [7, {"type": "web_search_call"}],
                   "usage": {"prompt_tokens": "many"}, "error": {}}},
        {"request": {"body": {"input": [{"type": "reasoning"}], "prompt": [1, 2, 3], "tools": [None, {}]}},
         "reply": {"error": "plain string"}},
    ],
    ids=["empty", "nulls", "wrong-types", "odd-messages", "odd-input"],
)
def test_tolerates_missing_and_odd_fields(rec: dict[str, Any]) -> None:
    text = render_recording(rec)
    assert text.startswith("recording")
    assert "\n=== reply ===\n" in text
    assert "\n---\nstatus ?  outcome ?" in text


def test_empty_recording_says_what_is_missing() -> None:
    text = render_recording({})
    assert "(no request body)" in text
    assert "(no reply)" in text
    assert "tokens" not in text


def test_non_json_request_bodies() -> None:
    text = render_recording({"request": {"body_text": "name=value\nsecond line"}, "reply": None})
    assert "[request body]\n  name=value\n  second line" in text
    binary = render_recording({"request": {"body_b64": "AAEC"}})
    assert "[request body: binary, 4 base64 characters]" in binary


def test_no_tokens_per_second_without_timing() -> None:
    text = render_recording(recording("chat_simple", SHAPES["chat_simple"].request, duration_ms=None))
    assert "tokens: prompt 19, completion 8" in text
    assert "tokens/s" not in text
