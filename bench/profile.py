"""Profile ``streamproxy serve`` under load with py-spy and print where its time goes.

    pip install py-spy
    python bench/profile.py [-c 100] [--seconds 10] [--db URL]

Prints the top functions by own time ("self") and by time including callees ("total"),
as a share of the samples taken in the proxy process: by default of the samples where a
thread was busy (CPU); ``--idle`` counts waiting too (wall time); ``--gil`` only the thread
holding the GIL (Python's own CPU). ``--worker`` profiles serve's assembly worker instead (the
process that assembles replies and, on SQLite, writes the rows).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from procs import die_with_parent, tree
from run import CHAT, PY, database, servers

BENCH = Path(__file__).resolve().parent


def top(collapsed: Path, n: int) -> str:
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        k = int(count)
        samples += k
        frames = [fr.split(" (", 1)[0] + " (" + fr.rsplit("/", 1)[-1] if " (" in fr else fr for fr in stack.split(";")]
        own[frames[-1]] += k
        for fr in set(frames):
            total[fr] += k
    out = [f"{samples} samples"]
    for title, counter in (("self", own), ("total", total)):
        out.append(f"\ntop {n} by {title}:")
        out.extend(f"  {100 * k / samples:5.1f}%  {fr}" for fr, k in counter.most_common(n))
    return "\n".join(out)


def _worker(serve: int) -> int:
    """The assembly worker serve starts with its first batch: waits for it, up to 30 s."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if children := tree(serve)[1:]:
            return children[0]
        time.sleep(0.05)
    raise SystemExit("serve started no assembly worker within 30 s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-c", "--concurrency", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--db", default=None)
    ap.add_argument("--gil", action="store_true", help="only the thread holding the GIL (Python CPU)")
    ap.add_argument("--idle", action="store_true", help="include idle threads (wall time)")
    ap.add_argument("--chunks", type=int, default=200)
    ap.add_argument("--no-uvloop", action="store_true")
    ap.add_argument("--proxy-arg", action="append", default=[])
    ap.add_argument("--worker", action="store_true", help="profile the assembly worker, not serve")
    args = ap.parse_args()
    pyspy = shutil.which("py-spy") or str(Path(PY).parent / "py-spy")
    work = Path(tempfile.mkdtemp(prefix="streamproxy-profile-"))
    try:
        with database(args.db, work) as db, servers(args, work, db, args.seconds + 120, with_bare=False) as srv:
            sp = srv["streamproxy"]
            load = subprocess.Popen(
                [PY, str(BENCH / "loadgen.py"), "--url", sp.url + CHAT, "-c", str(args.concurrency),
                 "--seconds", str(args.seconds + 2), "--warmup", "0", "--chunks", str(args.chunks)],
                stdout=subprocess.PIPE, preexec_fn=die_with_parent,
            )
            collapsed = work / "profile.txt"
            pid = _worker(sp.pid) if args.worker else sp.pid
            spy = [pyspy, "record", "--pid", str(pid), "--rate", str(args.rate), "--duration", str(int(args.seconds)),
                   "--nonblocking", *(["--gil"] if args.gil else []), *(["--idle"] if args.idle else [])]
            subprocess.run([*spy, "--format", "raw", "--output", str(collapsed)], check=True, capture_output=True,
                           timeout=args.seconds + 60)
            out, _ = load.communicate(timeout=args.seconds + 120)
            print(out.decode().strip())
            print(top(collapsed, args.top))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
