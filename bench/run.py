"""The benchmark driver: direct vs. the bare relay vs. streamproxy (record mode), side by side.

Starts the fake upstream, the bare relay and ``streamproxy serve`` (each its own process, on
loopback, each bounded in time), then at each concurrency level runs the load generator against
the three in alternation (the order rotates every repetition) and prints one table, with every
ratio taken between runs of the same repetition, and the issue's targets with pass/fail.

CPU and RSS are the proxy's whole process tree: ``serve`` and its assembly worker (CPU summed,
peak RSS the sum of each process's ``VmHWM``). Each streamproxy run ends once the search index
has caught up with what it recorded (the worker, or on PostgreSQL serve, indexes in quiet
moments); that CPU is shown on its own, per chunk of the run. On PostgreSQL each run also prints
the database server's CPU per chunk (every ``postgres`` process on this machine), which is not
in "proxy CPU"; its share of the index catching up is in "search index later".

    python bench/run.py                      # 1, 10, 100, 500 streams; 3 x 5 s each; SQLite
    python bench/run.py --quick              # 1 x 2 s each
    python bench/run.py --db postgresql+asyncpg://postgres@127.0.0.1:5432/streamproxy_bench
    python bench/run.py --minutes 10         # RSS flatness: streamproxy alone under load, sampled
    python bench/run.py --open 500           # RSS with 500 streams open at once (each held 8 s)

The PostgreSQL database named in ``--db`` is created for the run and dropped after it.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import contextlib
import os
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from procs import cpu_seconds, die_with_parent, free_port, postgres_cpu_seconds, rss_each_kb, rss_kb

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PY = sys.executable
TARGETS = ("direct", "bare", "streamproxy")
CHAT = "/v1/chat/completions"


# ---------------------------------------------------------------- processes


@dataclass
class Server:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    ready_path: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid


def _bounded(seconds: float) -> Callable[[], None]:
    def pre() -> None:
        die_with_parent()
        # A hard stop even if the driver hangs: the alarm survives exec, and SIGALRM terminates.
        signal.alarm(int(seconds))

    return pre


def start(name: str, args: list[str], ready_path: str, port: int, max_seconds: float, log: Path, env: dict[str, str] | None = None) -> Server:
    out = log.open("ab")
    proc = subprocess.Popen(
        args, stdout=out, stderr=out, cwd=ROOT, env={**os.environ, **(env or {})}, preexec_fn=_bounded(max_seconds + 60)
    )
    out.close()
    server = Server(name, port, proc, ready_path)
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(server.url + ready_path, timeout=1) as r:
                if r.status == 200:
                    return server
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{name} did not come up:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)


def stop(server: Server) -> None:
    if server.proc.poll() is None:
        server.proc.terminate()
        try:
            server.proc.wait(40)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()


def get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@contextlib.contextmanager
def servers(args: argparse.Namespace, work: Path, db: str, max_seconds: float, with_bare: bool = True) -> Iterator[dict[str, Server]]:
    loop_flag = ["--no-uvloop"] if args.no_uvloop else []
    up_port = free_port()
    started: list[Server] = []
    try:
        up = start(
            "upstream",
            [PY, str(BENCH / "fake_upstream.py"), "--port", str(up_port), "--chunks", str(args.chunks), "--max-seconds", str(max_seconds),
             *(["--hold", str(args.hold)] if getattr(args, "hold", 0) else []), *loop_flag],  # bench/profile.py has no --hold
            "/ready", up_port, max_seconds, work / "upstream.log",
        )
        started.append(up)
        if with_bare:
            port = free_port()
            started.append(start(
                "bare",
                [PY, str(BENCH / "bare_relay.py"), "--port", str(port), "--upstream", up.url, "--max-seconds", str(max_seconds), *loop_flag],
                "/ready", port, max_seconds, work / "bare.log",
            ))
        # As an install leaves it, with its bytecode compiled (pip compiles what it installs; an
        # editable checkout under PYTHONDONTWRITEBYTECODE, as on this machine, never is): serve and
        # its worker then do not compile their modules at every start, 1-1.5 MB each kept as heap.
        compileall.compile_dir(ROOT / "proxy", quiet=1)
        port = free_port()
        started.append(start(
            "streamproxy",
            [PY, "-m", "proxy", "serve", "--port", str(port), "--upstream", up.url, "--db", db,
             "--spool-dir", str(work / "spool"), "--log-level", "warning", *args.proxy_arg],
            "/healthz", port, max_seconds, work / "streamproxy.log",
            env={"PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)},
        ))
        yield {s.name: s for s in started}
    finally:
        for s in reversed(started):
            stop(s)


@contextlib.contextmanager
def database(url: str | None, work: Path) -> Iterator[str]:
    """SQLite in the work dir, or the named PostgreSQL database, created now and dropped after."""
    if url is None:
        yield f"sqlite+aiosqlite:///{work / 'bench.db'}"
        return
    m = re.match(r"postgresql(?:\+asyncpg)?://(.+)/(\w+)$", url)
    if not m:
        raise SystemExit("--db: give postgresql+asyncpg://USER@HOST:PORT/NAME (NAME is created and dropped)")
    admin, name = f"postgresql://{m.group(1)}/postgres", m.group(2)
    asyncio.run(_pg(admin, f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql+asyncpg://{m.group(1)}/{name}"
    finally:
        asyncio.run(_pg(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _pg(dsn: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


# ---------------------------------------------------------------- one measurement


LAG_METRIC = "streamproxy_recorder_lag_seconds_bucket"


def lag_buckets(server: Server) -> dict[float, float]:
    """Cumulative counts of the recorder-lag histogram on /metrics (empty if the metric is absent)."""
    _, text = get(server.url + "/metrics")
    out: dict[float, float] = {}
    for line in text.decode().splitlines():
        if line.startswith(LAG_METRIC):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            out[float("inf") if le == "+Inf" else float(le)] = float(line.rsplit(" ", 1)[1])
    return out


def bucket_quantile(before: dict[float, float], after: dict[float, float], q: float) -> float | None:
    """The upper bound of the bucket holding quantile ``q`` of what was observed in between."""
    delta = sorted((le, after[le] - before.get(le, 0.0)) for le in after)
    if not delta or delta[-1][1] <= 0:
        return None
    total = delta[-1][1]
    for le, count in delta:
        if count >= q * total:
            return le
    return float("inf")


def wait_recorded(db: str, rec_id: str, limit: float = 60.0) -> float:
    """Seconds until the recording is in the database, looked up there directly: a read through
    the audit API would load SQLAlchemy into serve, which recording alone never does (README,
    "Performance"), and the memory measured would be a reader's."""
    if db.startswith("sqlite"):
        return _sqlite_wait(db.split("///", 1)[1], "SELECT 1 FROM recordings WHERE id = ?", rec_id, limit)
    return asyncio.run(_pg_wait(db, "SELECT true FROM recordings WHERE id = $1", rec_id, limit))


