"""Pure folds from a recorded response body to the reply it stands for.

A streamed answer is a sequence of SSE events; what an auditor wants to read,
and what a test wants to compare, is the object the same request would have
returned without ``stream``. :func:`assemble` builds it, one fold per API
shape:

* chat completions (``chat.completion.chunk`` → ``chat.completion``),
* legacy completions (``text_completion``),
* the Responses API (typed ``response.*`` events → the final ``response``).

Nothing here raises on bad input: a malformed event is skipped and described
in :attr:`Assembled.notes` as ``"chunk N: …"``, where N is the chunk's
sequence number in the recording.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Literal

import orjson

from proxy.sse import EventSplitter, parse_event

__all__ = ["Assembled", "assemble", "reply_text", "usage_tokens"]


@dataclass(slots=True)
class Assembled:
    """The outcome of :func:`assemble`."""

    reply: dict[str, Any] | None
    """The assembled reply object, or None when there is nothing to assemble."""
    notes: list[str] = field(default_factory=list)
    """Parse problems met on the way, e.g. ``"chunk 3: data is not JSON: 'garbage'"``."""


def assemble(path: str, content_type: str | None, chunks: Sequence[bytes]) -> Assembled:
    """Build the reply from a response body as the relay recorded it.

    For ``text/event-stream`` each chunk is one raw SSE event (the last one may
    be cut short); for any other content type the chunks together are the
    whole body, which is taken as the reply when it is a JSON object.
    Never raises.
    """
    if content_type is not None and _media_type(content_type) == "text/event-stream":
        return _assemble_stream(path, chunks)
    return _assemble_body(path, content_type, b"".join(chunks))


def usage_tokens(reply: Mapping[str, Any] | None) -> tuple[int | None, int | None]:
    """Prompt (input) and completion (output) token counts from ``reply["usage"]``.

    Reads chat and legacy completions usage (``prompt_tokens`` /
    ``completion_tokens``) and Responses usage (``input_tokens`` /
    ``output_tokens``); a count that is absent or not an integer is None.
    """
    if not isinstance(reply, Mapping):
        return None, None
    usage = reply.get("usage")
    if not isinstance(usage, Mapping):
        return None, None
    return (
        _count(usage, "prompt_tokens", "input_tokens"),
        _count(usage, "completion_tokens", "output_tokens"),
    )


def reply_text(reply: Mapping[str, Any] | None) -> str:
    """The human-readable text of a reply, for search and display.

    Joins, one per line, every choice's message content or refusal (chat), every
    choice's text (legacy completions) and every output message's text or
    refusal (Responses). Tool call arguments are not text a person wrote or
    reads, so they are left out.
    """
    if not isinstance(reply, Mapping):
        return ""
    texts: list[str] = []
    choices = reply.get("choices")
    if isinstance(choices, list):
        for choice in choices:
            if not isinstance(choice, Mapping):
                continue
            message = choice.get("message")
            if isinstance(message, Mapping):
                _collect_text(texts, message.get("content"))
                _collect_text(texts, message.get("refusal"))
            _collect_text(texts, choice.get("text"))
    output = reply.get("output")
    if isinstance(output, list):
        for item in output:
            if isinstance(item, Mapping) and item.get("type", "message") == "message":
                _collect_text(texts, item.get("content"))
    return "\n".join(texts)


# --- non-streamed bodies ---------------------------------------------------------

def _media_type(content_type: str) -> str:
    return content_type.partition(";")[0].strip().lower()


def _assemble_body(path: str, content_type: str | None, body: bytes) -> Assembled:
    if not body.strip():
        return Assembled(None, [])
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        # Some servers stream SSE under a wrong or missing content type; the
        # relay then hands us the whole body as one chunk.
        if body.lstrip().startswith((b"data:", b"event:")):
            splitter = EventSplitter()
            result = _assemble_stream(path, splitter.feed(body) + splitter.flush())
            result.notes.insert(0, f"body is an event stream sent as {content_type!r}")
            return result
        return Assembled(None, [f"body is not JSON: {_preview(body)}"])
    if type(obj) is not dict:
        return Assembled(None, [f"body is JSON but not an object: {_preview(body)}"])
    return Assembled(obj, [])


# --- event streams -----------------------------------------------------------------

# Any two line ends at the very end of an event: its terminating blank line.
_TERMINATED = re.compile(rb"(?:\r\n|\r(?!\n)|\n)(?:\r\n|\r(?!\n)|\n)\Z")


class _Malformed(Exception):
    """An event whose JSON does not have the shape its fold expects."""


def _assemble_stream(path: str, chunks: Sequence[bytes]) -> Assembled:
    notes: list[str] = []
    fold: _ChoicesFold | _ResponsesFold | None = None
    error: Any = None
    last = len(chunks) - 1
    # A \r anywhere is a line end too; one look at the whole body costs less than one at
    # every chunk, and the usual stream has none.
    no_cr = b"\r" not in b"".join(chunks)
    # Where the last usual content chunk was taken: the second in a row starts a run.
    content_at = -2
    events = enumerate(chunks)
    for n, raw in events:
        # The usual event: one ``data:`` line holding a JSON object, then the blank line (the
        # first line end is the next to last byte, the last is a line end too). Nothing below
        # could say more about it once orjson has read it (which also checks the UTF-8), so
        # it goes straight to the fold, which checks the ``data: {``.
        if no_cr and fold is not None and raw.find(b"\n", 7) == len(raw) - 2 and raw[-1] == 10:
            if type(fold) is _ChoicesFold:
                problem = fold.add_usual(raw)
                if problem is True:
                    # Most of a chat stream is a run of usual content chunks, taken in one
                    # call; one alone amid others is not worth setting a run up for.
                    if content_at == n - 1:
                        taken = fold.add_run(chunks, n + 1) - n - 1
                        if taken:
                            next(islice(events, taken - 1, None))  # skips them
                    content_at = n
                    continue
                if problem is not False:
                    if problem is not None:
                        notes.append(f"chunk {n}: {problem}")
                    continue
            elif raw.startswith(b"data: {"):
                obj = _usual_object(raw[6:-2])
                if obj is not None:
                    problem = _add_to(fold, obj, None)
                    if problem is not None:
                        notes.append(f"chunk {n}: {problem}")
                    continue
        if n == last and raw and _TERMINATED.search(raw[-4:]) is None:
            notes.append(f"chunk {n}: event cut short (no blank line at the end of the stream)")
        ev = parse_event(raw)
        if ev.unknown:
            notes.append(f"chunk {n}: unknown field line {_preview(ev.unknown[0])}")
        data = ev.data
        if data is None:
            continue
        # parse_event replaced undecodable bytes; confirm before blaming the
        # bytes, since U+FFFD may also be genuine content.
        if "\ufffd" in data and not _is_utf8(raw):
            notes.append(f"chunk {n}: invalid UTF-8 replaced with U+FFFD")
        if data.startswith("[DONE]"):
            # Keep-alive comments after the end are harmless; data is not.
            late = [m for m in range(n + 1, last + 1) if parse_event(chunks[m]).data is not None]
            if late:
                notes.append(f"chunk {late[0]}: {len(late)} event(s) with data after [DONE] ignored")
            break
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            notes.append(f"chunk {n}: data is not JSON: {_preview(data)}")
            continue
        if type(obj) is not dict:
            notes.append(f"chunk {n}: data is not a JSON object: {_preview(data)}")
            continue
        name = ev.event
        if name == "error" or obj.get("type") == "error":
            error = _error_event_payload(obj)
            continue
        chunk_error = obj.get("error")
        if chunk_error is not None:
            error = chunk_error
            # OpenRouter-style chunks carry both an error and a last choice.
            if "choices" not in obj:
                continue
        if fold is None:
            fold = _pick_fold(obj, name, path)
            if fold is None:
                continue
        problem = _add_to(fold, obj, name)
        if problem is not None:
            notes.append(f"chunk {n}: {problem}")

    reply = fold.result() if fold is not None else None
    if error is not None:
        if reply is None:
            reply = {"error": error}
        elif reply.get("error") is None:
            reply["error"] = error
    return Assembled(reply, notes)


def _usual_object(data: bytes) -> dict[str, Any] | None:
    """The JSON object in ``data`` unless it is not one or is an error (which the general
    path reads), else None."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if type(obj) is not dict or "error" in obj or obj.get("type") == "error":
        return None
    return obj


