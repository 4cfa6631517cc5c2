"""``streamproxy stats``: requests, outcomes, tokens and timing percentiles, overall or per group."""

from __future__ import annotations

import click
import orjson

from proxy.cli import db_option, run
from proxy.cli_read import filter_options, with_store
from proxy.filters import Filters
from proxy.store import Store
from proxy.store.stats import GroupBy, GroupStats, StatsReport, compute_stats

__all__ = ["register"]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _line(name: str, g: GroupStats) -> str:
    outcomes = " ".join(f"{k}={v}" for k, v in g.outcomes.items())
    timing = f"{_ms(g.ttfb_ms['p50'])}/{_ms(g.ttfb_ms['p95'])}"
    duration = f"{_ms(g.duration_ms['p50'])}/{_ms(g.duration_ms['p95'])}"
    return (
        f"{name[:28]:<28}  {g.requests:>8}  {g.prompt_tokens:>10}  {g.completion_tokens:>10}  "
        f"{timing:>13}  {duration:>15}  {outcomes}"
    )


def render_stats(report: StatsReport) -> str:
    """The report as a table for people."""
    title = str(report.by or "").upper() or "ALL"
    lines = [
        f"{title:<28}  {'REQUESTS':>8}  {'PROMPT TOK':>10}  {'COMPL TOK':>10}  {'TTFB p50/p95':>13}  "
        f"{'DURATION p50/p95':>15}  OUTCOMES"
    ]
    lines += [_line(g.group or "-", g) for g in report.groups]
    if report.by is not None:
        lines.append(_line("(all)", report.total))
    else:
        lines.append(_line("all", report.total))
    lines.append("times in ms")
    return "\n".join(lines)


@click.command()
@db_option
@filter_options
@click.option("--by", type=click.Choice([g.value for g in GroupBy]), default=None, help="One line per model, key or path.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
def stats(db: str, by: str | None, as_json: bool, **filters: str | None) -> None:
    """Requests, outcomes, tokens, time to first byte and duration (p50/p95)."""

    async def go(store: Store) -> StatsReport:
        return await compute_stats(store, Filters.from_mapping(filters), GroupBy(by) if by else None)

    report = run(with_store(db, go))
    if as_json:
        click.echo(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo(render_stats(report))


def register(group: click.Group) -> None:
    group.add_command(stats)
