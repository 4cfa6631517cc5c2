"""``replay``, ``export`` and ``import``: recordings out of the database and back in."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import click
import orjson

from proxy.assemble import reply_text
from proxy.cli import db_option, fail, run
from proxy.cli_read import filter_options, load_recording, with_store
from proxy.errors import ConfigError
from proxy.exchange import ImportResult, export_line, import_lines, iter_export, recording_ids
from proxy.faults import Faults, plan
from proxy.filters import Filters
from proxy.record import Record
from proxy.replay import ended_cleanly, paced
from proxy.settings import normalize_db_url
from proxy.store import Store, open_store

__all__ = ["delta_text", "register"]


def _event_data(chunk: bytes) -> Any:
    """The JSON in one SSE event's ``data:`` lines, or None."""
    lines = chunk.decode("utf-8", errors="replace").splitlines()
    data = "\n".join(line[5:].removeprefix(" ") for line in lines if line.startswith("data:"))
    if not data or data == "[DONE]":
        return None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None


_RESPONSES_DELTAS = ("response.output_text.delta", "response.refusal.delta")


def delta_text(chunk: bytes) -> str:
    """The text one SSE event adds to the reply: the first choice's chat ``content`` or
    ``refusal`` delta, a legacy completion's ``text``, or a Responses text or refusal delta."""
    obj = _event_data(chunk)
    if not isinstance(obj, dict):
        return ""
    if obj.get("type") in _RESPONSES_DELTAS:
        return str(obj.get("delta") or "")
    for choice in obj.get("choices") or []:
        if isinstance(choice, dict) and choice.get("index", 0) == 0:
            delta = choice.get("delta")
            if isinstance(delta, dict):
                return str(delta.get("content") or delta.get("refusal") or "")
            return str(choice.get("text") or "")
    return ""


def _event_error(chunk: bytes) -> str | None:
    obj = _event_data(chunk)
    if isinstance(obj, dict) and isinstance(obj.get("error"), dict):
        return str(obj["error"].get("message") or obj["error"])
    return None


async def _play(rec: Record, speed: float, raw: bool) -> None:
    out = sys.stdout.buffer
    event_stream = (rec.content_type or "").startswith("text/event-stream")
    async for data in paced(plan(rec.chunks, rec.offsets_ms, Faults()).pieces, speed):
        if raw:
            out.write(data)
        elif event_stream:
            out.write(delta_text(data).encode())
            error = _event_error(data)
            if error:
                click.echo(f"\nstream error: {error}", err=True)
        out.flush()
    if not raw:
        if not event_stream:
            out.write((reply_text(rec.reply) or rec.body.decode("utf-8", errors="replace")).encode())
        out.write(b"\n")
        out.flush()
    if not ended_cleanly(rec):
        click.echo(f"streamproxy: the recorded stream broke off ({rec.outcome}: {rec.error})", err=True)


@click.command()
@click.argument("rec_id", metavar="ID")
@db_option
@click.option(
    "--speed", default=1.0, show_default=True, type=click.FloatRange(min=0), envvar=["STREAMPROXY_SPEED", "STREAMPROXY_REPLAY_SPEED"],
    show_envvar=True, help="Pacing divisor: 2 is twice as fast, 0 no pauses.",
)
@click.option("--raw", is_flag=True, help="Write the body bytes as recorded instead of the reply text.")
def replay(rec_id: str, db: str, speed: float, raw: bool) -> None:
    """Re-emit one recording with its original timing, as it streamed."""
    run(_play(load_recording(db, rec_id), speed, raw))


class _NoProgress:
    def update(self, n: int) -> None:
        pass


@contextlib.contextmanager
def _progress(length: int, label: str) -> Iterator[Any]:
    """A progress bar on stderr when it is a terminal; nothing otherwise (pipes, CI, tests)."""
    if not sys.stderr.isatty():
        yield _NoProgress()
        return
    with click.progressbar(length=length, label=label, file=sys.stderr) as bar:
        yield bar


async def _export(store: Store, filters: Filters, out: BinaryIO) -> int:
    ids = await recording_ids(store, filters)
    with _progress(len(ids), "exporting") as bar:
        async for rec in iter_export(store, ids):
            out.write(export_line(rec))
            bar.update(1)
    return len(ids)


@click.command("export")
@db_option
@filter_options
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None, help="Write to FILE [default: stdout].")
def export_cmd(db: str, output: str | None, **filter_values: str | None) -> None:
    """Recordings as JSON Lines, oldest first, one a line (the cassette format)."""
    try:
        filters = Filters.from_mapping(filter_values)
    except ConfigError as exc:
        fail(str(exc))
        return
    if output is None:
        run(with_store(db, lambda s: _export(s, filters, sys.stdout.buffer)))
        return
    # Written beside and renamed, so a failed export never leaves half a file behind.
    tmp = Path(output + ".partial")
    try:
        with tmp.open("wb") as f:
            count = run(with_store(db, lambda s: _export(s, filters, f)))
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    click.echo(f"exported {count} recording(s) to {output}", err=True)


async def _import(db: str, path: str) -> tuple[ImportResult, int]:
    engine = await open_store(normalize_db_url(db), create=True)
    store = Store(engine)
    try:
        before = await store.count()
        size = os.path.getsize(path) if path != "-" else 0
        with contextlib.ExitStack() as stack:
            f = sys.stdin.buffer if path == "-" else stack.enter_context(open(path, "rb"))
            bar = stack.enter_context(_progress(size, "importing"))
            result = await import_lines(store, f, name=path, progress=bar.update)
        return result, await store.count() - before
    finally:
        await engine.dispose()


@click.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@db_option
def import_cmd(file: str, db: str) -> None:
    """Recordings from an export file back into the database. Ids are kept; importing twice adds nothing."""
    result, added = run(_import(db, file))
    click.echo(f"imported {added} new recording(s) from {file} ({result.read - added} already stored)", err=True)
    for error in result.errors:
        click.echo(f"streamproxy: error: {error}", err=True)
    if result.errors:
        fail(f"{len(result.errors)} bad line(s) in {file}; every other line was imported", 1)


def register(group: click.Group) -> None:
    group.add_command(replay)
    group.add_command(export_cmd)
    group.add_command(import_cmd)