def _add_to(fold: _ChoicesFold | _ResponsesFold, obj: dict[str, Any], name: str | None) -> str | None:
    """Add one event to the fold; what is wrong with it, if anything."""
    try:
        return fold.add(obj, name)
    except _SHAPE_ERRORS as exc:
        return _shape_problem(exc)


# TypeError and AttributeError: JSON of the wrong type somewhere deeper than the checks
# reach (an unhashable index, a number where a list belongs); the event is skipped, the
# fold goes on.
_SHAPE_ERRORS = (_Malformed, TypeError, AttributeError)


def _shape_problem(exc: Exception) -> str:
    return f"unexpected shape ({exc.__class__.__name__}: {exc}); skipped"


def _pick_fold(obj: dict[str, Any], name: str | None, path: str) -> _ChoicesFold | _ResponsesFold | None:
    """Choose the fold by what the events say they are, else by the path."""
    kind = obj.get("object")
    if kind == "chat.completion.chunk":
        return _ChoicesFold("chat.completion")
    if kind == "text_completion":
        return _ChoicesFold("text_completion")
    event_type = obj.get("type")
    if (type(event_type) is str and event_type.startswith("response.")) or (
        name is not None and name.startswith("response.")
    ):
        return _ResponsesFold()
    route = path.partition("?")[0].rstrip("/")
    if route.endswith("/chat/completions"):
        return _ChoicesFold("chat.completion")
    if route.endswith("/completions"):
        return _ChoicesFold("text_completion")
    if route.endswith("/responses"):
        return _ResponsesFold()
    return None


