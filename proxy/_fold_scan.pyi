"""The C steady state of proxy.assemble._ChoicesFold.add_run (proxy/_fold_scan.c)."""

from collections.abc import Sequence

def scan(
    chunks: Sequence[bytes],
    n: int,
    head: bytes,
    close: bytes,
    keyed: int,
    last_tail: bytes | None,
    parts: list[str],
    /,
) -> tuple[int, int | str | None]: ...
