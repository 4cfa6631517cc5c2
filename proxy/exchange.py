"""Export and import: JSON Lines, one recording a line — the SPEC's Recording JSON with its
chunks and ``"format": 1``. The same format is the pytest plugin's cassette.

Exports are stable: recordings oldest first (by id), keys in a fixed order, so the same
recordings always give the same bytes and a cassette diffs cleanly in review.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import orjson

from proxy.filters import Filters
from proxy.matching import match_key
from proxy.record import Record, from_json, to_json

if TYPE_CHECKING:
    from proxy.store import Store

__all__ = ["ImportResult", "cassette_bytes", "export_line", "import_lines", "iter_export", "parse_line", "recording_ids"]

_PAGE = 1000
_BATCH = 200


def export_line(rec: Record) -> bytes:
    """One recording as one export line, newline included."""
    return orjson.dumps(to_json(rec, export=True)) + b"\n"


def parse_line(line: bytes) -> Record:
    """A recording from one export line; raises ValueError saying what is wrong with it."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    rec = from_json(obj)
    if "match_key" not in obj:  # hand-written: key it as the proxy would have (no --match-ignore)
        rec.match_key = match_key(rec.method, rec.path, rec.request_body)
    return rec


async def recording_ids(store: Store, filters: Filters) -> list[str]:
    """Ids of the matching recordings, oldest first."""
    ids: list[str] = []
    cursor: str | None = None
    while True:
        page, cursor = await store.list_recordings(filters, limit=_PAGE, cursor=cursor)
        ids.extend(r.id for r in page)
        if cursor is None:
            break
    ids.reverse()
    return ids


async def iter_export(store: Store, ids: Iterable[str]) -> AsyncIterator[Record]:
    """The recordings with these ids, chunks included, in the given order."""
    for rec_id in ids:
        rec = await store.get(rec_id, chunks=True)
        if rec is not None:  # deleted since it was listed
            yield rec


async def cassette_bytes(store: Store) -> bytes:
    """Every recording that replay can serve, as export lines, oldest first. The proxy's own
    answers (no match key) are left out: they say nothing about upstream."""
    ids = await recording_ids(store, Filters())
    return b"".join([export_line(rec) async for rec in iter_export(store, ids) if rec.match_key])


@dataclass(slots=True)
class ImportResult:
    read: int = 0
    errors: list[str] = field(default_factory=list)


async def import_lines(
    store: Store, lines: Iterable[bytes], *, name: str, progress: Callable[[int], None] | None = None
) -> ImportResult:
    """Insert every good line (ids kept; already stored ids are left alone) and collect one
    message per bad line, ``name:N: why``, without stopping at it."""
    result = ImportResult()
    batch: list[Record] = []
    for number, line in enumerate(lines, start=1):
        if progress is not None:
            progress(len(line))
        if not line.strip():
            continue
        try:
            batch.append(parse_line(line))
        except ValueError as exc:
            result.errors.append(f"{name}:{number}: {exc}")
            continue
        if len(batch) >= _BATCH:
            await store.insert(batch)
            result.read += len(batch)
            batch = []
    await store.insert(batch)
    result.read += len(batch)
    return result