def _error_event_payload(obj: dict[str, Any]) -> Any:
    """The error an ``event: error`` carries.

    OpenAI's Responses API sends ``{"type": "error", "code", "message",
    "param", "sequence_number"}``; others wrap it as ``{"error": {...}}``.
    """
    inner = obj.get("error")
    if inner is not None:
        return inner
    return {k: v for k, v in obj.items() if k != "type" and k != "sequence_number"}


# --- chat and legacy completions ---------------------------------------------------

# proxy._fold_scan.scan: chunks, n, head, close, keyed_len, last_tail, parts -> (stop, last value).
_Scan = Callable[[Sequence[bytes], int, bytes, bytes, int, bytes | None, list[str]], tuple[int, int | str | None]]


def _load_scan() -> _Scan | None:
    """The steady state of :meth:`_ChoicesFold.add_run` in C, where it was built (it is
    optional, see setup.py); else None, and the loop runs in Python alone."""
    try:
        from proxy._fold_scan import scan
    except ImportError:
        return None
    return scan


_scan = _load_scan()


class _Parts(list[str]):
    """String pieces to be joined once at the end, so folding stays linear."""


class _Calls(dict[Any, dict[str, Any]]):
    """Tool calls being merged, by their ``index``."""


# Keys that name a thing rather than stream it: the first non-empty value is
# the value, and a repeat (some servers resend the name in every fragment)
# must not be concatenated onto it.
_IDENTITY = frozenset({"id", "type", "name", "role", "call_id", "index", "object"})

# Top-level chunk keys that have no place in the whole object: ``obfuscation``
# is padding OpenAI adds to every streamed chunk.
_CHUNK_ONLY = frozenset({"choices", "usage", "object", "obfuscation"})

# A choice with only these keys, whose delta is one more piece of content, is the
# usual chunk; ``_ChoicesFold._fold`` takes it in one step.
_PLAIN_CHOICE = frozenset({"index", "delta", "logprobs", "finish_reason"})

# OpenAI's usual chunk after the head: its one choice, around one more piece of content.
_CONTENT_OPEN = b'"choices":[{"index":0,"delta":{"content":'
_CONTENT_CLOSE = b'},"logprobs":null,"finish_reason":null}]'
_QUOTED_CLOSE = b'"' + _CONTENT_CLOSE

# JSON values that orjson reads alike at any depth.
_SCALARS = frozenset({str, int, float, bool})

_TOP_ORDER = ("id", "object", "created", "model", "choices", "usage", "service_tier", "system_fingerprint")
_MESSAGE_ORDER = ("role", "content", "refusal", "tool_calls", "function_call", "annotations")


class _Choice:
    __slots__ = ("fields", "message", "text", "logprobs")

    def __init__(self, index: Any) -> None:
        self.fields: dict[str, Any] = {"index": index}
        self.message: dict[str, Any] = {}
        self.text: list[str] | None = None
        self.logprobs: dict[str, Any] | None = None


