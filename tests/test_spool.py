"""The spool reads back what it wrote, and skips a line it cannot read instead of stopping."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from proxy.record import Record
from proxy.spool import Spool


def test_unreadable_lines_are_skipped_and_the_rest_read(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    recs = [Record(id=f"01TEST{i}", started_at=datetime.now(UTC), method="POST", path="/v1/x", chunks=[b"data: 1\n\n"], offsets_ms=[1.0]) for i in range(3)]
    spool.append(recs[:1])
    (path,) = tmp_path.glob("spool-*")
    with path.open("ab") as f:
        f.write(b"[1, 2]\n{torn line\n")
    spool.append(recs[1:])
    (claimed,) = spool.claim()
    read = [r.id for batch in Spool.read(claimed, 2) for r in batch]
    assert read == [r.id for r in recs]
