"""``streamproxy prune``: retention for the recordings tables, which only grow otherwise."""

from __future__ import annotations

import time

import click

from proxy.cli import db_option, fail, run
from proxy.cli_read import with_store
from proxy.errors import ConfigError
from proxy.filters import parse_when
from proxy.record import iso
from proxy.settings import mask_url, normalize_db_url

__all__ = ["register"]


class _Progress:
    """``deleted X of N (P%)`` on stderr: after the first batch, then at most once a second, and at the end."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self._last = 0.0

    def __call__(self, deleted: int) -> None:
        self.done += deleted
        now = time.monotonic()
        if self._last and now - self._last < 1.0 and self.done < self.total:
            return
        self._last = now
        pct = 100 * self.done // max(self.total, 1)
        click.echo(f"deleted {self.done} of {self.total} ({pct}%)", err=True)


@click.command()
@db_option
@click.option(
    "--older-than", required=True, envvar="STREAMPROXY_OLDER_THAN", show_envvar=True,
    help="Delete recordings that started longer ago than this (30d, 12h, 2w), or before this ISO 8601 time.",
)
@click.option(
    "--batch-size", default=1000, show_default=True, envvar="STREAMPROXY_BATCH_SIZE", show_envvar=True,
    type=click.IntRange(1, 10000), help="Recordings deleted per transaction; smaller holds locks for less time.",
)
@click.option("--dry-run", is_flag=True, help="Only count what would be deleted.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before deleting.")
def prune(db: str, older_than: str, batch_size: int, dry_run: bool, yes: bool) -> None:
    """Delete recordings older than --older-than, in batches, with progress on stderr."""
    try:
        url = normalize_db_url(db)
        cutoff = parse_when(older_than)
    except ConfigError as exc:
        fail(str(exc))
    total = run(with_store(url, lambda s: s.count_before(cutoff)))
    click.echo(f"{total} recording(s) in {mask_url(url)} started before {iso(cutoff)}", err=True)
    if dry_run or total == 0:
        return
    if not yes:
        click.confirm(f"Delete {total} recording(s)?", abort=True, err=True)
    progress = _Progress(total)
    deleted = run(with_store(url, lambda s: s.delete_before(cutoff, batch_size=batch_size, progress=progress)))
    click.echo(f"deleted {deleted} recording(s) started before {iso(cutoff)}")


def register(group: click.Group) -> None:
    group.add_command(prune)