class _ChoicesFold:
    """Chat completion chunks or legacy completion chunks, merged by choice index.

    Top-level and choice-level values are snapshots: the last non-null value
    wins (a key seen only as null stays, as null). Delta values are
    increments: strings and lists are concatenated, except identity keys.
    """

    __slots__ = (
        "kind", "top", "choices", "usage", "seen", "head", "head_members", "head_keys", "head_content", "last_head"
    )

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.top: dict[str, Any] = {}
        self.choices: dict[Any, _Choice] = {}
        self.usage: Any = None
        self.seen = False
        # See add_usual.
        self.head = b""
        self.head_members: dict[str, Any] = {}
        self.head_keys: frozenset[str] = frozenset()
        self.head_content = b""
        self.last_head = b""

    def add(self, obj: dict[str, Any], name: str | None) -> str | None:
        if name is not None and name != "message":
            return f"unknown event type {name!r} ignored"
        self.head = b""
        return self._fold(obj, False)

    def add_usual(self, raw: bytes) -> str | bool | None:
        """:meth:`add` for a usual event, one line (as the caller checked) of ``data: {``;
        what is wrong with it, if anything; False when it is not JSON, not an object, or an
        error, all of which the general path reads and notes, or not ``data: {`` at all;
        True when it was the usual content chunk, taken as :meth:`add_run` takes it.

        The usual chunk of all, the head and then OpenAI's usual choice, one more piece of
        content (``_CONTENT_OPEN``, a JSON string, ``_CONTENT_CLOSE``), is taken here: only
        the string and the members after the choice are read; any other goes on to
        :meth:`_add_by_head`.

        Why that holds: when orjson reads what lies between the open and the first close
        as one string, the chunk holds that string there and reads on with the close;
        the members after the close are read as the rest after the head is. The choice
        then has its four keys once each, and is folded as it would be read whole.
        """
        if not self.head or not raw.startswith(self.head_content):
            return self._add_by_head(raw)
        start = len(self.head_content)
        end = raw.find(_CONTENT_CLOSE, start)
        if end < 0:
            return self._add_by_head(raw)
        try:
            content = orjson.loads(raw[start:end])
        except orjson.JSONDecodeError:
            return self._add_by_head(raw)
        if type(content) is not str:
            return self._add_by_head(raw)
        after = self._members_after(raw[end + len(_CONTENT_CLOSE) : -2])
        if after is None:
            return self._add_by_head(raw)
        state = self.choices.get(0)
        if (
            state is None
            or type(state.fields["index"]) is not int
            or type(parts := state.message.get("content")) is not _Parts
        ):
            choice = {"index": 0, "delta": {"content": content}, "logprobs": None, "finish_reason": None}
            return self._fold({"choices": [choice], **after}, True)
        parts.append(content)
        self._fold_after(after)
        return True

    def _members_after(self, tail: bytes) -> dict[str, Any] | None:
        """The members after the usual choice, from the bytes between its close and the
        line end; None unless they are what the general path would fold alike: members
        that do not repeat the head's keys, none of them an error."""
        if tail == b"}":
            return {}
        if tail[:1] != b",":
            return None
        try:
            after = orjson.loads(b"{" + tail[1:])
        except orjson.JSONDecodeError:
            return None
        if (
            type(after) is not dict
            or not after
            or not after.keys().isdisjoint(self.head_keys)
            or "error" in after
            or after.get("type") == "error"
        ):
            return None
        return after

    def _fold_after(self, after: dict[str, Any]) -> None:
        """What :meth:`_fold` does with the members after the choice, which are not "choices"."""
        top = self.top
        for key, value in after.items():
            if key in _CHUNK_ONLY:
                if key == "usage" and value is not None:
                    self.usage = value
            elif value is not None or key not in top:
                top[key] = value

    def add_run(self, chunks: Sequence[bytes], n: int) -> int:
        """Take the usual content chunks (see :meth:`add_usual`) from ``chunks[n]`` on, as
        many as come in a row (the caller checked the body has no \\r); the index of the
        first chunk not taken, which is then folded as it would be alone.

        Each is taken as the head, the usual choice around a JSON string, and members after
        it, ``}`` and the blank line, with no line end before: the string runs from the quote
        that ends the head to the quote that begins ``_QUOTED_CLOSE``, and is taken when
        orjson reads it as a string (which holds no line end). Anything else ends the run
        before anything of it is folded; so does a choice 0 that is not yet a run of content
        pieces, which :meth:`add_usual` makes one.

        The members after the choice: once a chunk ends ``,"key":value}``, the key of its
        last member (written with no backslash) and that member's value as orjson writes it,
        a scalar, the bytes before that value, ``before``, are looked for together with the
        close. A later chunk that has them and then, up to its ``}``, no line end and what
        orjson reads as one scalar holds the same members with that one value last:
        ``before`` ends where a value begins, not inside a string (that string's end would
        be the scalar's first quote, which leaves its last quote open before the ``}``), so
        the chunk is JSON exactly when the scalar is. Only that value is folded: folding the
        members before it again would change nothing (a key keeps its place, a value is
        replaced by the same value). A list or an object is left to the long way: alone it
        is one level less deep than in the chunk, which matters at orjson's depth limit.
        Members that are byte for byte those of the chunk before are not read again either.

        Where proxy._fold_scan was built, those two steady states (members as in the chunk
        before; the learnt last member with an int or a plain string) run in C as far as it can
        read every chunk exactly as orjson does; this loop takes each chunk it stops at.
        """
        state = self.choices.get(0)
        if (
            not self.head
            or state is None
            or type(state.fields["index"]) is not int
            or type(parts := state.message.get("content")) is not _Parts
        ):
            return n
        head = self.head_content + b'"'
        start = len(head) - 1
        append = parts.append
        loads = orjson.loads
        top = self.top
        scalars = _SCALARS
        quoted_close = _QUOTED_CLOSE
        close_len = len(quoted_close)
        # The close and the members after the choice up to the last one's value, once known.
        close = quoted_close
        keyed_len = 0
        name = ""
        keep = False
        last_tail: bytes | None = b"}"
        first = n
        # The C scan (proxy/_fold_scan.c) takes the chunks of the steady state (a repeated
        # tail, or a learnt last member with a plain value) and stops at the first it is not
        # sure of, which the loop below then takes as it would without it. Only an exact list
        # or tuple is scanned (a subclass may index otherwise). `bench/assembly.py --rounds 9
        # --against main`, µs a 200-chunk stream, before → with it: bench 201 → 55, openai
        # 201 → 60, usage 209 → 62, varying 762 → 709 (no run there: noise). Where it takes
        # nothing (a float "ts", a backslash in every content) it costs some 3 %.
        scan = _scan if type(chunks) is list or type(chunks) is tuple else None
        # A scan that stops at once costs a call for nothing: after two such in a row, the
        # loop takes 1, 2, 4 … chunks alone before the next (a value the scan never reads, a
        # float "ts", would otherwise cost a call a chunk); one chunk taken resets it.
        wait = backoff = 0
        steps = iter(range(n, len(chunks)))
        for n in steps:
            if scan is not None:
                if wait:
                    wait -= 1
                else:
                    at = n
                    n, last_value = scan(chunks, n, head, close, keyed_len, last_tail, parts)
                    if last_value is not None:
                        # Only the last matters: the same key each time.
                        if keep:
                            top[name] = last_value
                        last_tail = None
                    if n == at:
                        wait = backoff
                        backoff = backoff * 2 or 1
                    elif n == len(chunks):
                        return n
                    else:
                        backoff = 0
                        next(islice(steps, n - at - 1, None))  # skips those it took
            raw = chunks[n]
            if not raw.startswith(head) or raw[-3:] != b"}\n\n":
                return n
            value = None
            end = raw.find(close, start)
            if end >= 0:
                if keyed_len:
                    rest = raw[end + keyed_len : -3]
                    if 10 not in rest:
                        try:
                            value = loads(rest)
                        except orjson.JSONDecodeError:
                            pass
            elif keyed_len:
                end = raw.find(quoted_close, start)
                if end < 0:
                    return n
            else:
                return n
            try:
                # What orjson reads from a quote on is a string.
                content = loads(raw[start : end + 1])
            except orjson.JSONDecodeError:
                return n
            if type(value) in scalars:
                if keep:
                    top[name] = value
                last_tail = None
            else:
                tail = raw[end + close_len : -2]
                if tail != last_tail:
                    if 10 in tail:
                        return n
                    after = self._members_after(tail)
                    if after is None:
                        return n
                    self._fold_after(after)
                    close = quoted_close
                    keyed_len = 0
                    # Not at the run's first chunk: a run that ends there would pay for the
                    # learning and not use it.
                    if after and n > first:
                        name = next(reversed(after))
                        last = after[name]
                        # A type is read whole every time, as "error" would make it an error
                        # event; so is usage, which is not kept in ``top``.
                        if name != "type" and name != "usage" and type(last) in scalars:
                            key = orjson.dumps(name)
                            last_bytes = orjson.dumps(last)
                            if b"\\" not in key and tail.endswith(b"," + key + b":" + last_bytes + b"}"):
                                close = quoted_close + tail[: -len(last_bytes) - 1]
                                keyed_len = len(close)
                                keep = name not in _CHUNK_ONLY
                    last_tail = tail
            append(content)
        return len(chunks)

    def _add_by_head(self, raw: bytes) -> str | None | Literal[False]:
        """:meth:`add_usual` for any usual event but the usual content chunk.

        Chat chunks repeat their top-level members before ``"choices"`` (id, model,
        created …) byte for byte. Once two chunks in a row share that head, it is folded
        once, and of every later chunk that begins with it only the members after it are
        read and folded: folding the same values again would change nothing.

        Why that holds: the head is taken only where ``head + "}"`` (the head ends in a
        comma) is a non-empty JSON object, so it ends between two top-level members, and a
        chunk that begins with it is valid JSON exactly when ``"{" + the rest`` is a
        non-empty object; the rest's keys must not repeat the head's (orjson would let a
        repeat replace the head's value); the head's members were folded as the first
        members of a chunk, and since then only chunks with the same head, whose other
        members have other keys, were folded: any other event forgets the head.
        """
        if not raw.startswith(b"data: {"):
            return False
        head = self.head
        obj: dict[str, Any] | None = None
        if head:
            self.head = b""
            if raw.startswith(head):
                obj = _usual_object(b"{" + raw[len(head) : -2])
                if obj and obj.keys().isdisjoint(self.head_members):
                    self.head = head
                    return self._fold(obj, True)
        cut = raw.find(b',"choices":', 7) + 1
        if cut:
            candidate = raw[:cut]
            if candidate == self.last_head:
                members = _usual_object(candidate[6:-1] + b"}")
                obj = _usual_object(b"{" + raw[cut:-2])
                if members and obj and obj.keys().isdisjoint(members):
                    self.head = candidate
                    self.head_members = members
                    self.head_keys = frozenset(members).union(("choices",))
                    self.head_content = candidate + _CONTENT_OPEN
                    return self._fold(members | obj, True)
            self.last_head = candidate
        obj = _usual_object(raw[6:-2])
        if obj is None:
            return False
        return self._fold(obj, True)

    def _fold(self, obj: dict[str, Any], usual: bool) -> str | None:
        self.seen = True
        top = self.top
        choices = self.choices
        try:
            for key, value in obj.items():
                if key in _CHUNK_ONLY:
                    if key == "choices" and value:
                        for choice in value:
                            if (
                                usual
                                and type(choice) is dict
                                and choice.get("logprobs") is None
                                and choice.get("finish_reason") is None
                                and type(delta := choice.get("delta")) is dict
                                and len(delta) == 1
                                and type(content := delta.get("content")) is str
                                and choice.keys() <= _PLAIN_CHOICE
                                and type(index := choice.get("index", 0)) is int
                                and (state := choices.get(index)) is not None
                                and type(state.fields["index"]) is int
                                and type(parts := state.message.get("content")) is _Parts
                            ):
                                # The usual choice: one more piece of content, nothing else.
                                # (An index of another type that hashes alike, 0.0 or False,
                                # would be written to ``fields``; a null finish_reason left
                                # out of ``fields`` still comes out as null.)
                                parts.append(content)
                            else:
                                self._add_choice(choice)
                    elif key == "usage" and value is not None:
                        self.usage = value
                elif value is not None or key not in top:
                    top[key] = value
        except _SHAPE_ERRORS as exc:
            return _shape_problem(exc)
        return None

    def _add_choice(self, choice: Any) -> None:
        if type(choice) is not dict:
            raise _Malformed("a choice is not an object")
        index = choice.get("index", 0)
        state = self.choices.get(index)
        if state is None:
            state = self.choices[index] = _Choice(index)
        fields = state.fields
        for key, value in choice.items():
            if key == "delta":
                if value:
                    _merge_increment(state.message, value)
            elif key == "text":
                if type(value) is str:
                    if state.text is None:
                        state.text = []
                    state.text.append(value)
            elif key == "logprobs":
                if value is not None:
                    state.logprobs = _merge_logprobs(state.logprobs, value)
            elif value is not None or key not in fields:
                fields[key] = value

    def result(self) -> dict[str, Any] | None:
        if not self.seen:
            return None
        chat = self.kind == "chat.completion"
        choices = [
            self._chat_choice(self.choices[i]) if chat else self._text_choice(self.choices[i])
            for i in sorted(self.choices, key=_sort_key)
        ]
        whole: dict[str, Any] = {"object": self.kind, "choices": choices}
        if self.usage is not None:
            whole["usage"] = self.usage
        whole.update(self.top)
        return _ordered(whole, _TOP_ORDER)

    @staticmethod
    def _chat_choice(state: _Choice) -> dict[str, Any]:
        message = _finish_increment(state.message)
        # The whole object always states content and refusal; it leaves out
        # the optional parts (tool_calls, function_call, audio…) that never
        # came with a value.
        for key in [k for k, v in message.items() if v is None and k not in ("content", "refusal")]:
            del message[key]
        message.setdefault("role", "assistant")
        message.setdefault("content", None)
        message.setdefault("refusal", None)
        out: dict[str, Any] = {"index": None, "message": None, "logprobs": None, "finish_reason": None}
        out.update(state.fields)
        out["message"] = _ordered(message, _MESSAGE_ORDER)
        out["logprobs"] = state.logprobs
        return out

    @staticmethod
    def _text_choice(state: _Choice) -> dict[str, Any]:
        out: dict[str, Any] = {"text": None, "index": None, "logprobs": None, "finish_reason": None}
        out.update(state.fields)
        out["text"] = "".join(state.text) if state.text is not None else ""
        out["logprobs"] = state.logprobs
        return out


