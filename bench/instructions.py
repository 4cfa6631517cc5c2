"""CPU instructions per request, counted by ``perf stat``: the bare relay, streamproxy in
``passthrough`` and in ``record`` mode (its assembly worker and threads included, or its main
thread alone). Instruction counts barely move when other processes load the machine, unlike
CPU seconds, so this is the measure to compare changes by on a shared 2-core VM.

Each target runs under ``perf stat -e instructions`` twice, once idle and once serving
``--requests`` streams; the difference divided by the requests is what one request costs.

    python bench/instructions.py                    # 2,000 requests, 50 at a time
    python bench/instructions.py --requests 4000 -c 100

Needs ``perf`` (Debian: linux-perf). On a machine without a hardware counter for it (a VM
without a PMU: ``perf stat -e instructions true`` says ``<not supported>``), it counts CPU
milliseconds (``task-clock``) instead and says so; those move with the machine's load, so
compare them only between runs on a quiet machine.

``--callgrind`` counts with valgrind's callgrind instead (no PMU needed; the same count twice
for the same build, whatever else the machine does): each target runs some 50 times slower,
so ask for fewer requests (``--callgrind --requests 300 -c 4``: ~10 minutes). "record (main
thread)" is then serve's process alone, without its assembly worker.

    python bench/instructions.py --callgrind --requests 300 -c 4
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from procs import die_with_parent, free_port

BENCH = Path(__file__).resolve().parent
PY = sys.executable

TARGETS: dict[str, tuple[list[str], bool]] = {
    # name: (serve arguments, or [] for the bare relay; count the main thread only)
    "bare relay": ([], False),
    "passthrough": (["--mode", "passthrough"], False),
    "record (all processes)": (["--mode", "record"], False),
    "record (main thread)": (["--mode", "record"], True),
}


def _wait_up(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{url} did not come up")


def count(target: str, upstream: str, work: Path, requests: int, concurrency: int, callgrind: bool = False) -> tuple[float, str]:
    """Instructions (or, without a counter for them, CPU milliseconds) the target spent from
    start to exit, serving ``requests`` streams, and which of the two it is."""
    serve_args, main_thread_only = TARGETS[target]
    port = free_port()
    out = work / f"perf-{port}.txt"
    if callgrind:
        # One file a process (%p): serve's worker and its database check are traced too, unless main thread only.
        perf = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={work}/cg-{port}-%p.out",
                f"--trace-children={'no' if main_thread_only else 'yes'}"]
    else:
        perf = ["perf", "stat", "-e", "instructions,task-clock", "-x,", "-o", str(out)] + (["-i"] if main_thread_only else [])
    if serve_args:
        db = work / f"db-{port}.sqlite"
        cmd = [PY, "-m", "proxy", "serve", "--port", str(port), "--upstream", upstream, "--db", f"sqlite:///{db}",
               "--log-level", "warning", *serve_args]
    else:
        cmd = [PY, str(BENCH / "bare_relay.py"), "--port", str(port), "--upstream", upstream]
    proc = subprocess.Popen(perf + ["--", *cmd], cwd=BENCH.parent, preexec_fn=die_with_parent,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # The bare relay has no health route: it relays the fake upstream's. Under valgrind a start takes tens of seconds.
        _wait_up(f"http://127.0.0.1:{port}/" + ("healthz" if serve_args else "ready"), 600 if callgrind else 10)
        if requests:
            subprocess.run([PY, str(BENCH / "loadgen.py"), "--url", f"http://127.0.0.1:{port}/v1/chat/completions",
                            "-c", str(concurrency), "--requests", str(requests), "--warmup", "0"],
                           check=True, capture_output=True, preexec_fn=die_with_parent)
        time.sleep(1.0)  # the recorder catches up
    finally:
        # perf passes the signal on to what it runs, and prints its count when that exits;
        # valgrind runs the program in its own process.
        for child in [proc.pid] if callgrind else _children(proc.pid):
            os.kill(child, signal.SIGINT)
        proc.wait(600 if callgrind else 60)
    if callgrind:
        return sum(_callgrind_total(f) for f in work.glob(f"cg-{port}-*.out")), "instructions"
    counts: dict[str, float] = {}
    for line in out.read_text().splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[2] in ("instructions", "task-clock"):
            with contextlib.suppress(ValueError):
                counts[fields[2]] = float(fields[0])
    for unit in ("instructions", "task-clock"):
        if unit in counts:
            return counts[unit], unit
    raise SystemExit(f"perf printed no count: {out.read_text()}")


def _callgrind_total(path: Path) -> float:
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            return float(line.split()[1])
    raise SystemExit(f"callgrind wrote no total in {path}")


def _children(pid: int) -> list[int]:
    return [int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("-c", "--concurrency", type=int, default=50)
    ap.add_argument("--callgrind", action="store_true", help="count with valgrind's callgrind (no PMU needed; ~50x slower)")
    ap.add_argument("--targets", default=",".join(TARGETS), help="a subset of: " + ", ".join(TARGETS) + " (the bare relay always runs)")
    args = ap.parse_args()
    chosen = ["bare relay", *(t for t in TARGETS if t != "bare relay" and t in args.targets.split(","))]
    tool = "valgrind" if args.callgrind else "perf"
    if shutil.which(tool) is None:
        raise SystemExit(f"{tool} is not installed (Debian: apt-get install {'valgrind' if args.callgrind else 'linux-perf'})")
    work = Path(tempfile.mkdtemp(prefix="streamproxy-instr-"))
    up_port = free_port()
    upstream = subprocess.Popen([PY, str(BENCH / "fake_upstream.py"), "--port", str(up_port)],
                                preexec_fn=die_with_parent, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.5)
        url = f"http://127.0.0.1:{up_port}"
        per_request: dict[str, float] = {}
        units = set()
        for target in chosen:
            idle, unit = count(target, url, work, 0, args.concurrency, args.callgrind)
            busy, unit_busy = count(target, url, work, args.requests, args.concurrency, args.callgrind)
            units |= {unit, unit_busy}
            per_request[target] = (busy - idle) / args.requests
        if len(units) != 1:
            raise SystemExit(f"perf counted {sorted(units)} in different runs")
        bare = per_request["bare relay"]
        if units == {"instructions"}:
            print(f"{args.requests} streams of 200 chunks, {args.concurrency} at a time; instructions per request:")
            for target, n in per_request.items():
                print(f"  {target:24s} {n / 1e6:6.2f} M   {n / bare:5.2f} x bare relay")
        else:
            print("no instruction counter on this machine (no PMU): CPU time instead, which moves with load")
            print(f"{args.requests} streams of 200 chunks, {args.concurrency} at a time; CPU ms per request:")
            for target, n in per_request.items():
                print(f"  {target:24s} {n:6.3f} ms  {n / bare:5.2f} x bare relay")
    finally:
        upstream.terminate()
        upstream.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
