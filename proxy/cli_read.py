"""Read-only commands: ``list`` and ``show``. They never create a database."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click
import orjson

from proxy.cli import db_option, run
from proxy.errors import StoreError
from proxy.filters import Filters
from proxy.record import Record, iso, to_json
from proxy.render import render_recording
from proxy.settings import normalize_db_url
from proxy.store import Store, open_store

__all__ = ["filter_options", "load_recording", "register", "with_store"]

T = TypeVar("T")


async def with_store(db: str, action: Callable[[Store], Awaitable[T]]) -> T:
    """Open an existing database (never create one), run ``action``, close."""
    engine = await open_store(normalize_db_url(db), create=False)
    try:
        return await action(Store(engine))
    finally:
        await engine.dispose()


def load_recording(db: str, rec_id: str) -> Record:
    """One recording with its chunks, from an existing database; a missing one is a clear error."""

    async def get(store: Store) -> Record:
        rec = await store.get(rec_id, chunks=True)
        if rec is None:
            raise StoreError(f"no recording {rec_id}")
        return rec

    return run(with_store(db, get))


def filter_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The filters, under the same names as the audit API's parameters."""
    for name, help_ in reversed(
        [
            ("--model", "Only this model."),
            ("--outcome", "complete | client_closed | upstream_closed | upstream_error | proxy_error."),
            ("--path", "Only this path, e.g. /v1/chat/completions."),
            ("--key", "Only this key fingerprint."),
            ("--search", 'Words (or "quoted phrases") that must all appear in the messages or the reply.'),
            ("--since", "From this time: ISO 8601 or 15m / 2h / 7d ago."),
            ("--until", "Before this time: ISO 8601 or 15m / 2h / 7d ago."),
        ]
    ):
        env = "STREAMPROXY_" + name[2:].upper()
        f = click.option(name, envvar=env, default=None, help=help_)(f)
    return f


def _dump(obj: Any) -> str:
    return orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode()


def _row(rec: Record) -> str:
    ttfb = f"{rec.ttfb_ms:.0f}ms" if rec.ttfb_ms is not None else "-"
    dur = f"{rec.duration_ms:.0f}ms" if rec.duration_ms is not None else "-"
    started = (iso(rec.started_at) or "")[:19].replace("T", " ")
    return (
        f"{rec.id}  {started}  {(rec.model or '-')[:24]:<24}  {rec.path[:28]:<28}  "
        f"{rec.status if rec.status is not None else '-':>3}  {rec.outcome:<15}  {ttfb:>7}  {dur:>8}"
    )


@click.command("list")
@db_option
@filter_options
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 100000), help="At most this many.")
@click.option("--cursor", default=None, metavar="ID", help="Continue after this id (the last one of the previous page).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
def list_cmd(db: str, limit: int, cursor: str | None, as_json: bool, **filters: str | None) -> None:
    """Recordings, newest first."""
    f = run(_filters(filters))
    records, next_cursor = run(with_store(db, lambda s: s.list_recordings(f, limit=limit, cursor=cursor)))
    if as_json:
        click.echo(_dump([to_json(r) for r in records]))
        return
    if not records:
        click.echo("no recordings match", err=True)
        return
    click.echo(f"{'ID':<26}  {'STARTED (UTC)':<19}  {'MODEL':<24}  {'PATH':<28}  {'ST':>3}  {'OUTCOME':<15}  {'TTFB':>7}  {'DURATION':>8}")
    for rec in records:
        click.echo(_row(rec))
    if next_cursor:
        click.echo(f"more: add --cursor {next_cursor}", err=True)


async def _filters(values: dict[str, str | None]) -> Filters:
    return Filters.from_mapping(values)


@click.command()
@click.argument("rec_id", metavar="ID")
@db_option
@click.option("--json", "as_json", is_flag=True, help="The recording's JSON object.")
@click.option("--chunks", is_flag=True, help="Include every chunk (with --json), or list them.")
def show(rec_id: str, db: str, as_json: bool, chunks: bool) -> None:
    """One recording, as a conversation (or JSON)."""
    rec = load_recording(db, rec_id)
    if as_json:
        click.echo(_dump(to_json(rec, chunks=chunks)))
        return
    click.echo(render_recording(to_json(rec)))
    if chunks:
        click.echo("")
        for i, (off, data) in enumerate(zip(rec.offsets_ms, rec.chunks, strict=True)):
            click.echo(f"#{i:<4} {off:>10.1f} ms  {data.decode('utf-8', errors='replace')!r}")


def register(group: click.Group) -> None:
    group.add_command(list_cmd)
    group.add_command(show)