def _merge_increment(dst: dict[str, Any], src: Any) -> None:
    """Fold one delta (or tool call fragment) into ``dst``."""
    if type(src) is not dict:
        raise _Malformed("a delta is not an object")
    for key, value in src.items():
        if value is None:
            if key not in dst:
                dst[key] = None
            continue
        if key == "tool_calls":
            _merge_tool_calls(dst, value)
            continue
        old = dst.get(key)
        kind = type(value)
        if old is None or (old == "" and key in _IDENTITY):
            if kind is dict:
                fresh: dict[str, Any] = {}
                dst[key] = fresh
                _merge_increment(fresh, value)
            elif kind is list:
                dst[key] = list(value)
            else:
                dst[key] = value
        elif key in _IDENTITY:
            continue
        elif kind is str:
            old_kind = type(old)
            if old_kind is _Parts:
                old.append(value)
            elif old_kind is str:
                dst[key] = _Parts((old, value))
            else:
                dst[key] = value
        elif kind is list and type(old) is list:
            old.extend(value)
        elif kind is dict and type(old) is dict:
            _merge_increment(old, value)
        else:
            dst[key] = value


def _merge_tool_calls(message: dict[str, Any], fragments: Any) -> None:
    if type(fragments) is not list:
        raise _Malformed("tool_calls is not a list")
    calls = message.get("tool_calls")
    if type(calls) is not _Calls:
        message["tool_calls"] = calls = _Calls()
    for fragment in fragments:
        if type(fragment) is not dict:
            raise _Malformed("a tool call is not an object")
        index = fragment.get("index")
        if index is None:
            index = _guess_call_index(calls, fragment)
        call = calls.get(index)
        if call is None:
            call = calls[index] = {}
        _merge_increment(call, fragment)


