"""The ``streamproxy`` command. Commands live in ``cli_*`` modules by group; this file holds
the group, the options every command shares, and the one place errors become exit codes."""

from __future__ import annotations

import asyncio
import importlib
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

from proxy.errors import ConfigError, StreamproxyError
from proxy.settings import DEFAULT_DB

__all__ = ["configure_logging", "db_option", "every_command", "fail", "main", "run"]

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


def configure_logging(level: str) -> None:
    """Log lines as ``serve`` (and the database check it runs in a child process) writes them."""
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Alembic announces each of its plugins at INFO on every start; the migrations it runs stay visible.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


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


# Each command's module, imported when the command is run or listed: ``serve`` must not load what
# the reading commands need (SQLAlchemy: some 24 MB of a serving process that never reads).
_MODULES = {
    "serve": "proxy.cli_serve",
    "list": "proxy.cli_read",
    "show": "proxy.cli_read",
    "replay": "proxy.cli_replay",
    "export": "proxy.cli_replay",
    "import": "proxy.cli_replay",
    "stats": "proxy.cli_stats",
    "db": "proxy.cli_db",
    "prune": "proxy.cli_admin",
}


class _LazyGroup(click.Group):
    """Click's pattern for lazily loaded subcommands: a command's module registers it when asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_MODULES)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = _MODULES.get(cmd_name)
        if module is not None and cmd_name not in self.commands:
            importlib.import_module(module).register(self)
            _environment_for_every_option(self)
        return self.commands.get(cmd_name)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="streamproxy")
def main() -> None:
    """Relay OpenAI-compatible APIs byte for byte, record every stream, replay it offline."""


def every_command() -> dict[str, click.Command]:
    """Every command, each module loaded (for checks over all of them)."""
    with click.Context(main) as ctx:
        return {name: cmd for name in main.list_commands(ctx) if (cmd := main.get_command(ctx, name)) is not None}


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
