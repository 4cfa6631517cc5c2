"""The ``streamproxy`` command. Commands live in ``cli_*`` modules by group; this file holds
the group, the options every command shares, and the one place errors become exit codes."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

from proxy.errors import ConfigError, StreamproxyError
from proxy.settings import DEFAULT_DB

__all__ = ["db_option", "fail", "main", "run"]

T = TypeVar("T")


def db_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--db",
        envvar="STREAMPROXY_DB",
        default=DEFAULT_DB,
        show_default=True,
        show_envvar=True,
        help="Database URL: sqlite+aiosqlite:///FILE or postgresql+asyncpg://USER@HOST/DB.",
    )(f)


def fail(message: str, code: int = 2) -> None:
    """One clear line on stderr, no traceback."""
    click.echo(f"streamproxy: error: {message}", err=True)
    sys.exit(code)


def run(coro: Awaitable[T]) -> T:
    """Run a command's coroutine; our errors become one line and a non-zero exit."""

    async def wrapper() -> T:
        return await coro

    try:
        return asyncio.run(wrapper())
    except ConfigError as exc:
        fail(str(exc), 2)
    except StreamproxyError as exc:
        fail(str(exc), 1)
    raise AssertionError("unreachable")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="streamproxy")
def main() -> None:
    """Relay OpenAI-compatible APIs byte for byte, record every stream, replay it offline."""


def _register() -> None:
    from proxy import cli_admin, cli_db, cli_read, cli_replay, cli_serve, cli_stats

    for module in (cli_serve, cli_read, cli_replay, cli_stats, cli_db, cli_admin):
        module.register(main)
    _environment_for_every_option(main)


def _environment_for_every_option(command: click.Command) -> None:
    """SPEC: every option also reads ``STREAMPROXY_<OPTION>``; options that name no variable get theirs here."""
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _environment_for_every_option(sub)
        return
    for param in command.params:
        if isinstance(param, click.Option) and param.envvar is None:
            flag = next((o for o in param.opts if o.startswith("--")), None)
            if flag is not None:
                param.envvar = "STREAMPROXY_" + flag[2:].upper().replace("-", "_")
                param.show_envvar = True


_register()