def _guess_call_index(calls: _Calls, fragment: dict[str, Any]) -> Any:
    """Place a fragment without ``index`` (some servers omit it).

    A fragment with a new id starts a call; one without continues the last.
    """
    call_id = fragment.get("id")
    if calls and not call_id:
        return next(reversed(calls))
    for index, call in calls.items():
        if call_id and call.get("id") == call_id:
            return index
    index = len(calls)
    while index in calls:
        index += 1
    return index


def _finish_increment(merged: dict[str, Any]) -> dict[str, Any]:
    """Join string pieces and turn merged tool calls into the list the API returns."""
    for key, value in merged.items():
        kind = type(value)
        if kind is _Parts:
            merged[key] = "".join(value)
        elif kind is dict:
            _finish_increment(value)
        elif kind is _Calls:
            merged[key] = [_finish_call(value[i]) for i in sorted(value, key=_sort_key)]
    return merged


def _finish_call(call: dict[str, Any]) -> dict[str, Any]:
    _finish_increment(call)
    call.pop("index", None)
    if "function" in call and call.get("type") is None:
        call["type"] = "function"
    return _ordered(call, ("id", "type", "function"))


def _merge_logprobs(acc: dict[str, Any] | None, value: Any) -> dict[str, Any]:
    """Concatenate the token lists of chat (content, refusal) or legacy
    (tokens, token_logprobs, top_logprobs, text_offset) logprobs."""
    if type(value) is not dict:
        raise _Malformed("logprobs is not an object")
    if acc is None:
        return {k: list(v) if type(v) is list else v for k, v in value.items()}
    for key, item in value.items():
        if type(item) is list:
            old = acc.get(key)
            if type(old) is list:
                old.extend(item)
            else:
                acc[key] = list(item)
        elif item is not None or key not in acc:
            acc[key] = item
    return acc


