"""Scripted OpenAI answers, each both streamed and whole.

Every shape is written once, as a script of what the model produced (the text
pieces, the tool call argument fragments, the finish reason …). Two
generators turn a script into what the API sends: the SSE events of the
streamed answer, laid out like OpenAI's own streams, and the object the same
request returns without ``stream``. The assembler has to get from the first to
the second, and the fake upstream serves both.

Public names:

* :class:`Shape` and :data:`SHAPES` — clean answers, by name.
* :class:`Edge` and the module constants ``CHAT_USAGE_NULL_CHOICES``,
  ``CHAT_MIDSTREAM_ERROR``, ``CHAT_TRUNCATED``, ``RESPONSES_ERROR``,
  ``RESPONSES_CUT`` (also in :data:`EDGES`) — streams that end badly, with
  the reply they should assemble to.
* :func:`stream_body`, :func:`plain_request`, :func:`sse_data`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Any

import orjson

__all__ = [
    "CHAT_MIDSTREAM_ERROR",
    "CHAT_TRUNCATED",
    "CHAT_USAGE_NULL_CHOICES",
    "EDGES",
    "Edge",
    "RESPONSES_CUT",
    "RESPONSES_ERROR",
    "SHAPES",
    "Shape",
    "plain_request",
    "sse_data",
    "stream_body",
]

CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
RESPONSES_PATH = "/v1/responses"
CREATED = 1764136800
DONE = b"data: [DONE]\n\n"


@dataclass(frozen=True)
class Shape:
    """One answer, as the API streams it and as it returns it whole."""

    name: str
    path: str
    request: dict[str, Any]
    """The request body, with ``"stream": True`` (see :func:`plain_request`)."""
    events: list[bytes]
    """The streamed body as raw SSE events, each ending in a blank line."""
    full: dict[str, Any]
    """What the same request returns without ``stream``."""
    text: str
    """The human text of the answer (content, refusals), one piece a line."""


@dataclass(frozen=True)
class Edge:
    """A stream that does not end cleanly, and the reply it should assemble to."""

    name: str
    path: str
    request: dict[str, Any]
    events: list[bytes]
    reply: dict[str, Any]


def stream_body(shape: Shape | Edge) -> bytes:
    """The streamed response body: all events, concatenated."""
    return b"".join(shape.events)


def plain_request(shape: Shape | Edge) -> dict[str, Any]:
    """The request body of the non-streamed variant."""
    return {k: v for k, v in shape.request.items() if k not in ("stream", "stream_options")}


def sse_data(obj: Any) -> bytes:
    """One ``data:`` event holding ``obj`` as JSON."""
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _sse_typed(obj: dict[str, Any]) -> bytes:
    event_type: str = obj["type"]
    return b"event: " + event_type.encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"


def _obfuscation(seed: str) -> str:
    # OpenAI pads every streamed delta with a random ``obfuscation`` string;
    # a hash keeps ours deterministic.
    return hashlib.sha256(seed.encode()).hexdigest()[: 4 + len(seed) % 9]


# --- chat completions ------------------------------------------------------------------

@dataclass(frozen=True)
class _Call:
    id: str
    name: str
    arguments: tuple[str, ...]


@dataclass(frozen=True)
class _Answer:
    """One choice of a chat completion."""

    content: tuple[str, ...] | None = None
    refusal: tuple[str, ...] | None = None
    reasoning: tuple[str, ...] = ()
    """``reasoning_content`` pieces (DeepSeek, vLLM), streamed before the content."""
    tool_calls: tuple[_Call, ...] = ()
    function_call: _Call | None = None
    logprobs: bool = False
    finish_reason: str = "stop"
    choice_extra: tuple[tuple[str, Any], ...] = ()
    """Choice fields outside OpenAI's schema (vLLM's ``stop_reason``): null
    while streaming, set on the finishing chunk."""


@dataclass(frozen=True)
class _ChatScript:
    id: str
    model: str
    answers: tuple[_Answer, ...]
    prompt_tokens: int
    system_fingerprint: str | None = "fp_560af6e559"
    service_tier: str | None = None
    extra: tuple[tuple[str, Any], ...] = ()
    """Top-level fields outside OpenAI's schema (OpenRouter's ``provider``)."""


def _token_logprob(token: str, rank: int) -> dict[str, Any]:
    logprob = -0.0125 * (rank + 1)
    top = [
        {"token": token, "logprob": logprob, "bytes": list(token.encode())},
        {"token": " the", "logprob": logprob - 2.5, "bytes": list(b" the")},
    ]
    return {"token": token, "logprob": logprob, "bytes": list(token.encode()), "top_logprobs": top}


def _chat_steps(a: _Answer) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
    """The deltas of one choice, each with its logprobs, as OpenAI streams them."""
    first: dict[str, Any] = {
        "role": "assistant",
        "content": "" if a.content is not None and not a.tool_calls and a.function_call is None else None,
        "refusal": "" if a.refusal is not None else None,
    }
    steps: list[tuple[dict[str, Any], dict[str, Any] | None]] = [(first, None)]
    for piece in a.reasoning:
        steps.append(({"content": None, "reasoning_content": piece}, None))
    rank = 0
    for piece in a.content or ():
        delta: dict[str, Any] = {"content": piece}
        if a.reasoning:
            delta["reasoning_content"] = None
        lp = {"content": [_token_logprob(piece, rank)], "refusal": None} if a.logprobs else None
        steps.append((delta, lp))
        rank += 1
    for piece in a.refusal or ():
        lp = {"content": None, "refusal": [_token_logprob(piece, rank)]} if a.logprobs else None
        steps.append(({"refusal": piece}, lp))
        rank += 1
    for i, call in enumerate(a.tool_calls):
        head = {"index": i, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}
        if i == 0:
            # OpenAI opens the first call in the role chunk.
            first["tool_calls"] = [head]
        else:
            steps.append(({"tool_calls": [head]}, None))
        for fragment in call.arguments:
            steps.append(({"tool_calls": [{"index": i, "function": {"arguments": fragment}}]}, None))
    if a.function_call is not None:
        first["function_call"] = {"name": a.function_call.name, "arguments": ""}
        for fragment in a.function_call.arguments:
            steps.append(({"function_call": {"arguments": fragment}}, None))
    return steps


def _completion_tokens(pieces: list[tuple[str, ...] | None]) -> int:
    return sum(len(p) for p in pieces if p)


def _chat_usage(s: _ChatScript) -> dict[str, Any]:
    completion = 0
    reasoning = 0
    for a in s.answers:
        completion += _completion_tokens([a.content, a.refusal, a.reasoning])
        completion += sum(len(c.arguments) for c in a.tool_calls)
        completion += len(a.function_call.arguments) if a.function_call else 0
        reasoning += len(a.reasoning)
    return {
        "prompt_tokens": s.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": s.prompt_tokens + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _chat_events(s: _ChatScript, *, complete: bool = True, null_usage_choices: bool = False) -> list[bytes]:
    """The streamed chunks; with ``complete=False`` the stream stops after the
    last delta (no finish, no usage, no ``[DONE]``)."""

    def chunk(choices: list[dict[str, Any]] | None, usage: dict[str, Any] | None) -> bytes:
        c: dict[str, Any] = {"id": s.id, "object": "chat.completion.chunk", "created": CREATED, "model": s.model}
        if s.service_tier is not None:
            c["service_tier"] = s.service_tier
        c["system_fingerprint"] = s.system_fingerprint
        c["choices"] = choices
        c["usage"] = usage
        c.update(s.extra)
        c["obfuscation"] = _obfuscation(f"{s.id}{len(events)}")
        return sse_data(c)

    def choice(i: int, a: _Answer, delta: dict[str, Any], lp: Any, finish: str | None) -> dict[str, Any]:
        out = {"index": i, "delta": delta, "logprobs": lp, "finish_reason": finish}
        for key, value in a.choice_extra:
            out[key] = value if finish is not None else None
        return out

    events: list[bytes] = []
    steps = [_chat_steps(a) for a in s.answers]
    # n > 1: OpenAI interleaves the choices, one choice a chunk.
    for position in range(max(len(x) for x in steps)):
        for i, answer_steps in enumerate(steps):
            if position < len(answer_steps):
                delta, lp = answer_steps[position]
                events.append(chunk([choice(i, s.answers[i], delta, lp, None)], None))
    if not complete:
        return events
    for i, a in enumerate(s.answers):
        events.append(chunk([choice(i, a, {}, None, a.finish_reason)], None))
    events.append(chunk(None if null_usage_choices else [], _chat_usage(s)))
    events.append(DONE)
    return events


def _chat_full(s: _ChatScript, *, complete: bool = True) -> dict[str, Any]:
    """The non-streamed ``chat.completion``; with ``complete=False`` the one a
    stream cut after its last delta assembles to."""
    choices = []
    for i, a in enumerate(s.answers):
        message: dict[str, Any] = {
            "role": "assistant",
            "content": "".join(a.content) if a.content is not None else None,
            "refusal": "".join(a.refusal) if a.refusal is not None else None,
        }
        if a.tool_calls:
            message["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": "".join(c.arguments)}}
                for c in a.tool_calls
            ]
        if a.function_call is not None:
            message["function_call"] = {"name": a.function_call.name, "arguments": "".join(a.function_call.arguments)}
        if a.reasoning:
            message["reasoning_content"] = "".join(a.reasoning)
        logprobs = None
        if a.logprobs:
            rank = 0
            content_lp, refusal_lp = [], []
            for piece in a.content or ():
                content_lp.append(_token_logprob(piece, rank))
                rank += 1
            for piece in a.refusal or ():
                refusal_lp.append(_token_logprob(piece, rank))
                rank += 1
            logprobs = {"content": content_lp or None, "refusal": refusal_lp or None}
        out: dict[str, Any] = {
            "index": i,
            "message": message,
            "logprobs": logprobs,
            "finish_reason": a.finish_reason if complete else None,
        }
        for key, value in a.choice_extra:
            out[key] = value if complete else None
        choices.append(out)
    full: dict[str, Any] = {"id": s.id, "object": "chat.completion", "created": CREATED, "model": s.model,
                            "choices": choices}
    if complete:
        full["usage"] = _chat_usage(s)
    if s.service_tier is not None:
        full["service_tier"] = s.service_tier
    full["system_fingerprint"] = s.system_fingerprint
    full.update(s.extra)
    return full


def _chat_text(s: _ChatScript) -> str:
    texts = []
    for a in s.answers:
        texts += ["".join(p) for p in (a.content, a.refusal) if p]
    return "\n".join(texts)


def _chat_shape(name: str, s: _ChatScript, request: dict[str, Any]) -> Shape:
    body = {"model": s.model, **request, "stream": True, "stream_options": {"include_usage": True}}
    return Shape(name, CHAT_PATH, body, _chat_events(s), _chat_full(s), _chat_text(s))


_WEATHER_PARAMETERS: dict[str, Any] = {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
}
_WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": _WEATHER_PARAMETERS,
    },
}
_ASK = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hello."}]
_ASK_WEATHER = [{"role": "user", "content": "What's the weather in Paris and in Tōkyō?"}]

_SIMPLE = _ChatScript(
    id="chatcmpl-simple01",
    model="gpt-4o-mini-2024-07-18",
    answers=(_Answer(content=("Hello", "!", " How", " can", " I", " help", " today", "? ☀️")),),
    prompt_tokens=19,
)
_N2 = _ChatScript(
    id="chatcmpl-n2000002",
    model="gpt-4o-mini-2024-07-18",
    answers=(
        _Answer(content=("Bonjour", " le", " monde", ".")),
        _Answer(content=("Salut", " à", " tous", " !", " 👋"), finish_reason="length"),
    ),
    prompt_tokens=23,
)
_REFUSAL = _ChatScript(
    id="chatcmpl-refuse03",
    model="gpt-4o-2024-08-06",
    answers=(_Answer(refusal=("I'm", " sorry", ",", " I", " can't", " help", " with", " that", "."), logprobs=True),),
    prompt_tokens=31,
)
_TOOLS = _ChatScript(
    id="chatcmpl-tools004",
    model="gpt-4o-mini-2024-07-18",
    answers=(
        _Answer(
            tool_calls=(
                _Call("call_Paris0000000000000001", "get_weather", ('{"ci', 'ty":', ' "Par', 'is"}')),
                _Call("call_Tokyo000000000000002", "get_weather", ('{"', 'city', '": "T', 'ōkyō', '"}')),
            ),
            finish_reason="tool_calls",
        ),
    ),
    prompt_tokens=64,
)
_FUNCTION = _ChatScript(
    id="chatcmpl-func0005",
    model="gpt-3.5-turbo-0613",
    answers=(
        _Answer(
            function_call=_Call("", "get_weather", ('{\n', '  "city": ', '"Paris"', "\n}")),
            finish_reason="function_call",
        ),
    ),
    prompt_tokens=58,
    system_fingerprint=None,
)
_LOGPROBS = _ChatScript(
    id="chatcmpl-logprob6",
    model="gpt-4o-mini-2024-07-18",
    answers=(_Answer(content=("The", " answer", " is", " 42", "."), logprobs=True),),
    prompt_tokens=15,
)
_EXTRA = _ChatScript(
    id="chatcmpl-extra007",
    model="deepseek-reasoner",
    answers=(
        _Answer(
            content=("Paris", " is", " the", " capital", "."),
            reasoning=("The", " user", " asks", " about", " France", "'s", " capital", "."),
            choice_extra=(("stop_reason", None), ("native_finish_reason", "stop")),
        ),
    ),
    prompt_tokens=12,
    system_fingerprint="fp_7e0991cad4",
    service_tier="default",
    extra=(("provider", "DeepSeek"),),
)

SHAPES: dict[str, Shape] = {}

for _shape in (
    _chat_shape("chat_simple", _SIMPLE, {"messages": _ASK}),
    _chat_shape("chat_n2", _N2, {"messages": _ASK, "n": 2, "max_tokens": 5}),
    _chat_shape("chat_refusal", _REFUSAL, {"messages": _ASK, "logprobs": True}),
    _chat_shape("chat_tools", _TOOLS, {"messages": _ASK_WEATHER, "tools": [_WEATHER_TOOL], "parallel_tool_calls": True}),
    _chat_shape("chat_function_call", _FUNCTION, {"messages": _ASK_WEATHER, "functions": [_WEATHER_TOOL["function"]]}),
    _chat_shape("chat_logprobs", _LOGPROBS, {"messages": _ASK, "logprobs": True, "top_logprobs": 2}),
    _chat_shape("chat_extra_fields", _EXTRA, {"messages": _ASK}),
):
    SHAPES[_shape.name] = _shape


# --- legacy completions ------------------------------------------------------------------

@dataclass(frozen=True)
class _CompletionScript:
    id: str
    model: str
    prompt: str
    texts: tuple[tuple[str, ...], ...]
    """The text pieces of each choice."""
    finish_reasons: tuple[str, ...]
    prompt_tokens: int


def _completion_logprobs(s: _CompletionScript, pieces: tuple[str, ...], start: int) -> dict[str, Any]:
    offsets = []
    offset = len(s.prompt)
    for piece in pieces[:start]:
        offset += len(piece)
    for piece in pieces[start:]:
        offsets.append(offset)
        offset += len(piece)
    return {
        "tokens": list(pieces[start:]),
        "token_logprobs": [-0.5 * (start + k + 1) for k in range(len(pieces) - start)],
        "top_logprobs": [{p: -0.5 * (start + k + 1), " and": -3.0} for k, p in enumerate(pieces[start:])],
        "text_offset": offsets,
    }


def _completion_usage(s: _CompletionScript) -> dict[str, Any]:
    completion = sum(len(t) for t in s.texts)
    return {"prompt_tokens": s.prompt_tokens, "completion_tokens": completion, "total_tokens": s.prompt_tokens + completion}


def _completion_events(s: _CompletionScript) -> list[bytes]:
    def chunk(choices: list[dict[str, Any]], usage: dict[str, Any] | None) -> bytes:
        return sse_data({"id": s.id, "object": "text_completion", "created": CREATED, "model": s.model,
                         "system_fingerprint": None, "choices": choices, "usage": usage})

    events = []
    for position in range(max(len(t) for t in s.texts)):
        for i, pieces in enumerate(s.texts):
            if position < len(pieces):
                lp = _completion_logprobs(s, pieces[: position + 1], position)
                events.append(chunk([{"text": pieces[position], "index": i, "logprobs": lp, "finish_reason": None}], None))
    for i, reason in enumerate(s.finish_reasons):
        events.append(chunk([{"text": "", "index": i, "logprobs": None, "finish_reason": reason}], None))
    events.append(chunk([], _completion_usage(s)))
    events.append(DONE)
    return events


def _completion_full(s: _CompletionScript) -> dict[str, Any]:
    choices = [
        {"text": "".join(pieces), "index": i, "logprobs": _completion_logprobs(s, pieces, 0), "finish_reason": reason}
        for i, (pieces, reason) in enumerate(zip(s.texts, s.finish_reasons, strict=True))
    ]
    return {"id": s.id, "object": "text_completion", "created": CREATED, "model": s.model,
            "system_fingerprint": None, "choices": choices, "usage": _completion_usage(s)}


_COMPLETION = _CompletionScript(
    id="cmpl-legacy0008",
    model="gpt-3.5-turbo-instruct",
    prompt="Once upon a time",
    texts=((",", " there", " was", " a", " fox"), (" in", " a", " land", " far", " away", " — naïve")),
    finish_reasons=("length", "length"),
    prompt_tokens=4,
)
SHAPES["completions"] = Shape(
    "completions",
    COMPLETIONS_PATH,
    {"model": _COMPLETION.model, "prompt": _COMPLETION.prompt, "n": 2, "max_tokens": 6, "logprobs": 2,
     "stream": True, "stream_options": {"include_usage": True}},
    _completion_events(_COMPLETION),
    _completion_full(_COMPLETION),
    "\n".join("".join(t) for t in _COMPLETION.texts),
)


# --- the Responses API ----------------------------------------------------------------------

@dataclass(frozen=True)
class _Message:
    id: str
    text: tuple[str, ...] = ()
    refusal: tuple[str, ...] | None = None
    """When set, the message holds a refusal part instead of an output_text part."""


@dataclass(frozen=True)
class _FunctionCall:
    id: str
    call_id: str
    name: str
    arguments: tuple[str, ...]


@dataclass(frozen=True)
class _ResponseScript:
    id: str
    model: str
    instructions: str | None
    output: tuple[_Message | _FunctionCall, ...]
    input_tokens: int
    tools: tuple[dict[str, Any], ...] = ()


def _part(m: _Message, *, empty: bool = False) -> dict[str, Any]:
    if m.refusal is not None:
        return {"type": "refusal", "refusal": "" if empty else "".join(m.refusal)}
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": "" if empty else "".join(m.text)}


def _item(x: _Message | _FunctionCall, status: str, *, opened: bool = False) -> dict[str, Any]:
    """An output item; ``opened`` is the form ``output_item.added`` carries."""
    if isinstance(x, _Message):
        return {"id": x.id, "type": "message", "status": status, "content": [] if opened else [_part(x)],
                "role": "assistant"}
    return {"id": x.id, "type": "function_call", "status": status,
            "arguments": "" if opened else "".join(x.arguments), "call_id": x.call_id, "name": x.name}


def _response_usage(s: _ResponseScript) -> dict[str, Any]:
    output = 0
    for x in s.output:
        output += len(x.arguments) if isinstance(x, _FunctionCall) else len(x.refusal or x.text)
    return {"input_tokens": s.input_tokens, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": s.input_tokens + output}


def _response(s: _ResponseScript, status: str, output: list[dict[str, Any]], usage: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "id": s.id, "object": "response", "created_at": CREATED, "status": status, "background": False,
        "error": None, "incomplete_details": None, "instructions": s.instructions, "max_output_tokens": None,
        "max_tool_calls": None, "model": s.model, "output": output, "parallel_tool_calls": True,
        "previous_response_id": None, "reasoning": {"effort": None, "summary": None}, "service_tier": "default",
        "store": True, "temperature": 1.0, "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": "auto", "tools": list(s.tools), "top_logprobs": 0, "top_p": 1.0, "truncation": "disabled",
        "usage": usage, "user": None, "metadata": {},
    }


def _responses_events(s: _ResponseScript, *, complete: bool = True) -> list[dict[str, Any]]:
    """The typed events, as JSON objects; with ``complete=False`` only those
    sent before any item finishes (opening events and deltas)."""
    events: list[dict[str, Any]] = []

    def emit(event_type: str, **fields: Any) -> None:
        events.append({"type": event_type, "sequence_number": len(events), **fields})

    emit("response.created", response=_response(s, "in_progress", [], None))
    emit("response.in_progress", response=_response(s, "in_progress", [], None))
    for oi, x in enumerate(s.output):
        emit("response.output_item.added", output_index=oi, item=_item(x, "in_progress", opened=True))
        if isinstance(x, _Message):
            where = {"item_id": x.id, "output_index": oi, "content_index": 0}
            emit("response.content_part.added", **where, part=_part(x, empty=True))
            if x.refusal is not None:
                for piece in x.refusal:
                    emit("response.refusal.delta", **where, delta=piece)
                if complete:
                    emit("response.refusal.done", **where, refusal="".join(x.refusal))
            else:
                for piece in x.text:
                    emit("response.output_text.delta", **where, delta=piece, logprobs=[],
                         obfuscation=_obfuscation(x.id + piece))
                if complete:
                    emit("response.output_text.done", **where, text="".join(x.text), logprobs=[])
            if complete:
                emit("response.content_part.done", **where, part=_part(x))
        else:
            for piece in x.arguments:
                emit("response.function_call_arguments.delta", item_id=x.id, output_index=oi, delta=piece,
                     obfuscation=_obfuscation(x.id + piece))
            if complete:
                emit("response.function_call_arguments.done", item_id=x.id, output_index=oi,
                     arguments="".join(x.arguments))
        if complete:
            emit("response.output_item.done", output_index=oi, item=_item(x, "completed"))
    if complete:
        emit("response.completed", response=_responses_full(s))
    return events


def _responses_full(s: _ResponseScript) -> dict[str, Any]:
    return _response(s, "completed", [_item(x, "completed") for x in s.output], _response_usage(s))


def _responses_cut(s: _ResponseScript) -> dict[str, Any]:
    """What a stream stopped after its deltas assembles to: the last response
    object seen, with the items as far as they got."""
    return _response(s, "in_progress", [_item(x, "in_progress") for x in s.output], None)


def _responses_text(s: _ResponseScript) -> str:
    return "\n".join("".join(x.refusal if x.refusal is not None else x.text)
                     for x in s.output if isinstance(x, _Message))


def _responses_shape(name: str, s: _ResponseScript, request: dict[str, Any]) -> Shape:
    body = {"model": s.model, **request, "stream": True}
    if s.instructions is not None:
        body["instructions"] = s.instructions
    if s.tools:
        body["tools"] = list(s.tools)
    events = [_sse_typed(e) for e in _responses_events(s)]
    return Shape(name, RESPONSES_PATH, body, events, _responses_full(s), _responses_text(s))


_RESPONSE_TEXT = _ResponseScript(
    id="resp_text0000000000000009",
    model="gpt-4o-mini-2024-07-18",
    instructions="Answer in one sentence.",
    output=(_Message("msg_text000000000000009", text=("The", " Eiffel", " Tower", " is", " in", " Paris", ". 🗼")),),
    input_tokens=27,
)
_RESPONSE_TOOL = _ResponseScript(
    id="resp_tool0000000000000010",
    model="gpt-4o-mini-2024-07-18",
    instructions=None,
    output=(
        _FunctionCall("fc_tool00000000000000010", "call_Weather000000000010", "get_weather",
                      ('{"', 'city', '":"', 'Par', 'is"}')),
    ),
    input_tokens=52,
    tools=({"type": "function", "name": "get_weather", "description": "Current weather for a city.",
            "parameters": _WEATHER_PARAMETERS, "strict": True},),
)
_RESPONSE_REFUSAL = _ResponseScript(
    id="resp_refuse000000000000011",
    model="gpt-4o-2024-08-06",
    instructions=None,
    output=(_Message("msg_refuse0000000000011", refusal=("I", " can't", " help", " with", " that", ".")),),
    input_tokens=18,
)

SHAPES["responses_text"] = _responses_shape("responses_text", _RESPONSE_TEXT, {"input": "Where is the Eiffel Tower?"})
SHAPES["responses_tool"] = _responses_shape("responses_tool", _RESPONSE_TOOL,
                                            {"input": [{"role": "user", "content": "Weather in Paris?"}]})
SHAPES["responses_refusal"] = _responses_shape("responses_refusal", _RESPONSE_REFUSAL,
                                               {"input": "Help me pick a lock."})


# --- streams that end badly --------------------------------------------------------------------

_SERVER_ERROR = {
    "message": "The server had an error while processing your request. Sorry about that!",
    "type": "server_error",
    "param": None,
    "code": None,
}


def _chat_partial() -> _ChatScript:
    """chat_simple, as far as its third content piece."""
    (answer,) = _SIMPLE.answers
    assert answer.content is not None
    return replace(_SIMPLE, answers=(replace(answer, content=answer.content[:3]),))


def _chat_midstream_error() -> Edge:
    partial = _chat_partial()
    reply = _chat_full(partial, complete=False)
    reply["error"] = _SERVER_ERROR
    events = _chat_events(partial, complete=False) + [sse_data({"error": _SERVER_ERROR})]
    return Edge("chat_midstream_error", CHAT_PATH, SHAPES["chat_simple"].request, events, reply)


def _chat_truncated() -> Edge:
    partial = _chat_partial()
    whole = SHAPES["chat_simple"].events
    arrived = _chat_events(partial, complete=False)
    # The next event breaks off halfway through its JSON.
    events = arrived + [whole[len(arrived)][: len(whole[len(arrived)]) // 2]]
    return Edge("chat_truncated", CHAT_PATH, SHAPES["chat_simple"].request, events, _chat_full(partial, complete=False))


def _responses_partial() -> _ResponseScript:
    (message,) = _RESPONSE_TEXT.output
    assert isinstance(message, _Message)
    return replace(_RESPONSE_TEXT, output=(replace(message, text=message.text[:4]),))


def _responses_error() -> Edge:
    partial = _responses_partial()
    events = _responses_events(partial, complete=False)
    error = {"code": "server_error", "message": _SERVER_ERROR["message"], "param": None}
    events.append({"type": "error", "sequence_number": len(events), **error})
    reply = _responses_cut(partial)
    reply["error"] = error
    return Edge("responses_error", RESPONSES_PATH, SHAPES["responses_text"].request,
                [_sse_typed(e) for e in events], reply)


def _responses_cut_edge() -> Edge:
    partial = _responses_partial()
    events = [_sse_typed(e) for e in _responses_events(partial, complete=False)]
    return Edge("responses_cut", RESPONSES_PATH, SHAPES["responses_text"].request, events, _responses_cut(partial))


CHAT_USAGE_NULL_CHOICES = Edge(
    "chat_usage_null_choices",
    CHAT_PATH,
    SHAPES["chat_simple"].request,
    _chat_events(_SIMPLE, null_usage_choices=True),
    SHAPES["chat_simple"].full,
)
"""chat_simple with the usage chunk's ``"choices": null``, as vLLM sends it."""

CHAT_MIDSTREAM_ERROR = _chat_midstream_error()
"""Three content pieces, then ``data: {"error": …}`` and the end (no ``[DONE]``)."""

CHAT_TRUNCATED = _chat_truncated()
"""Three content pieces, then an event cut off halfway (upstream died)."""

RESPONSES_ERROR = _responses_error()
"""responses_text up to its fourth text delta, then ``event: error``."""

RESPONSES_CUT = _responses_cut_edge()
"""responses_text up to its fourth text delta, then nothing."""

EDGES: dict[str, Edge] = {
    e.name: e for e in (CHAT_USAGE_NULL_CHOICES, CHAT_MIDSTREAM_ERROR, CHAT_TRUNCATED, RESPONSES_ERROR, RESPONSES_CUT)
}
