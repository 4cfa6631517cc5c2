"""``streamproxy db upgrade``."""

from __future__ import annotations

import click
import orjson

from proxy.cli import db_option, run
from proxy.settings import mask_url, normalize_db_url
from proxy.store import open_store
from proxy.store.engine import current_revision, head_revision

__all__ = ["register"]


@click.group()
def db() -> None:
    """Database schema."""


@db.command()
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
def upgrade(db: str, as_json: bool) -> None:
    """Apply Alembic migrations up to head (creates the database if needed)."""
    async def go() -> str | None:
        engine = await open_store(normalize_db_url(db), create=True)
        try:
            return await current_revision(engine)
        finally:
            await engine.dispose()

    rev = run(go())
    if as_json:
        click.echo(orjson.dumps({"database": mask_url(normalize_db_url(db)), "revision": rev, "head": head_revision()}).decode())
        return
    click.echo(f"{mask_url(normalize_db_url(db))} is at revision {rev} (head {head_revision()})")


def register(group: click.Group) -> None:
    group.add_command(db)
