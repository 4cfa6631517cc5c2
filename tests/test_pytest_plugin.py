"""The pytest plugin, run as a user runs it: ``pytester`` writes a test suite and runs pytest on
it in a subprocess, with the plugin loaded from its ``pytest11`` entry point."""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.fakes import FakeUpstream
from tests.shapes import SHAPES

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "tests" / "test_readme_example.py"
CASSETTE = ROOT / "tests" / "cassettes" / "test_readme_example.jsonl"
INI = """
[pytest]
filterwarnings = error
asyncio_default_fixture_loop_scope = function
"""
OTHER_QUESTION = '''
import openai


def test_other_question(streamproxy):
    with openai.OpenAI(base_url=streamproxy.base_url, api_key="sk-replay", max_retries=0) as client:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Say goodbye."}])


def test_swallowed_miss(streamproxy):
    with openai.OpenAI(base_url=streamproxy.base_url, api_key="sk-replay", max_retries=0) as client:
        try:
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Say hi."}])
        except openai.NotFoundError:
            pass
'''
GOODBYE = '''

def test_goodbye(streamproxy):
    with openai.OpenAI(base_url=streamproxy.base_url, api_key=API_KEY, max_retries=0) as client:
        stream = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Bye."}], stream=True)
        assert [chunk for chunk in stream]
'''


@pytest.fixture
def silent_upstream() -> Iterator[tuple[str, socket.socket]]:
    """A listening loopback socket that never accepts: any connection attempt stays in its backlog."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1", listener


def _connected(listener: socket.socket) -> bool:
    try:
        conn, _ = listener.accept()
    except BlockingIOError:
        return False
    conn.close()
    return True


def _suite(pytester: pytest.Pytester, tests: dict[str, str]) -> Path:
    pytester.makeini(INI)
    tests_dir = pytester.mkdir("tests")
    for name, source in tests.items():
        (tests_dir / f"{name}.py").write_text(source)
    return tests_dir


def test_readme_example_replays_the_committed_cassette_with_no_network(
    pytester: pytest.Pytester, silent_upstream: tuple[str, socket.socket]
) -> None:
    example = EXAMPLE.read_text()
    assert example in (ROOT / "README.md").read_text(), "the README's example and tests/test_readme_example.py differ"
    tests_dir = _suite(pytester, {"test_chat": example})
    cassette = tests_dir / "cassettes" / "test_chat.jsonl"
    cassette.parent.mkdir()
    shutil.copy(CASSETTE, cassette)
    url, listener = silent_upstream
    result = pytester.runpytest_subprocess("--streamproxy-upstream", url, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    assert not _connected(listener)
    assert cassette.read_bytes() == CASSETTE.read_bytes()  # replay writes nothing


def test_a_miss_or_a_broken_cassette_fails_the_test_with_a_clear_message(
    pytester: pytest.Pytester, silent_upstream: tuple[str, socket.socket]
) -> None:
    _suite(pytester, {"test_other": OTHER_QUESTION, "test_broken": EXAMPLE.read_text()})
    recorded = pytester.mkdir("recorded")
    shutil.copy(CASSETTE, recorded / "test_other.jsonl")
    broken = recorded / "test_broken.jsonl"
    broken.write_bytes(CASSETTE.read_bytes().splitlines(keepends=True)[0] + b'{"format": 1, "id": \n')
    nearest = orjson.loads(CASSETTE.read_bytes().splitlines()[-1])["id"]
    url, listener = silent_upstream
    result = pytester.runpytest_subprocess(
        "--streamproxy-upstream", url, "--streamproxy-cassette-dir", "recorded", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(failed=2, errors=2)
    out = result.stdout.str()
    assert f"streamproxy: broken cassette:\n{broken}:2: not JSON" in out
    assert "NotFoundError" in out and f"Nearest recording: {nearest}" in out
    assert 'messages[0].content: recorded "Say hello.", got "Say goodbye."' in out
    assert "streamproxy: 1 request(s) had no recording" in out
    assert 'messages[0].content: recorded "Say hello.", got "Say hi."' in out
    assert not _connected(listener)


def test_two_modules_never_share_a_cassette(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    for sub in ("a", "b"):
        pytester.mkpydir(sub).joinpath("test_same.py").write_text("def test_it(streamproxy):\n    pass\n")
    result = pytester.runpytest_subprocess("--streamproxy-cassette-dir", "recs", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)
    assert "would share the cassette" in result.stdout.str()


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [("--streamproxy-mode", "recrod", "unknown mode 'recrod'"), ("--streamproxy-upstream", "ftp://x", "need http:// or https://")],
)
def test_a_bad_option_is_a_usage_error(pytester: pytest.Pytester, option: str, value: str, says: str) -> None:
    _suite(pytester, {"test_nothing": "def test_nothing():\n    pass\n"})
    result = pytester.runpytest_subprocess(option, value)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert says in result.stderr.str()


async def test_record_then_replay_then_grow_in_auto_mode(pytester: pytest.Pytester, fake_upstream: FakeUpstream) -> None:
    fake_upstream.sse("/v1/chat/completions", SHAPES["chat_simple"].events)
    tests_dir = _suite(pytester, {"test_chat": EXAMPLE.read_text()})
    cassette = tests_dir / "cassettes" / "test_chat.jsonl"

    def run(mode: str) -> pytest.RunResult:
        return pytester.runpytest_subprocess(
            "--streamproxy-mode", mode, "--streamproxy-upstream", fake_upstream.url, "-p", "no:cacheprovider"
        )

    # The fake upstream runs on this test's loop: pytest runs in a thread meanwhile.
    recorded = await asyncio.to_thread(run, "record")
    recorded.assert_outcomes(passed=2)
    assert len(fake_upstream.received) == 2
    lines = cassette.read_bytes().splitlines(keepends=True)
    assert [orjson.loads(line)["format"] for line in lines] == [1, 1]
    assert b"sk-replay" not in cassette.read_bytes()  # the key the tests sent

    (await asyncio.to_thread(run, "replay")).assert_outcomes(passed=2)
    assert len(fake_upstream.received) == 2

    (tests_dir / "test_chat.py").write_text(EXAMPLE.read_text() + GOODBYE)
    (await asyncio.to_thread(run, "auto")).assert_outcomes(passed=3)
    assert len(fake_upstream.received) == 3  # only the new question went upstream
    grown = cassette.read_bytes().splitlines(keepends=True)
    assert len(grown) == 3 and grown[:2] == lines  # what was there stays byte for byte

    (await asyncio.to_thread(run, "replay")).assert_outcomes(passed=3)
    assert len(fake_upstream.received) == 3
