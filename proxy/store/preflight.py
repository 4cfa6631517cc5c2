"""``python -m proxy.store.preflight LOG_LEVEL`` with the database URL on stdin: connect, migrate
to head, exit. ``streamproxy serve`` runs it as a child process before it starts serving, so that
the serving process does not load SQLAlchemy and Alembic (some 35 MB it would keep) where its
streams never need them (``proxy/lazy_store.py``).

Exit 0 when the database is ready; else one line on stdout saying why, and exit 1 (the database)
or 2 (the URL), as ``streamproxy`` exits for those. The URL comes on stdin, never in the
arguments, which any user of the machine can read: it may hold a password.
"""

from __future__ import annotations

import asyncio
import sys

from proxy.cli import configure_logging
from proxy.errors import ConfigError, StreamproxyError
from proxy.store.engine import open_store


async def _check(db: str) -> None:
    engine = await open_store(db, create=True)
    await engine.dispose()


def main() -> int:
    configure_logging(sys.argv[1] if len(sys.argv) > 1 else "info")
    try:
        asyncio.run(_check(sys.stdin.read()))
    except ConfigError as exc:
        print(exc, flush=True)
        return 2
    except StreamproxyError as exc:
        print(exc, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
