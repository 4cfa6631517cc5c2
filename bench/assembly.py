"""CPU time of ``proxy.assemble.assemble`` on four chat streams, in µs per stream.

* ``bench``: the stream ``fake_upstream.py`` serves (200 chunks with a ``ts`` field, a
  different time in each, then ``[DONE]``), split into events by ``EventSplitter`` as the relay does;
* ``openai``: 200 chunks shaped like OpenAI's own (``service_tier``, ``system_fingerprint``,
  ``obfuscation``), then a usage chunk and ``[DONE]``;
* ``usage``: the same as OpenAI sends it with ``stream_options.include_usage``, ``"usage":null``
  in every chunk but the last;
* ``varying``: the same as ``openai`` with ``created`` different in every chunk, so that no two
  chunks begin alike (the worst case for the assembler's shortcuts).

``--against REV`` also times ``proxy/assemble.py`` as it was at git revision REV, in the same
process, the two taking turns, and prints the ratio; both must give the same result.

    python bench/assembly.py [--against HEAD~1] [--rounds 15] [--reps 200]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
from fake_upstream import DONE, events

from proxy.assemble import assemble
from proxy.sse import EventSplitter

ROOT = Path(__file__).resolve().parent.parent
PATH = "/v1/chat/completions"
SSE = "text/event-stream"

Assemble = Callable[[str, str | None, Sequence[bytes]], Any]


def split(body: bytes) -> list[bytes]:
    splitter = EventSplitter()
    return splitter.feed(body) + splitter.flush()


def bench_stream() -> list[bytes]:
    # As fake_upstream.py serves it: the time in every chunk, a different one.
    ts = time.time_ns()
    body = b"".join(b"%s%d%s" % (head, ts + i * 52_000, tail) for i, (head, tail) in enumerate(events(200)))
    return split(body + DONE)


def openai_stream(n: int = 200, varying: bool = False, include_usage: bool = False) -> list[bytes]:
    def chunk(choices: list[dict[str, Any]], i: int, **extra: Any) -> bytes:
        obj = {
            "id": "chatcmpl-CXwq9ZbKq3y1kL0sQf7uV2nTjHgA8",
            "object": "chat.completion.chunk",
            "created": 1764136800 + i * varying,
            "model": "gpt-4o-mini-2024-07-18",
            "service_tier": "default",
            "system_fingerprint": "fp_560af6e559",
            "choices": choices,
            # stream_options.include_usage: every chunk says "usage":null but the last.
            **({"usage": None} if include_usage else {}),
            **extra,
            "obfuscation": "xY3kQ9abc12"[: 3 + i % 8],
        }
        return b"data: " + orjson.dumps(obj) + b"\n\n"

    def choice(delta: dict[str, Any], finish: str | None = None) -> list[dict[str, Any]]:
        return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]

    out = [chunk(choice({"role": "assistant", "content": "", "refusal": None}), 0)]
    out += [chunk(choice({"content": f" word{i}"}), i) for i in range(1, n - 1)]
    out.append(chunk(choice({}, "stop"), n - 1))
    usage = {"prompt_tokens": 19, "completion_tokens": n - 2, "total_tokens": n + 17}
    out.append(chunk([], n, usage=usage))
    return split(b"".join(out) + DONE)


def load_at(rev: str) -> Assemble:
    """``assemble`` from ``proxy/assemble.py`` at git revision ``rev``."""
    source = subprocess.run(
        ["git", "show", f"{rev}:proxy/assemble.py"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    with tempfile.NamedTemporaryFile("wb", suffix=".py", delete=False) as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location("assemble_at_rev", f.name)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    Path(f.name).unlink()
    fn: Assemble = module.assemble
    return fn


def cpu_us(fn: Assemble, chunks: list[bytes], reps: int) -> float:
    start = time.process_time()
    for _ in range(reps):
        fn(PATH, SSE, chunks)
    return (time.process_time() - start) / reps * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--against", metavar="REV", help="also time proxy/assemble.py at this git revision")
    ap.add_argument("--rounds", type=int, default=15, help="timed rounds; the median is printed")
    ap.add_argument("--reps", type=int, default=200, help="calls per round")
    args = ap.parse_args()

    contenders: dict[str, Assemble] = {"now": assemble}
    if args.against:
        contenders = {args.against: load_at(args.against), "now": assemble}
    streams = [
        ("bench", bench_stream()),
        ("openai", openai_stream()),
        ("usage", openai_stream(include_usage=True)),
        ("varying", openai_stream(varying=True)),
    ]
    for name, chunks in streams:
        results = {label: fn(PATH, SSE, chunks) for label, fn in contenders.items()}
        if len({repr(r) for r in results.values()}) != 1:
            sys.exit(f"{name}: the contenders disagree: {results}")
        times: dict[str, list[float]] = {label: [] for label in contenders}
        for _ in range(args.rounds):
            for label, fn in contenders.items():
                times[label].append(cpu_us(fn, chunks, args.reps))
        medians = {label: statistics.median(t) for label, t in times.items()}
        line = f"{name:7} {len(chunks)} chunks, {sum(map(len, chunks)) / 1000:.1f} kB:"
        line += "".join(f"  {label} {us:7.1f} µs" for label, us in medians.items())
        if args.against:
            line += f"  now/{args.against} {medians['now'] / medians[args.against]:.2f}"
        print(line)


if __name__ == "__main__":
    main()