def _sqlite_wait(sqlite_file: str, sql: str, param: str | None, limit: float) -> float:
    """Seconds until ``sql`` (with ``param``, if any) returns a row whose first value is true."""
    t0 = time.monotonic()
    db = sqlite3.connect(f"file:{sqlite_file}?mode=ro", uri=True, timeout=5)
    try:
        while time.monotonic() - t0 < limit:
            with contextlib.suppress(sqlite3.OperationalError):  # before the first write: no table yet
                row = db.execute(sql, () if param is None else (param,)).fetchone()
                if row is not None and row[0]:
                    return time.monotonic() - t0
            time.sleep(0.02)
    finally:
        db.close()
    return float("inf")


async def _pg_wait(dsn: str, sql: str, param: str | None, limit: float) -> float:
    """Seconds until ``sql`` (with ``param``, if any) returns true."""
    import asyncpg

    t0 = time.monotonic()
    conn = await asyncpg.connect(dsn.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        while time.monotonic() - t0 < limit:
            if await conn.fetchval(sql, *(() if param is None else (param,))):
                return time.monotonic() - t0
            await asyncio.sleep(0.02)
    finally:
        await conn.close()
    return float("inf")


def wait_indexed(db: str, limit: float = 120.0) -> float:
    """Seconds until every recording is in the search index: the assembly worker (SQLite,
    migration 0006) or serve (PostgreSQL, 0008) waits for a quiet moment to add them."""
    if db.startswith("sqlite"):
        return _sqlite_wait(db.split("///", 1)[1], "SELECT count(*) = 0 FROM recording_search_pending", None, limit)
    return asyncio.run(_pg_wait(db, "SELECT NOT EXISTS (SELECT 1 FROM recording_search_pending)", None, limit))


def loadgen(url: str, concurrency: int, args: argparse.Namespace, seconds: float) -> dict[str, Any]:
    cmd = [PY, str(BENCH / "loadgen.py"), "--url", url + CHAT, "-c", str(concurrency), "--seconds", str(seconds),
           "--warmup", str(args.warmup), "--chunks", str(args.chunks)]
    if args.no_uvloop:
        cmd.append("--no-uvloop")
    out = subprocess.run(cmd, capture_output=True, check=True, timeout=seconds + args.warmup + 120, preexec_fn=die_with_parent)
    return orjson.loads(out.stdout)


@dataclass
class Run:
    target: str
    level: int
    rep: int
    lg: dict[str, Any]
    cpu_us_per_chunk: float | None = None
    lag_p99: float | None = None
    drain_s: float | None = None
    committed: float | None = None  # recordings written straight from memory (the rest went by the spool)
    index_s: float | None = None  # after the drain, until the search index had caught up
    index_cpu_us_per_chunk: float | None = None  # what that took, per chunk of the run: deferred, not in cpu_us_per_chunk
    db_cpu_us_per_chunk: float | None = None  # the PostgreSQL server's, load and drain, not the index later


def measure(target: str, srv: dict[str, Server], level: int, rep: int, args: argparse.Namespace) -> Run:
    url = srv["upstream"].url if target == "direct" else srv[target].url
    proc = None if target == "direct" else srv[target]
    lag0 = lag_buckets(proc) if target == "streamproxy" and proc else {}
    cpu0 = cpu_seconds(proc.pid) if proc else 0.0
    on_pg = target == "streamproxy" and args.records and not args.sqlite_file
    db0 = postgres_cpu_seconds() if on_pg else 0.0
    lg = loadgen(url, level, args, args.seconds)
    run = Run(target, level, rep, lg)
    if target == "streamproxy" and proc and args.records:
        # The recorder catching up is part of the cost (CPU is read after it), and the barrier
        # before the next run.
        run.drain_s = wait_recorded(args.db_url, lg["last_id"]) if lg["last_id"] else None
    chunks = max(1, lg["chunks_total"])
    if proc:
        cpu1 = cpu_seconds(proc.pid)
        run.cpu_us_per_chunk = (cpu1 - cpu0) / chunks * 1e6
    db1 = postgres_cpu_seconds() if on_pg else 0.0
    if on_pg:
        run.db_cpu_us_per_chunk = (db1 - db0) / chunks * 1e6
    if target == "streamproxy" and proc and args.records:
        # The index catching up after a burst is the barrier before the next run too, so that no
        # run is measured while it goes on; its CPU (the database server's too) is shown on its own.
        run.index_s = wait_indexed(args.db_url)
        db2 = postgres_cpu_seconds() if on_pg else 0.0
        run.index_cpu_us_per_chunk = (cpu_seconds(proc.pid) - cpu1 + db2 - db1) / chunks * 1e6
    if target == "streamproxy" and proc and args.records:
        lag1 = lag_buckets(proc)
        run.lag_p99 = bucket_quantile(lag0, lag1, 0.99)
        inf = float("inf")
        run.committed = lag1.get(inf, 0.0) - lag0.get(inf, 0.0)
    return run


# ---------------------------------------------------------------- report


def med(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


@dataclass
class Cell:
    rps: float | None = None
    rps_x: float | None = None
    cpu: float | None = None
    cpu_x: float | None = None
    ttfb: list[float | None] = field(default_factory=lambda: [None, None])
    ttfb_x: list[float | None] = field(default_factory=lambda: [None, None])
    chunk: list[float | None] = field(default_factory=lambda: [None, None])
    chunk_x: list[float | None] = field(default_factory=lambda: [None, None])
    rss_mb: float | None = None
    lag_p99: float | None = None
    drain_s: float | None = None
    index_cpu: float | None = None
    bytes_ok: bool = True
    errors: int = 0


def summarize(runs: list[Run], level: int, target: str, rss: dict[str, float]) -> Cell:
    mine = {r.rep: r for r in runs if r.level == level and r.target == target}
    bare = {r.rep: r for r in runs if r.level == level and r.target == "bare"}
    c = Cell()
    c.rps = med([r.lg["rps"] for r in mine.values()])
    c.cpu = med([r.cpu_us_per_chunk for r in mine.values()])
    for i in range(2):
        c.ttfb[i] = med([r.lg["ttfb_ms"][i] for r in mine.values()])
        c.chunk[i] = med([r.lg["chunk_ms"][i] for r in mine.values()])
    if target != "bare":
        # Ratios within a repetition (neighbours in time), then the median over repetitions.
        pairs = [(mine[k], bare[k]) for k in mine if k in bare]
        c.rps_x = med([ratio(a.lg["rps"], b.lg["rps"]) for a, b in pairs])
        c.cpu_x = med([ratio(a.cpu_us_per_chunk, b.cpu_us_per_chunk) for a, b in pairs])
        for i in range(2):
            c.ttfb_x[i] = med([ratio(a.lg["ttfb_ms"][i], b.lg["ttfb_ms"][i]) for a, b in pairs])
            c.chunk_x[i] = med([ratio(a.lg["chunk_ms"][i], b.lg["chunk_ms"][i]) for a, b in pairs])
    c.rss_mb = rss.get(target)
    lags = [r.lag_p99 for r in mine.values() if r.lag_p99 is not None]
    c.lag_p99 = max(lags) if lags else None
    drains = [r.drain_s for r in mine.values() if r.drain_s is not None]
    c.drain_s = max(drains) if drains else None
    c.index_cpu = med([r.index_cpu_us_per_chunk for r in mine.values()])
    c.bytes_ok = all(r.lg["bytes_ok"] for r in mine.values())
    c.errors = sum(r.lg["errors"] + r.lg["bad_bodies"] for r in mine.values())
    return c


def f(v: float | None, fmt: str = "{:.0f}") -> str:
    if v is None:
        return "–"
    if v == float("inf"):
        return "inf"
    return fmt.format(v)


def x(v: float | None) -> str:
    return f(v, "{:.2f}×")


def table(cells: dict[tuple[int, str], Cell], levels: list[int]) -> str:
    head = ("| streams | through | req/s | × bare | CPU µs/chunk | × bare | TTFB p50 / p99 ms | × bare | "
            "chunk latency p50 / p99 ms | × bare | peak RSS MB | recorder lag p99 / drain s | "
            "search index later, CPU µs/chunk | bytes unchanged |")
    lines = [head, "|" + "---|" * 14]
    for level in levels:
        for target in TARGETS:
            c = cells.get((level, target))
            if c is None:
                continue
            lag = f"≤ {f(c.lag_p99, '{:g}')} / {f(c.drain_s, '{:.2f}')}" if target == "streamproxy" else ""
            lines.append(
                f"| {level} | {target} | {f(c.rps)} | {x(c.rps_x) if target != 'bare' else ''} | "
                f"{f(c.cpu, '{:.1f}') if target != 'direct' else ''} | {x(c.cpu_x) if target == 'streamproxy' else ''} | "
                f"{f(c.ttfb[0], '{:.1f}')} / {f(c.ttfb[1], '{:.1f}')} | "
                f"{x(c.ttfb_x[0]) + ' / ' + x(c.ttfb_x[1]) if target != 'bare' else ''} | "
                f"{f(c.chunk[0], '{:.2f}')} / {f(c.chunk[1], '{:.2f}')} | "
                f"{x(c.chunk_x[0]) + ' / ' + x(c.chunk_x[1]) if target != 'bare' else ''} | "
                f"{f(c.rss_mb) if target != 'direct' else ''} | {lag} | "
                f"{f(c.index_cpu, '{:.2f}') if target == 'streamproxy' else ''} | "
                f"{'yes' if c.bytes_ok else 'NO'}{f' ({c.errors} errors)' if c.errors else ''} |"
            )
    return "\n".join(lines)


def targets(cells: dict[tuple[int, str], Cell], levels: list[int]) -> list[tuple[str, str, bool]]:
    out: list[tuple[str, str, bool]] = []

    def check(name: str, value: float | None, ok: bool) -> None:
        out.append((name, x(value) if value is not None else "–", ok and value is not None))

    for level in levels:
        c = cells[(level, "streamproxy")]
        if c.rps is None:
            continue
        check(f"throughput ≥ 0.8 × bare @ {level}", c.rps_x, (c.rps_x or 0) >= 0.8)
        check(f"CPU per chunk ≤ 2 × bare @ {level}", c.cpu_x, (c.cpu_x or 99) <= 2)
        check(f"TTFB p50 ≤ 1.5 × bare @ {level}", c.ttfb_x[0], (c.ttfb_x[0] or 99) <= 1.5)
        check(f"TTFB p99 ≤ 2 × bare @ {level}", c.ttfb_x[1], (c.ttfb_x[1] or 99) <= 2)
        check(f"chunk latency p50 ≤ 1.5 × bare @ {level}", c.chunk_x[0], (c.chunk_x[0] or 99) <= 1.5)
        check(f"chunk latency p99 ≤ 2 × bare @ {level}", c.chunk_x[1], (c.chunk_x[1] or 99) <= 2)
    top = max(levels)
    rss = cells[(top, "streamproxy")].rss_mb
    out.append((f"peak RSS ≤ 100 MB after {top} streams", f(rss, "{:.0f} MB"), rss is not None and rss <= 100))
    if 100 in levels:
        c = cells[(100, "streamproxy")]
        out.append(("recorder lag p99 < 1 s @ 100", f"≤ {f(c.lag_p99, '{:g}')} s", c.lag_p99 is not None and c.lag_p99 <= 1))
    ok = all(cells[(lv, t)].bytes_ok for lv in levels for t in TARGETS if (lv, t) in cells)
    out.append(("bytes unchanged (every response, every target)", "yes" if ok else "NO", ok))
    return out


# ---------------------------------------------------------------- modes


def compare(args: argparse.Namespace, work: Path) -> int:
    levels = [int(v) for v in args.levels.split(",")]
    per_run = args.seconds + args.warmup + 3
    budget = len(levels) * args.repeats * 3 * per_run * 3 + 120
    runs: list[Run] = []
    cells: dict[tuple[int, str], Cell] = {}
    with database(args.db, work) as db, servers(args, work, db, budget) as srv:
        args.db_url = db
        args.sqlite_file = db.split("///", 1)[1] if db.startswith("sqlite") else None
        print(f"# streamproxy record mode on {re.sub(r'://[^@/]*@', '://', db.split('///')[0] if 'sqlite' in db else db)}; "
              f"{args.repeats} × {args.seconds:g} s (+{args.warmup:g} s warm-up) per cell; {args.chunks} chunks a response; "
              f"{os.cpu_count()} cores", flush=True)
        for level in levels:
            for rep in range(args.repeats):
                order = [t for t in TARGETS[rep % 3:] + TARGETS[: rep % 3] if t in args.targets]
                for target in order:
                    run = measure(target, srv, level, rep, args)
                    runs.append(run)
                    lg = run.lg
                    print(f"  {level:>4} streams  rep {rep}  {target:<11} {lg['rps']:7.0f} req/s  "
                          f"cpu {f(run.cpu_us_per_chunk, '{:.1f}'):>5} µs/chunk  ttfb p50 {f(lg['ttfb_ms'][0], '{:.1f}')} ms  "
                          f"chunk p50 {f(lg['chunk_ms'][0], '{:.2f}')} ms  ok={lg['bytes_ok']}"
                          + (f"  drain {f(run.drain_s, '{:.2f}')} s  lag p99 ≤ {f(run.lag_p99, '{:g}')} s  "
                             f"committed from memory {f(run.committed)}" if run.drain_s is not None else "")
                          + (f"  index {f(run.index_s, '{:.2f}')} s {f(run.index_cpu_us_per_chunk, '{:.2f}')} µs/chunk"
                             if run.index_s is not None else "")
                          + (f"  database server {f(run.db_cpu_us_per_chunk, '{:.2f}')} µs/chunk"
                             if run.db_cpu_us_per_chunk is not None else "")
                          + (f"  errors {lg['errors']} {lg['first_error']}" if lg["errors"] else ""), flush=True)
            rss = {t: rss_kb(srv[t].pid, "VmHWM") / 1024 for t in ("bare", "streamproxy")}
            each = " + ".join(f"{kb / 1024:.1f}" for kb in rss_each_kb(srv["streamproxy"].pid, "VmHWM"))
            print(f"  peak RSS so far: streamproxy {rss['streamproxy']:.1f} MB ({each}: serve, then its worker), "
                  f"bare {rss['bare']:.1f} MB", flush=True)
            for target in TARGETS:
                cells[(level, target)] = summarize(runs, level, target, rss)
    print()
    print(table(cells, levels))
    print()
    results = targets(cells, levels)
    width = max(len(n) for n, _, _ in results)
    for name, value, ok in results:
        print(f"{name:<{width}}  {value:>10}  {'pass' if ok else 'FAIL'}")
    return 0 if all(ok for _, _, ok in results) else 1


def flatness(args: argparse.Namespace, work: Path) -> int:
    seconds = args.minutes * 60
    with database(args.db, work) as db, servers(args, work, db, seconds + 180, with_bare=False) as srv:
        sp = srv["streamproxy"]
        cmd = [PY, str(BENCH / "loadgen.py"), "--url", sp.url + CHAT, "-c", str(args.concurrency),
               "--seconds", str(seconds), "--warmup", "0", "--chunks", str(args.chunks)]
        if args.no_uvloop:
            cmd.append("--no-uvloop")
        lg = subprocess.Popen(cmd, stdout=subprocess.PIPE, preexec_fn=die_with_parent)
        samples: list[tuple[float, float]] = []
        t0 = time.monotonic()
        while lg.poll() is None and time.monotonic() - t0 < seconds + 120:
            samples.append((time.monotonic() - t0, rss_kb(sp.pid) / 1024))
            print(f"  {samples[-1][0]:6.0f} s  RSS {samples[-1][1]:6.1f} MB", flush=True)
            time.sleep(args.sample_every)
        out, _ = lg.communicate(timeout=120)
        result = orjson.loads(out)
        drain = wait_recorded(db, result["last_id"]) if result["last_id"] else None
    half = len(samples) // 2
    first_half = max(v for _, v in samples[: max(1, half)])
    second_half = max(v for _, v in samples[half:])
    peak = max(v for _, v in samples)
    flat = second_half <= first_half * 1.10
    print()
    print(f"RSS over {args.minutes:g} min at {args.concurrency} streams ({result['requests']} requests, "
          f"{result['rps']:.0f} req/s, bytes unchanged: {'yes' if result['bytes_ok'] else 'NO'}, drain {f(drain, '{:.2f}')} s)")
    print(f"first {samples[0][1]:.1f} MB   last {samples[-1][1]:.1f} MB   peak {peak:.1f} MB   "
          f"max first half {first_half:.1f} MB   max second half {second_half:.1f} MB")
    ok = flat and peak <= 100 and result["bytes_ok"]
    print(f"flat (second half ≤ 1.10 × first half) and peak ≤ 100 MB: {'pass' if ok else 'FAIL'}")
    return 0 if ok else 1


def held_open(args: argparse.Namespace, work: Path) -> int:
    """RSS with ``--open`` streams open at once: the upstream sends each answer but its last event,
    then holds it for ``--hold`` seconds; the bare relay, then streamproxy, each read while every
    stream is open (``VmRSS``; streamproxy's is serve and its worker), and the peak (``VmHWM``)
    once they have all ended at once and been recorded."""
    with database(args.db, work) as db, servers(args, work, db, args.hold * 4 + 120) as srv:
        print(f"# {args.open} streams held open {args.hold:g} s before their last event; {args.chunks} chunks a response")
        rows = []
        for target in ("bare", "streamproxy"):
            pid = srv[target].pid
            before = rss_each_kb(pid)
            lg = subprocess.Popen(
                [PY, str(BENCH / "loadgen.py"), "--url", srv[target].url + CHAT, "-c", str(args.open),
                 "--requests", str(args.open), "--warmup", "0", "--chunks", str(args.chunks)],
                stdout=subprocess.PIPE, preexec_fn=die_with_parent,
            )
            time.sleep(args.hold / 2)  # long enough for every stream to be open, short of its last event
            during = rss_each_kb(pid)
            out, _ = lg.communicate(timeout=args.hold * 4 + 60)
            result = orjson.loads(out)
            if result["requests"] != args.open or not result["bytes_ok"]:
                raise SystemExit(f"{target}: {result['requests']} of {args.open} streams, bytes unchanged: {result['bytes_ok']}")
            # With the end of the streams, all at once, and their recording. The kernel updates the
            # high-water mark lazily: it may read a little under a VmRSS just read.
            peak = max(sum(during), sum(rss_each_kb(pid, "VmHWM"))) / 1024
            rows.append((target, sum(before) / 1024, sum(during) / 1024, " + ".join(f"{kb / 1024:.1f}" for kb in during), peak))
    print()
    print("| through | RSS before MB | RSS with the streams open MB | per process | per stream KB | peak RSS MB |")
    print("|---|---|---|---|---|---|")
    for target, before_mb, during_mb, each, peak in rows:
        print(f"| {target} | {before_mb:.1f} | {during_mb:.1f} | {each} | {(during_mb - before_mb) * 1024 / args.open:.1f} | {peak:.1f} |")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--levels", default="1,10,100,500", help="concurrent streams, comma separated")
    ap.add_argument("--seconds", type=float, default=5.0, help="measured window per run")
    ap.add_argument("--warmup", type=float, default=1.0, help="load before each window, not measured")
    ap.add_argument("--repeats", type=int, default=3, help="repetitions per level (the order of targets rotates)")
    ap.add_argument("--quick", action="store_true", help="1 repetition × 2 s per cell")
    ap.add_argument("--chunks", type=int, default=200, help="chunks per response")
    ap.add_argument("--db", default=None, help="postgresql+asyncpg://USER@HOST:PORT/NAME (created and dropped); default SQLite in a temp dir")
    ap.add_argument("--minutes", type=float, default=None, help="instead: RSS flatness run of this many minutes")
    ap.add_argument("--concurrency", type=int, default=100, help="streams for --minutes")
    ap.add_argument("--sample-every", type=float, default=10.0, help="seconds between RSS samples for --minutes")
    ap.add_argument("--open", type=int, default=None, help="instead: RSS with this many streams open at once (see --hold)")
    ap.add_argument("--hold", type=float, default=0.0, help="seconds the fake upstream holds each answer's last event (--open: 8)")
    ap.add_argument("--no-uvloop", action="store_true", help="plain asyncio everywhere except streamproxy")
    ap.add_argument("--tmp", default=None, help="where the work directory goes (default: the system's temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (server logs, database)")
    ap.add_argument("--targets", default=",".join(TARGETS), help="a subset of direct,bare,streamproxy (bare is needed for ratios)")
    ap.add_argument("--proxy-arg", action="append", default=[], help="extra flag for streamproxy serve (repeatable)")
    args = ap.parse_args()
    args.targets = args.targets.split(",")
    args.records = "passthrough" not in " ".join(args.proxy_arg)
    if args.quick:
        args.repeats, args.seconds, args.warmup = 1, 2.0, 0.5
    if args.open and not args.hold:
        args.hold = 8.0
    work = Path(tempfile.mkdtemp(prefix="streamproxy-bench-", dir=args.tmp))
    try:
        if args.open:
            return held_open(args, work)
        return flatness(args, work) if args.minutes else compare(args, work)
    finally:
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
