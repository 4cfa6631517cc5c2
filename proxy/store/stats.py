"""Aggregates over the recordings a filter selects: ``streamproxy stats`` and ``GET /recordings/stats``.

Counts and token sums are one ``GROUP BY`` on both backends. Percentiles are linear-interpolated
(PostgreSQL's ``percentile_cont``): PostgreSQL computes them in the same query; SQLite has no
percentile function, so the two timing columns of the selected rows are fetched and the same
formula runs here. Both give the same numbers (tests/test_stats.py).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, case, func, null, select

from proxy.filters import Filters, GroupBy
from proxy.record import Outcome, iso
from proxy.store.models import RecordingRow
from proxy.store.queries import Store, apply_filters

__all__ = ["GroupBy", "GroupStats", "StatsReport", "compute_stats", "percentile"]

_PERCENTILES = (0.5, 0.95)


def _group_column(by: GroupBy) -> ColumnElement[Any]:
    columns: dict[GroupBy, ColumnElement[Any]] = {
        GroupBy.MODEL: RecordingRow.model.expression,
        GroupBy.KEY: RecordingRow.key_fingerprint.expression,
        GroupBy.PATH: RecordingRow.path.expression,
    }
    return columns[by]


def percentile(sorted_values: Sequence[float], p: float) -> float | None:
    """Linear interpolation between closest ranks, exactly as ``percentile_cont``; None for no values."""
    if not sorted_values:
        return None
    pos = p * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


@dataclass(slots=True)
class GroupStats:
    """What the selected recordings (of one group) add up to. Timings in milliseconds."""

    group: str | None
    requests: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttfb_ms: dict[str, float | None] = field(default_factory=dict)
    duration_ms: dict[str, float | None] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "outcomes": self.outcomes,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "ttfb_ms": self.ttfb_ms,
            "duration_ms": self.duration_ms,
        }


@dataclass(slots=True)
class StatsReport:
    filters: Filters
    by: GroupBy | None
    total: GroupStats
    groups: list[GroupStats]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "since": iso(self.filters.since),
            "until": iso(self.filters.until),
            "by": None if self.by is None else str(self.by),
            "total": self.total.to_json(),
        }
        if self.by is not None:
            out["groups"] = [{str(self.by): g.group, **g.to_json()} for g in self.groups]
        return out


def _labels(p: float) -> str:
    return f"p{round(p * 100)}"


async def _aggregate(store: Store, filters: Filters, by: GroupBy | None) -> list[GroupStats]:
    r = RecordingRow
    group = _group_column(by) if by is not None else null()
    postgres = store.engine.dialect.name == "postgresql"
    columns: list[Any] = [
        group.label("grp"),
        func.count(),
        *(func.sum(case((r.outcome == str(o), 1), else_=0)) for o in Outcome),
        func.coalesce(func.sum(r.prompt_tokens), 0),
        func.coalesce(func.sum(r.completion_tokens), 0),
    ]
    if postgres:
        columns += [func.percentile_cont(p).within_group(col) for col in (r.ttfb_ms, r.duration_ms) for p in _PERCENTILES]
    stmt = apply_filters(select(*columns), filters)
    if by is not None:
        stmt = stmt.group_by(group)
    async with store.engine.connect() as conn:
        rows = (await conn.execute(stmt)).all()
        timings = None if postgres else await conn.execute(apply_filters(select(group, r.ttfb_ms, r.duration_ms), filters))
        timing_rows = [] if timings is None else timings.all()
    n_out = len(Outcome)
    result: dict[str | None, GroupStats] = {}
    for row in rows:
        requests = int(row[1])
        if requests == 0:
            continue
        counts = [int(c or 0) for c in row[2 : 2 + n_out]]
        g = GroupStats(
            group=row[0],
            requests=requests,
            outcomes={str(o): c for o, c in zip(Outcome, counts, strict=True) if c},
            prompt_tokens=int(row[2 + n_out]),
            completion_tokens=int(row[3 + n_out]),
        )
        if postgres:
            pct = row[4 + n_out :]
            g.ttfb_ms = {_labels(p): _ms(v) for p, v in zip(_PERCENTILES, pct[: len(_PERCENTILES)], strict=True)}
            g.duration_ms = {_labels(p): _ms(v) for p, v in zip(_PERCENTILES, pct[len(_PERCENTILES) :], strict=True)}
        result[g.group] = g
    if not postgres:
        ttfbs: dict[str | None, list[float]] = defaultdict(list)
        durations: dict[str | None, list[float]] = defaultdict(list)
        for grp, ttfb, duration in timing_rows:
            if ttfb is not None:
                ttfbs[grp].append(ttfb)
            if duration is not None:
                durations[grp].append(duration)
        for key, g in result.items():
            t, d = sorted(ttfbs[key]), sorted(durations[key])
            g.ttfb_ms = {_labels(p): _ms(percentile(t, p)) for p in _PERCENTILES}
            g.duration_ms = {_labels(p): _ms(percentile(d, p)) for p in _PERCENTILES}
    return sorted(result.values(), key=lambda g: (-g.requests, g.group or ""))


async def compute_stats(store: Store, filters: Filters, by: GroupBy | None = None) -> StatsReport:
    """Totals for everything ``filters`` selects, and per group when ``by`` is given."""
    totals = await _aggregate(store, filters, None)
    empty = GroupStats(
        group=None,
        ttfb_ms={_labels(p): None for p in _PERCENTILES},
        duration_ms={_labels(p): None for p in _PERCENTILES},
    )
    groups = await _aggregate(store, filters, by) if by is not None else []
    return StatsReport(filters=filters, by=by, total=totals[0] if totals else empty, groups=groups)
