"""Match keys and the explanation of a miss: pure functions over request bodies."""

from __future__ import annotations

import orjson

from proxy.matching import differences, match_key

BODY = {"model": "m", "messages": [{"role": "user", "content": "Say hello"}], "temperature": 0.2, "stream": True}


def _b(obj: object) -> bytes:
    return orjson.dumps(obj)


def test_key_ignores_whitespace_key_order_and_ignored_fields() -> None:
    spaced = b'{ "stream": true, "temperature": 0.2,\n "messages": [{"content": "Say hello", "role": "user"}], "model": "m" }'
    assert match_key("POST", "/v1/chat/completions", spaced) == match_key("post", "/v1/chat/completions", _b(BODY))
    assert match_key("POST", "/v1/x", _b(BODY)) != match_key("POST", "/v1/y", _b(BODY))
    assert match_key("POST", "/v1/x", _b({**BODY, "user": "a"}), ["user"]) == match_key("POST", "/v1/x", _b(BODY), ["user"])


def test_a_body_the_relay_already_parsed_gets_the_key_an_import_computes() -> None:
    """The relay hands over the body it parsed; export/import and replay parse it themselves."""
    spaced = b'{ "stream": true, "user": "a", "temperature": 0.2, "messages": [{"content": "Say hello", "role": "user"}], "model": "m" }'
    for ignore in ([], ["user"]):
        assert match_key("POST", "/v1/x", spaced, ignore, orjson.loads(spaced)) == match_key("POST", "/v1/x", spaced, ignore)


def test_differences_name_the_first_differing_place_per_field() -> None:
    got = {**BODY, "messages": [{"role": "user", "content": "Say hi"}, {"role": "user", "content": "more"}], "stream": 1, "n": 2}
    del got["temperature"]
    assert differences(_b(BODY), _b(got)) == [
        'messages[0].content: recorded "Say hello", got "Say hi"',
        "n: recorded absent, got 2",
        "stream: recorded true, got 1",
        "temperature: recorded 0.2, got absent",
    ]
    assert differences(_b(BODY), _b({**BODY, "messages": BODY["messages"] * 2})) == ["messages: recorded 1 items, got 2"]
    assert differences(_b(BODY), _b({**BODY, "temperature": 0.9}), ["temperature"]) == []


def test_differences_shorten_long_values_and_handle_non_json() -> None:
    (line,) = differences(_b({"input": "x" * 500}), _b({"input": "y"}))
    assert len(line) < 150 and line.endswith('got "y"')
    assert differences(b"abc", b"abd") == ["body: recorded 3 bytes, got 3 bytes (not both JSON objects)"]
    assert differences(b"", b"") == []
