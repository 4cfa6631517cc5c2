"""The CLI, invoked as a user would: a real ``streamproxy serve`` process and the read commands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import openai
import orjson

from tests.conftest import API_KEY
from tests.fakes import FakeUpstream
from tests.processes import ServeProcess
from tests.test_relay import PIECES, REQUEST, chat_events


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "proxy", *args], capture_output=True, text=True, cwd=cwd, timeout=60)


async def test_serve_records_and_list_show_read_it(fake_upstream: FakeUpstream, tmp_path: Path, db_url: str) -> None:
    fake_upstream.sse("/v1/chat/completions", chat_events(PIECES))
    server = ServeProcess("--upstream", fake_upstream.url + "/v1", "--db", db_url, log_path=tmp_path / "serve.log")
    await server.start()
    try:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0)
        resp = await client.chat.completions.with_raw_response.create(**REQUEST, stream=True)
        rec_id = resp.headers["x-recording-id"]
        text = "".join([c.choices[0].delta.content or "" async for c in resp.parse() if c.choices])
        await client.close()
        assert text == "".join(PIECES)
    finally:
        assert await server.stop() == 0
    assert fake_upstream.received[-1].path == "/v1/chat/completions"  # /v1 in --upstream is not doubled

    listed = cli("list", "--json", "--db", db_url, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    rows = orjson.loads(listed.stdout)
    assert [r["id"] for r in rows] == [rec_id]

    shown = cli("show", rec_id, "--json", "--chunks", "--db", db_url, cwd=tmp_path)
    obj = orjson.loads(shown.stdout)
    assert obj["reply"]["choices"][0]["message"]["content"] == "".join(PIECES)
    assert "".join(c["data"] for c in obj["chunks"]) == b"".join(chat_events(PIECES)).decode()

    human = cli("show", rec_id, "--db", db_url, cwd=tmp_path)
    assert human.returncode == 0 and "".join(PIECES) in human.stdout

    assert API_KEY not in (tmp_path / "serve.log").read_text()


def test_bad_configuration_is_one_line_and_nonzero(tmp_path: Path) -> None:
    for args in (["serve", "--mode", "recrod"], ["serve", "--upstream", "not a url"], ["serve", "--max-body", "lots"]):
        r = cli(*args, cwd=tmp_path)
        assert r.returncode != 0
        assert r.stderr.count("\n") == 1 and r.stderr.startswith("streamproxy: error:"), r.stderr
        assert "Traceback" not in r.stderr


def test_read_only_commands_never_create_a_database(tmp_path: Path) -> None:
    for args in (["list"], ["show", "01ABC"]):
        r = cli(*args, cwd=tmp_path)
        assert r.returncode != 0 and "no database" in r.stderr
    assert not (tmp_path / "streamproxy.db").exists()


def test_unreachable_database_at_start_is_one_line(tmp_path: Path) -> None:
    r = cli("serve", "--db", "postgresql+asyncpg://postgres:hunter2@127.0.0.1:1/x", cwd=tmp_path)
    assert r.returncode != 0 and r.stderr.count("\n") == 1
    assert "hunter2" not in r.stderr and "***" in r.stderr


def test_db_upgrade_creates_and_migrates(tmp_path: Path) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"
    r = cli("db", "upgrade", "--db", db, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "at revision" in r.stdout and (tmp_path / "x.db").exists()


def test_every_option_reads_its_environment_variable() -> None:
    import click

    from proxy.cli import every_command

    def options(cmd: click.Command) -> list[click.Option]:
        if isinstance(cmd, click.Group):
            return [o for sub in cmd.commands.values() for o in options(sub)]
        return [p for p in cmd.params if isinstance(p, click.Option) and p.name not in ("help", "version")]

    seen = [o for cmd in every_command().values() for o in options(cmd)]
    assert len(seen) > 40
    for opt in seen:
        flag = next(o for o in opt.opts if o.startswith("--"))
        expected = "STREAMPROXY_" + flag[2:].upper().replace("-", "_")
        envvars = [opt.envvar] if isinstance(opt.envvar, str) else list(opt.envvar or [])
        assert expected in envvars, (flag, opt.envvar)


def test_a_flag_beats_the_environment_which_beats_the_default(tmp_path: Path) -> None:
    import os

    env = {**os.environ, "STREAMPROXY_MODE": "bogus-from-env"}
    from_env = subprocess.run([sys.executable, "-m", "proxy", "serve"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)
    assert from_env.returncode != 0 and "bogus-from-env" in from_env.stderr
    flag = subprocess.run(
        [sys.executable, "-m", "proxy", "serve", "--mode", "bogus-from-flag"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60
    )
    assert flag.returncode != 0 and "bogus-from-flag" in flag.stderr


def test_the_lazily_loaded_commands_are_every_command_their_modules_register() -> None:
    from proxy.cli import every_command, main

    listed = every_command()  # loads every module, each registering all of its commands
    assert set(main.commands) == set(listed)
    assert {"serve", "list", "show", "replay", "export", "import", "stats", "db", "prune"} <= set(listed)
