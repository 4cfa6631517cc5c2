"""pytest plugin (entry point ``pytest11``): a ``streamproxy`` fixture that runs the proxy for
the tests of a module, answering from that module's cassette.

A cassette is ``cassettes/<module>.jsonl`` beside the test module (or in
``--streamproxy-cassette-dir``), in the export format. Modes (``--streamproxy-mode``):

- ``replay`` (default): answer from the cassette only; a miss fails the test with the proxy's
  message (key, nearest recording, what differs) even if the code under test swallowed the 404.
- ``record``: forward everything to ``--streamproxy-upstream``; at the end of the session each
  module's cassette is rewritten with what this run recorded.
- ``auto``: replay what the cassette has, forward and record the rest; new recordings are added
  to the cassette at the end of the session.
- ``passthrough``: forward, record nothing, write nothing.

One proxy serves a whole module, so identical requests are answered in their recorded order
across the module's tests. Replay speed is 0.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import pytest

if TYPE_CHECKING:
    from proxy.background import BackgroundProxy
    from proxy.settings import Mode

__all__ = ["Streamproxy"]

_DEFAULT_MODE = "replay"
_WRITES = pytest.StashKey[dict[Path, bytes]]()
_OWNERS = pytest.StashKey[dict[Path, Path]]()
_MISSES_BEFORE = pytest.StashKey[int]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("streamproxy", "streamproxy: record and replay OpenAI-compatible streams")
    group.addoption(
        "--streamproxy-mode", default=_DEFAULT_MODE, metavar="MODE",
        help="replay (default): cassettes only; record: forward and rewrite cassettes; "
        "auto: replay hits, record misses; passthrough: forward, record nothing.",
    )
    group.addoption(
        "--streamproxy-upstream", default=None, metavar="URL",
        help="Upstream base URL for record/auto/passthrough [default: https://api.openai.com].",
    )
    group.addoption(
        "--streamproxy-cassette-dir", default=None, metavar="DIR",
        help="Where cassettes live [default: cassettes/ beside each test module].",
    )


def _mode(config: pytest.Config) -> Mode:
    from proxy.errors import ConfigError
    from proxy.settings import Mode

    try:
        return Mode.parse(config.getoption("streamproxy_mode"))
    except ConfigError as exc:
        raise pytest.UsageError(f"--streamproxy-mode: {exc}") from None


def _upstream(config: pytest.Config) -> str:
    from proxy.errors import ConfigError
    from proxy.settings import DEFAULT_UPSTREAM, normalize_upstream

    try:
        return normalize_upstream(config.getoption("streamproxy_upstream") or DEFAULT_UPSTREAM)
    except ConfigError as exc:
        raise pytest.UsageError(f"--streamproxy-upstream: {exc}") from None


def pytest_configure(config: pytest.Config) -> None:
    """Bad options fail the run before any test, in one line."""
    _mode(config)
    _upstream(config)
    config.stash[_WRITES] = {}
    config.stash[_OWNERS] = {}


def pytest_report_header(config: pytest.Config) -> str:
    return f"streamproxy: mode {config.getoption('streamproxy_mode')}"


def _cassette_path(config: pytest.Config, module_path: Path) -> Path:
    option = config.getoption("streamproxy_cassette_dir")
    directory = config.rootpath / option if option else module_path.parent / "cassettes"
    path = directory / f"{module_path.stem}.jsonl"
    owner = config.stash[_OWNERS].setdefault(path, module_path)
    if owner != module_path:
        pytest.fail(f"streamproxy: {owner} and {module_path} would share the cassette {path}; rename one", pytrace=False)
    return path


@dataclass
class Streamproxy:
    """What the ``streamproxy`` fixture gives a test: where the proxy listens, and how it runs."""

    server: BackgroundProxy = field(repr=False)
    mode: Mode
    cassette: Path

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def base_url(self) -> str:
        """The ``base_url`` for any OpenAI client (ends in ``/v1``)."""
        return self.server.base_url

    @property
    def miss_count(self) -> int:
        from proxy.keys import REPLAYER

        return self.server.app[REPLAYER].miss_count

    def misses(self, last: int) -> list[str]:
        from proxy.keys import REPLAYER

        kept = list(self.server.app[REPLAYER].misses)
        return kept[-last:] if last else []


def _load(server: BackgroundProxy, cassette: Path) -> None:
    from proxy.exchange import ImportResult, import_lines
    from proxy.keys import STORE

    async def load(f: BinaryIO) -> ImportResult:
        return await import_lines(await server.app[STORE].get(), f, name=str(cassette))

    with cassette.open("rb") as f:
        result = server.call(load(f))
    if result.errors:
        pytest.fail("streamproxy: broken cassette:\n" + "\n".join(result.errors), pytrace=False)


def _export(db: str) -> bytes:
    """The cassette's new content, read after the proxy stopped: in-flight streams have ended
    and the recorder has flushed everything by then."""
    from proxy.exchange import cassette_bytes
    from proxy.store import Store, open_store

    async def read() -> bytes:
        engine = await open_store(db, create=False)
        try:
            return await cassette_bytes(Store(engine))
        finally:
            await engine.dispose()

    # A loop of its own in a thread of its own: the test session may have a loop running here.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, read()).result()


@pytest.fixture(scope="module")
def _streamproxy_module(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Streamproxy]:
    from proxy.background import BackgroundProxy
    from proxy.settings import Mode, Settings

    config = request.config
    mode = _mode(config)
    cassette = _cassette_path(config, request.path)
    tmp = tmp_path_factory.mktemp("streamproxy")
    settings = Settings(
        port=0,
        upstream=_upstream(config),
        db=f"sqlite+aiosqlite:///{tmp / 'streamproxy.db'}",
        mode=mode,
        replay_speed=0.0,
        spool_dir=tmp / "spool",
        shutdown_grace=5.0,
    )
    server = BackgroundProxy(settings).start()
    try:
        if mode.replays and cassette.exists():
            _load(server, cassette)
        yield Streamproxy(server, mode, cassette)
    finally:
        server.stop()
    if mode in (Mode.RECORD, Mode.AUTO):
        config.stash[_WRITES][cassette] = _export(settings.db)


@pytest.fixture
def streamproxy(_streamproxy_module: Streamproxy, request: pytest.FixtureRequest) -> Streamproxy:
    """The proxy for this test's module; point an OpenAI client at ``streamproxy.base_url``."""
    request.node.stash[_MISSES_BEFORE] = _streamproxy_module.miss_count
    return _streamproxy_module


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """A replay miss fails the test, even when the code under test caught the 404."""
    result = yield
    proxy: Any = getattr(item, "funcargs", {}).get("streamproxy")
    if isinstance(proxy, Streamproxy) and _MISSES_BEFORE in item.stash:
        missed = proxy.miss_count - item.stash[_MISSES_BEFORE]
        if missed > 0:
            lines = "\n".join(f"  - {m}" for m in proxy.misses(missed))
            pytest.fail(
                f"streamproxy: {missed} request(s) had no recording in {proxy.cassette}:\n{lines}\n"
                "(record them with --streamproxy-mode=auto or record)",
                pytrace=False,
            )
    return result


def pytest_sessionfinish(session: pytest.Session) -> None:
    for path, data in session.config.stash.get(_WRITES, {}).items():
        if not data and not path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    for path, data in config.stash.get(_WRITES, {}).items():
        count = data.count(b"\n")
        terminalreporter.write_line(f"streamproxy: wrote {count} recording(s) to {path}")