# --- the Responses API -----------------------------------------------------------------

_FINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})

# The events that carry pieces of the output; kept aside in case the stream
# never reaches a final event and the output has to be rebuilt from them.
_OUTPUT_EVENTS = frozenset({
    "response.output_item.added",
    "response.output_item.done",
    "response.content_part.added",
    "response.content_part.done",
    "response.output_text.delta",
    "response.output_text.done",
    "response.refusal.delta",
    "response.refusal.done",
    "response.function_call_arguments.delta",
    "response.function_call_arguments.done",
})


class _ResponsesFold:
    """Typed Responses events: the final ``response`` object when one arrives,
    else the last ``response`` seen with the output rebuilt from item events."""

    __slots__ = ("response", "final", "pieces")

    def __init__(self) -> None:
        self.response: dict[str, Any] | None = None
        self.final: dict[str, Any] | None = None
        self.pieces: list[tuple[str, dict[str, Any]]] = []

    def add(self, obj: dict[str, Any], name: str | None) -> str | None:
        event_type = obj.get("type", name)
        if type(event_type) is not str:
            return "event without a type ignored"
        if event_type in _OUTPUT_EVENTS:
            if type(obj.get("output_index", 0)) is not int or type(obj.get("content_index", 0)) is not int:
                return f"{event_type} without integer indexes ignored"
            if self.final is None:
                self.pieces.append((event_type, obj))
            return None
        response = obj.get("response")
        if type(response) is dict:
            if event_type in _FINAL_EVENTS:
                self.final = response
            else:
                self.response = response
            return None
        if event_type.startswith("response."):
            # Events this fold does not read (reasoning summaries, tool
            # progress…) are covered by the final response object.
            return None
        return f"unknown event type {event_type!r} ignored"

    def result(self) -> dict[str, Any] | None:
        if self.final is not None:
            return self.final
        if self.response is None and not self.pieces:
            return None
        reply = self.response if self.response is not None else {}
        if self.pieces:
            reply["output"] = _rebuild_output(self.pieces)
        return reply


