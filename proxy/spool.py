"""The spool: recordings that could not reach the database yet, on disk as JSON Lines.

Each process appends to a file of its own; ingesting claims a file by renaming it,
so two instances sharing a spool directory never write the same file twice.
A line torn by a crash is skipped (and reported); every whole line is ingested.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from proxy.exchange import export_line, parse_line
from proxy.ids import new_id
from proxy.record import Record

__all__ = ["Spool"]

log = logging.getLogger("streamproxy.spool")


class Spool:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._tag = f"{os.getpid()}-{new_id()}"
        self._seq = 0

    @property
    def _current(self) -> Path:
        return self.directory / f"spool-{self._tag}-{self._seq}.jsonl"

    def append(self, records: Sequence[Record]) -> None:
        """Write and fsync; raises OSError if the disk refuses too."""
        if not records:
            return
        self._write(self._current, records)

    def _write(self, path: Path, records: Sequence[Record]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        data = b"".join(map(export_line, records))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    def reject(self, records: Sequence[Record]) -> None:
        """Set aside recordings the database refuses, where ingesting never picks them up again."""
        path = self.directory / f"rejected-{self._tag}.jsonl"
        self._write(path, records)

    def size(self) -> int:
        """Bytes waiting on disk."""
        if not self.directory.is_dir():
            return 0
        total = 0
        for p in self.directory.glob("spool-*"):
            try:
                total += p.stat().st_size
            except FileNotFoundError:
                continue
        return total

    def claim(self) -> list[Path]:
        """Take every waiting file (ours and any a dead process left) for ingesting."""
        if not self.directory.is_dir():
            return []
        self._seq += 1  # new appends go to a fresh file from here on
        claimed: list[Path] = []
        for p in sorted(self.directory.glob("spool-*")):
            if p.suffix == ".claimed" and p.name.endswith(f".{self._tag}.claimed"):
                claimed.append(p)
                continue
            target = p.with_name(f"{p.name.split('.jsonl')[0]}.jsonl.{self._tag}.claimed")
            try:
                p.rename(target)
            except FileNotFoundError:
                continue
            claimed.append(target)
        return claimed

    @staticmethod
    def read(path: Path, batch_size: int) -> Iterator[list[Record]]:
        batch: list[Record] = []
        with path.open("rb") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    batch.append(parse_line(line))
                except ValueError as exc:
                    log.error("spool %s line %d is unreadable and was skipped: %s", path.name, lineno, exc)
                    continue
                if len(batch) >= batch_size:
                    yield batch
                    batch = []
        if batch:
            yield batch
