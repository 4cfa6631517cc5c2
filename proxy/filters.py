"""Filters shared by ``list``/``export``/``stats`` and ``GET /recordings``: one set of names everywhere."""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from proxy.errors import ConfigError
from proxy.record import Outcome

__all__ = ["FILTER_NAMES", "Filters", "GroupBy", "parse_when"]

FILTER_NAMES = ("model", "outcome", "path", "key", "search", "since", "until")

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class GroupBy(enum.StrEnum):
    """What ``stats`` makes one line per (``--by``, ``?by=``)."""

    MODEL = "model"
    KEY = "key"
    PATH = "path"

    @classmethod
    def parse(cls, value: str) -> GroupBy:
        try:
            return cls(value)
        except ValueError:
            raise ConfigError(f"cannot group by {value!r} (choose one of: {', '.join(g.value for g in cls)})") from None


def parse_when(value: str, now: datetime | None = None) -> datetime:
    """ISO 8601 (UTC when no offset is given) or a relative ``15m``/``2h``/``7d`` meaning that long ago."""
    m = _RELATIVE.match(value)
    if m:
        base = now or datetime.now(UTC)
        return base - timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])
    try:
        ts = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"not a time: {value!r} (use ISO 8601 or a relative 15m, 2h, 7d)") from None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class Filters:
    model: str | None = None
    outcome: str | None = None
    path: str | None = None
    key: str | None = None
    search: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    @classmethod
    def from_mapping(cls, values: Mapping[str, str | None]) -> Filters:
        """From query parameters or CLI options; raises ConfigError on a bad value."""
        get = {k: (values.get(k) or None) for k in FILTER_NAMES}
        outcome = get["outcome"]
        if outcome is not None and outcome not in {o.value for o in Outcome}:
            choices = ", ".join(o.value for o in Outcome)
            raise ConfigError(f"unknown outcome {outcome!r} (choose one of: {choices})")
        return cls(
            model=get["model"],
            outcome=outcome,
            path=get["path"],
            key=get["key"],
            search=get["search"],
            since=parse_when(get["since"]) if get["since"] else None,
            until=parse_when(get["until"]) if get["until"] else None,
        )
