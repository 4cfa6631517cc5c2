"""A recording as a conversation a person can read (``streamproxy show ID``).

Pure: takes the Recording JSON object (SPEC "Recording JSON") and returns
plain text. Recordings come from many servers and from imports, so every
field may be missing or odd; the renderer shows what is there and never
raises on shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from proxy.assemble import usage_tokens

__all__ = ["render_recording"]

_INDENT = "  "
_URL_LIMIT = 80


def render_recording(rec: Mapping[str, Any]) -> str:
    """Render a recording: header, request messages by role, the reply, and a
    footer with status, outcome, timing, tokens and the key fingerprint."""
    out: list[str] = []
    _header(out, rec)
    _request(out, _mapping(rec.get("request")))
    _gap(out)
    out.append("=== reply ===")
    _reply(out, rec.get("reply"))
    _gap(out)
    out.append("---")
    _footer(out, rec)
    return "\n".join(out) + "\n"


def _gap(out: list[str]) -> None:
    """One blank line between sections, however the last one ended."""
    if out and out[-1]:
        out.append("")


# --- header and footer ---------------------------------------------------------------

def _header(out: list[str], rec: Mapping[str, Any]) -> None:
    words = [
        f"recording {rec['id']}" if rec.get("id") else "recording",
        _text(rec.get("method")),
        _text(rec.get("path")) + (f"?{rec['query']}" if rec.get("query") else ""),
        f"model {rec['model']}" if rec.get("model") else "",
        "streamed" if rec.get("stream") else "",
    ]
    out.append("  ".join(w for w in words if w))
    if rec.get("started_at"):
        out.append(f"started {rec['started_at']}")
    out.append("")


def _footer(out: list[str], rec: Mapping[str, Any]) -> None:
    response = _mapping(rec.get("response"))
    status = response.get("status")
    outcome = rec.get("outcome")
    line = f"status {status if status is not None else '?'}  outcome {outcome or '?'}"
    if rec.get("error"):
        line += f" ({_text(rec['error'])})"
    out.append(line)

    ttfb = _number(rec.get("ttfb_ms"))
    duration = _number(rec.get("duration_ms"))
    timing = []
    if ttfb is not None:
        timing.append(f"time to first byte {ttfb:.1f} ms")
    if duration is not None:
        timing.append(f"duration {duration:.1f} ms")
    if timing:
        out.append("  ".join(timing))

    reply = rec.get("reply")
    prompt, completion = usage_tokens(reply if isinstance(reply, Mapping) else None)
    if prompt is not None or completion is not None:
        line = f"tokens: prompt {_or_dash(prompt)}, completion {_or_dash(completion)}"
        rate = _tokens_per_second(completion, ttfb, duration)
        if rate is not None:
            line += f"  ({rate:.1f} tokens/s)"
        out.append(line)

    if rec.get("key_fingerprint"):
        out.append(f"key {rec['key_fingerprint']}")


def _tokens_per_second(completion: int | None, ttfb: float | None, duration: float | None) -> float | None:
    """Generation speed: the completion tokens over the time after the first
    byte, when the model was producing them."""
    if completion is None or duration is None:
        return None
    generating = duration - (ttfb or 0.0)
    if generating <= 0:
        return None
    return completion / (generating / 1000.0)


# --- the request ---------------------------------------------------------------------

def _request(out: list[str], request: Mapping[str, Any]) -> None:
    body = request.get("body")
    if isinstance(body, Mapping):
        _request_body(out, body)
    elif request.get("body_text") is not None:
        _block(out, "request body", _text(request["body_text"]))
    elif request.get("body_b64") is not None:
        out.append(f"[request body: binary, {len(_text(request['body_b64']))} base64 characters]")
    else:
        out.append("(no request body)")


def _request_body(out: list[str], body: Mapping[str, Any]) -> None:
    tools = _tool_names(body)
    if tools:
        out.append("tools: " + ", ".join(tools))
        out.append("")
    shown = False
    if isinstance(body.get("messages"), list):
        for message in body["messages"]:
            _chat_message(out, _mapping(message))
        shown = True
    if body.get("instructions"):
        _block(out, "instructions", _text(body["instructions"]))
        shown = True
    if body.get("previous_response_id"):
        out.append(f"(continues response {body['previous_response_id']})")
    prompt = body.get("prompt")
    if prompt is not None:
        for p in prompt if isinstance(prompt, list) and all(isinstance(x, str) for x in prompt) else [prompt]:
            _block(out, "prompt", _text(p))
        shown = True
    user_input = body.get("input")
    if isinstance(user_input, list):
        for item in user_input:
            _responses_input_item(out, _mapping(item))
        shown = True
    elif user_input is not None:
        _block(out, "user", _text(user_input))
        shown = True
    if not shown:
        out.append("(no messages in the request)")


def _tool_names(body: Mapping[str, Any]) -> list[str]:
    names = []
    for tool in list(_list(body.get("tools"))) + list(_list(body.get("functions"))):
        tool = _mapping(tool)
        name = tool.get("name") or _mapping(tool.get("function")).get("name") or tool.get("type")
        if name:
            names.append(_text(name))
    return names


def _chat_message(out: list[str], message: Mapping[str, Any]) -> None:
    role = _text(message.get("role") or "?")
    label = role
    if message.get("name"):
        label += f" {message['name']}"
    if message.get("tool_call_id"):
        label += f" {message['tool_call_id']}"
    lines = _content_lines(message.get("content"))
    if message.get("refusal"):
        lines.append(f"refusal: {_text(message['refusal'])}")
    lines += _call_lines(message)
    _block(out, label, "\n".join(lines))


def _responses_input_item(out: list[str], item: Mapping[str, Any]) -> None:
    kind = item.get("type", "message")
    if kind == "message" or "role" in item:
        _block(out, _text(item.get("role") or "?"), "\n".join(_content_lines(item.get("content"))))
    elif kind == "function_call":
        _block(out, "assistant", _call_line(item.get("name"), item.get("call_id"), item.get("arguments")))
    elif kind == "function_call_output":
        _block(out, f"tool {_text(item.get('call_id') or '')}".rstrip(), _text(item.get("output")))
    else:
        _block(out, _text(kind), "")


# --- the reply -------------------------------------------------------------------------

def _reply(out: list[str], reply: Any) -> None:
    if not isinstance(reply, Mapping):
        out.append("(no reply)")
        return
    choices = _list(reply.get("choices"))
    output = _list(reply.get("output"))
    for choice in choices:
        _reply_choice(out, _mapping(choice), many=len(choices) > 1)
    if output:
        _responses_output(out, output)
    if reply.get("status") and "output" in reply:
        out.append(f"status: {_text(reply['status'])}")
    incomplete = _mapping(reply.get("incomplete_details"))
    if incomplete.get("reason"):
        out.append(f"incomplete: {_text(incomplete['reason'])}")
    if reply.get("error") is not None:
        out.append(f"error: {_error_text(reply['error'])}")
    if not choices and not output and reply.get("error") is None:
        out.append("(empty reply)")


def _reply_choice(out: list[str], choice: Mapping[str, Any], *, many: bool) -> None:
    suffix = f" #{choice.get('index')}" if many else ""
    message = choice.get("message")
    if isinstance(message, Mapping):
        lines = []
        for key in ("reasoning_content", "reasoning"):
            if isinstance(message.get(key), str) and message[key]:
                lines.append(f"(reasoning) {message[key]}")
        lines += _content_lines(message.get("content"))
        if message.get("refusal"):
            lines.append(f"refusal: {_text(message['refusal'])}")
        lines += _call_lines(message)
        label = _text(message.get("role") or "assistant") + suffix
    else:
        lines = _content_lines(choice.get("text"))
        label = "completion" + suffix
    if choice.get("finish_reason"):
        lines.append(f"finish_reason: {_text(choice['finish_reason'])}")
    _block(out, label, "\n".join(lines))


def _responses_output(out: list[str], output: list[Any]) -> None:
    for item in output:
        item = _mapping(item)
        kind = item.get("type", "message")
        if kind == "message":
            _block(out, _text(item.get("role") or "assistant"), "\n".join(_content_lines(item.get("content"))))
        elif kind == "function_call":
            _block(out, "assistant", _call_line(item.get("name"), item.get("call_id"), item.get("arguments")))
        elif kind == "reasoning":
            summary = [_text(_mapping(s).get("text")) for s in _list(item.get("summary"))]
            _block(out, "reasoning", "\n".join(summary))
        else:
            _block(out, _text(kind), "")


def _error_text(error: Any) -> str:
    if not isinstance(error, Mapping):
        return _text(error)
    message = _text(error.get("message") or "")
    kinds = ", ".join(_text(error[k]) for k in ("type", "code") if error.get(k))
    if not message and not kinds:
        return _text(dict(error))
    return f"{message} ({kinds})" if kinds else message


# --- pieces ---------------------------------------------------------------------------------

def _call_lines(message: Mapping[str, Any]) -> list[str]:
    """Tool calls (and the legacy function_call) of a chat message."""
    lines = []
    for call in _list(message.get("tool_calls")):
        call = _mapping(call)
        function = _mapping(call.get("function"))
        lines.append(_call_line(function.get("name"), call.get("id"), function.get("arguments")))
    function_call = message.get("function_call")
    if isinstance(function_call, Mapping):
        lines.append(_call_line(function_call.get("name"), None, function_call.get("arguments")))
    return lines


def _call_line(name: Any, call_id: Any, arguments: Any) -> str:
    where = f" [{_text(call_id)}]" if call_id else ""
    return f"tool call {_text(name or '?')}{where}: {_text(arguments if arguments is not None else '')}"


def _content_lines(content: Any) -> list[str]:
    """Message content that is a string or a list of parts (text, images, audio, files)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [content] if content else []
    if not isinstance(content, list):
        return [_text(content)]
    lines = []
    for part in content:
        if isinstance(part, str):
            lines.append(part)
            continue
        part = _mapping(part)
        kind = _text(part.get("type") or "part")
        if isinstance(part.get("text"), str):
            lines.append(part["text"])
        elif isinstance(part.get("refusal"), str):
            lines.append(f"refusal: {part['refusal']}")
        elif kind in ("image_url", "input_image"):
            url = part.get("image_url")
            url = _mapping(url).get("url") if isinstance(url, Mapping) else url
            lines.append(f"[image: {_shorten(_text(url or part.get('file_id') or ''))}]")
        elif kind in ("file", "input_file"):
            name = part.get("filename") or _mapping(part.get("file")).get("filename") or part.get("file_id") or ""
            lines.append(f"[file: {_text(name)}]")
        else:
            lines.append(f"[{kind}]")
    return lines


def _block(out: list[str], label: str, body: str) -> None:
    out.append(f"[{label}]")
    for line in body.splitlines():
        out.append(_INDENT + line if line else "")
    out.append("")


def _shorten(url: str) -> str:
    # Data URLs run to megabytes of base64.
    return url if len(url) <= _URL_LIMIT else url[: _URL_LIMIT - 1] + "…"


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _or_dash(value: int | None) -> str:
    return "-" if value is None else str(value)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