def _rebuild_output(events: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """The ``output`` list as far as the item, part and delta events built it.

    Indexes were checked to be ints by :meth:`_ResponsesFold.add`.
    """
    items: dict[int, dict[str, Any]] = {}
    parts: dict[tuple[int, int], dict[str, Any]] = {}
    # Deltas are gathered as pieces and joined once at the end.
    texts: dict[tuple[int, int, str], list[str]] = {}
    arguments: dict[int, list[str]] = {}
    for event_type, ev in events:
        oi = ev.get("output_index", 0)
        ci = ev.get("content_index", 0)
        if event_type == "response.output_item.added" or event_type == "response.output_item.done":
            item = ev.get("item")
            if type(item) is dict:
                items[oi] = item
                if event_type == "response.output_item.done":
                    # The finished item holds its whole content already.
                    arguments.pop(oi, None)
                    for slot in [k for k in parts if k[0] == oi]:
                        del parts[slot]
                    for piece_slot in [k for k in texts if k[0] == oi]:
                        del texts[piece_slot]
        elif event_type == "response.content_part.added" or event_type == "response.content_part.done":
            part = ev.get("part")
            if type(part) is dict:
                _item_at(items, oi, ev, "message")
                parts[oi, ci] = part
                if event_type == "response.content_part.done":
                    texts.pop((oi, ci, "text"), None)
                    texts.pop((oi, ci, "refusal"), None)
        elif event_type.startswith("response.function_call_arguments."):
            _item_at(items, oi, ev, "function_call")
            if event_type.endswith(".delta"):
                _add_piece(arguments.setdefault(oi, []), ev.get("delta"))
            else:
                arguments[oi] = []
                _add_piece(arguments[oi], ev.get("arguments"))
        else:
            _item_at(items, oi, ev, "message")
            key = "refusal" if event_type.startswith("response.refusal.") else "text"
            if event_type.endswith(".delta"):
                _add_piece(texts.setdefault((oi, ci, key), []), ev.get("delta"))
            else:
                texts[oi, ci, key] = []
                _add_piece(texts[oi, ci, key], ev.get(key))

    for (oi, ci, key), pieces in texts.items():
        part = parts.get((oi, ci))
        if part is None:
            part = parts[oi, ci] = (
                {"type": "output_text", "annotations": []} if key == "text" else {"type": "refusal"}
            )
        part[key] = "".join(pieces)
    for (oi, ci), part in sorted(parts.items()):
        content = items[oi].get("content")
        if type(content) is not list:
            items[oi]["content"] = content = []
        # Append rather than pad: a wild content_index must not allocate.
        if 0 <= ci < len(content):
            content[ci] = part
        else:
            content.append(part)
    for oi, pieces in arguments.items():
        items[oi]["arguments"] = "".join(pieces)
    return [items[i] for i in sorted(items)]


def _item_at(items: dict[int, dict[str, Any]], oi: int, ev: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """The output item at ``oi``; a stand-in when its ``added`` event never came."""
    item = items.get(oi)
    if item is None:
        item = items[oi] = {"id": ev.get("item_id"), "type": kind, "status": "in_progress"}
        if kind == "message":
            item["role"] = "assistant"
    return item


def _add_piece(pieces: list[str], value: Any) -> None:
    if type(value) is str:
        pieces.append(value)


# --- small helpers -----------------------------------------------------------------------

def _ordered(obj: dict[str, Any], order: Sequence[str]) -> dict[str, Any]:
    """``obj`` with the keys of ``order`` first, the API's usual layout."""
    out = {k: obj[k] for k in order if k in obj}
    out.update(obj)
    return out


def _sort_key(index: Any) -> tuple[int, Any]:
    # Indexes are ints from any sane server; keep odd ones sortable, after them.
    return (0, index) if type(index) is int else (1, repr(index))


def _count(usage: Mapping[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = usage.get(key)
        if type(value) is int:
            return value
    return None


def _collect_text(texts: list[str], value: Any) -> None:
    """Add a string, or the text of a list of content parts."""
    if type(value) is str:
        if value:
            texts.append(value)
    elif type(value) is list:
        for part in value:
            if isinstance(part, Mapping):
                for key in ("text", "refusal"):
                    text = part.get(key)
                    if type(text) is str and text:
                        texts.append(text)


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _preview(value: str | bytes, limit: int = 60) -> str:
    return repr(value[:limit]) + ("…" if len(value) > limit else "")
