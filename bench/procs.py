"""Process plumbing shared by the bench scripts: bounded servers, free ports, /proc readings."""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import socket
from pathlib import Path

from aiohttp import web

__all__ = ["cpu_seconds", "die_with_parent", "free_port", "new_loop", "postgres_cpu_seconds", "rss_each_kb", "rss_kb", "serve", "tree"]

_TICK = os.sysconf("SC_CLK_TCK")


def new_loop(uvloop: bool) -> asyncio.AbstractEventLoop:
    if uvloop:
        import uvloop as _uv

        return _uv.new_event_loop()
    return asyncio.new_event_loop()


def serve(app: web.Application, port: int, max_seconds: float, *, uvloop: bool = True) -> None:
    """Serve on 127.0.0.1:port until SIGTERM or until ``max_seconds`` have passed."""

    async def bounded(app: web.Application) -> None:
        # run_app's own SIGTERM handler then shuts down cleanly.
        asyncio.get_running_loop().call_later(max_seconds, os.kill, os.getpid(), signal.SIGTERM)

    app.on_startup.append(bounded)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, loop=new_loop(uvloop), handler_cancellation=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM when the driver dies, so nothing outlives a run."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def tree(pid: int) -> list[int]:
    """The process and its live descendants (streamproxy's assembly workers are its children)."""
    out = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            try:
                out.extend(tree(int(child)))
            except OSError:  # it exited meanwhile
                pass
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of a process and its live descendants."""
    total = 0
    for p in tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / _TICK


def postgres_cpu_seconds() -> float:
    """User + system CPU time so far of every PostgreSQL server process on this machine (the
    bench's database is on loopback): what the server spends on what serve writes."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name, _, rest = text.partition(" (")[2].rpartition(")")
        if name == "postgres":  # every server process keeps this name; its title is in cmdline
            fields = rest.split()
            total += int(fields[11]) + int(fields[12])
    return total / _TICK


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of a process, plus its live descendants', in kB."""
    return sum(rss_each_kb(pid, field))


def rss_each_kb(pid: int, field: str = "VmRSS") -> list[int]:
    """:func:`rss_kb` process by process: the process first, then its live descendants."""
    out = []
    for p in tree(pid):
        try:
            lines = Path(f"/proc/{p}/status").read_text().splitlines()
        except OSError:
            continue
        out.append(next(int(line.split()[1]) for line in lines if line.startswith(field + ":")))
    return out
