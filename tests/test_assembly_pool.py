"""Assembly in worker processes: the same replies as in-process, and no recording lost or left
unassembled when a worker dies or hangs."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from proxy.assemble import assemble
from proxy.assembly_pool import AssemblyPool
from proxy.errors import ConfigError
from proxy.ids import new_id
from proxy.record import Record
from proxy.settings import Settings
from tests.conftest import API_KEY, ProxyFactory, RunningProxy
from tests.fakes import FakeUpstream
from tests.processes import ServeProcess
from tests.test_durability import store_at
from tests.shapes import EDGES, SHAPES
from tests.test_shapes_e2e import MALFORMED

# Assembly does not depend on the backend: one is enough.
SQLITE = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

WORKER_MODULE = b"proxy.assembly_worker"


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:  # a thread that ended meanwhile
            continue
    return out


def worker_pids() -> set[int]:
    """This process's children that are assembly workers."""
    pids: set[int] = set()
    for child in _children(os.getpid()):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if WORKER_MODULE in cmdline:
            pids.add(child)
    return pids


async def post(proxy: RunningProxy, path: str, body: dict[str, object]) -> str:
    async with aiohttp.ClientSession() as s:
        async with s.post(proxy.base_url + path.removeprefix("/v1"), json=body, headers={"Authorization": f"Bearer {API_KEY}"}) as r:
            await r.read()
            return r.headers["X-Recording-Id"]


def expected(rec: Record) -> tuple[object, list[str]]:
    result = assemble(rec.path, rec.content_type, rec.chunks)
    return result.reply, result.notes


def test_workers_cannot_be_negative() -> None:
    with pytest.raises(ConfigError, match="assembly workers"):
        Settings(assembly_workers=-1)


@SQLITE
async def test_every_shape_assembles_in_a_worker_as_in_process(fake_upstream: FakeUpstream, proxy_factory: ProxyFactory) -> None:
    proxy = await proxy_factory(assembly_workers=1)
    assert len(worker_pids()) == 1
    ids: dict[str, str] = {}
    for name, shape in {**SHAPES, **EDGES}.items():
        fake_upstream.sse(shape.path, shape.events)
        ids[name] = await post(proxy, shape.path, shape.request)
    fake_upstream.sse("/v1/chat/completions", list(MALFORMED))
    ids["malformed"] = await post(proxy, "/v1/chat/completions", SHAPES["chat_simple"].request)
    await proxy.drain()
    for name, rec_id in ids.items():
        rec = await proxy.store.get(rec_id)
        assert rec is not None, name
        assert (rec.reply, rec.notes) == expected(rec), name
    assert ids and (await proxy.store.get(ids["chat_simple"])).reply == SHAPES["chat_simple"].full  # type: ignore[union-attr]
    await proxy.stop()
    assert worker_pids() == set(), "closing the proxy stops its workers"


@SQLITE
async def test_a_killed_worker_costs_no_recording(fake_upstream: FakeUpstream, proxy_factory: ProxyFactory) -> None:
    proxy = await proxy_factory(assembly_workers=1)
    shape = SHAPES["chat_tools"]
    fake_upstream.sse(shape.path, shape.events)
    (first,) = worker_pids()
    os.kill(first, signal.SIGKILL)
    rec_id = await post(proxy, shape.path, shape.request)
    await proxy.drain()
    rec = await proxy.store.get(rec_id)
    assert rec is not None and rec.reply == shape.full and rec.notes == []

    # The next batch goes to a new worker.
    again = await post(proxy, shape.path, shape.request)
    await proxy.drain()
    rec = await proxy.store.get(again)
    assert rec is not None and rec.reply == shape.full
    (second,) = worker_pids()
    assert second != first


def _record(shape_name: str) -> Record:
    shape = SHAPES[shape_name]
    return Record(
        id=new_id(), started_at=datetime.now(UTC),
        method="POST", path=shape.path, response_headers={"content-type": "text/event-stream"},
        chunks=list(shape.events),
    )


async def test_a_hung_worker_is_replaced_and_its_batch_assembled_here() -> None:
    pool = AssemblyPool(1, timeout=1.0)
    await pool.start()
    try:
        (stuck,) = worker_pids()
        os.kill(stuck, signal.SIGSTOP)
        recs = [_record("chat_simple"), _record("responses_text")]
        assert await pool.assemble(recs) is False
        assert all(not r.assembled for r in recs), "the caller assembles them"
        assert stuck not in worker_pids()

        more = [_record("completions")]
        assert await pool.assemble(more) is True
        assert more[0].assembled and more[0].reply == SHAPES["completions"].full
    finally:
        await pool.close()
    assert worker_pids() == set()


async def test_a_batch_is_shared_between_workers_in_order() -> None:
    pool = AssemblyPool(2)
    await pool.start()
    try:
        assert len(worker_pids()) == 2
        names = ["chat_simple", "completions", "responses_text", "chat_tools", "responses_tool"]
        recs = [_record(n) for n in names]
        assert await pool.assemble(recs) is True
        assert [r.reply for r in recs] == [SHAPES[n].full for n in names]
    finally:
        await pool.close()


@SQLITE
async def test_ctrl_c_leaves_the_worker_to_assemble_what_serve_flushes(fake_upstream: FakeUpstream, tmp_path: Path, db_url: str) -> None:
    """Ctrl-C signals the whole process group; the worker must outlive it until serve has flushed."""
    shape = SHAPES["chat_tools"]
    fake_upstream.sse(shape.path, shape.events)
    server = ServeProcess("--upstream", fake_upstream.url, "--db", db_url, log_path=tmp_path / "serve.log")
    await server.start()
    async with aiohttp.ClientSession() as s:
        async with s.post(server.base_url + "/chat/completions", json=shape.request) as r:
            await r.read()
            rec_id = r.headers["X-Recording-Id"]
    server.interrupt_group()  # as a terminal's Ctrl-C: serve and its worker alike
    assert await server.wait(timeout=30) == 0
    async with store_at(db_url) as store:
        rec = await store.get(rec_id)
    assert rec is not None and rec.reply == shape.full and rec.notes == []
    log = server.log_path.read_text()
    assert "assembly worker failed" not in log and "KeyboardInterrupt" not in log, log




def _gone(pid: int) -> bool:
    try:
        return "\nState:\tZ" in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True


@SQLITE
async def test_the_worker_leaves_when_serve_is_killed(fake_upstream: FakeUpstream, tmp_path: Path, db_url: str) -> None:
    server = ServeProcess("--upstream", fake_upstream.url, "--db", db_url, log_path=tmp_path / "serve.log")
    await server.start()
    assert server.proc is not None
    workers = [c for c in _children(server.proc.pid) if WORKER_MODULE in Path(f"/proc/{c}/cmdline").read_bytes()]
    assert len(workers) == 1, "serve assembles in one worker by default"
    server.signal(signal.SIGKILL)
    await server.wait(timeout=10)
    for _ in range(200):
        if _gone(workers[0]):
            break
        await asyncio.sleep(0.05)
    assert _gone(workers[0]), "an orphaned worker would linger"


async def test_batches_asked_at_once_take_turns_on_a_worker() -> None:
    """The recorder may spill one batch while the next is being assembled: both are answered."""
    pool = AssemblyPool(1)
    await pool.start()
    try:
        first, second = [_record("chat_simple")], [_record("completions")]
        assert await asyncio.gather(pool.assemble(first), pool.assemble(second)) == [True, True]
        assert first[0].reply == SHAPES["chat_simple"].full and second[0].reply == SHAPES["completions"].full
    finally:
        await pool.close()


async def test_many_batches_on_their_way_at_once_each_get_their_own_answer() -> None:
    """The recorder keeps batches on their way to a worker while it waits for the first: the
    worker answers in the order asked, and each caller reads its own answer."""
    pool = AssemblyPool(1)
    await pool.start()
    try:
        names = ["chat_simple", "completions", "responses_text", "chat_tools", "responses_tool", "chat_simple"]
        batches = [[_record(n) for _ in range(k + 1)] for k, n in enumerate(names)]
        assert await asyncio.gather(*(pool.assemble(b) for b in batches)) == [True] * len(names)
        for name, batch in zip(names, batches, strict=True):
            assert [r.reply for r in batch] == [SHAPES[name].full] * len(batch), name
        assert len(worker_pids()) == 1
    finally:
        await pool.close()


async def test_a_worker_killed_with_batches_on_their_way_fails_each_and_one_replaces_it() -> None:
    pool = AssemblyPool(1)
    await pool.start()
    try:
        (first,) = worker_pids()
        os.kill(first, signal.SIGSTOP)  # it holds on to what it is asked, then dies
        batches = [[_record("chat_simple")] for _ in range(4)]
        asked = [asyncio.ensure_future(pool.assemble(b)) for b in batches]
        await asyncio.sleep(0.2)
        os.kill(first, signal.SIGKILL)
        assert await asyncio.gather(*asked) == [False] * 4
        assert all(not r.assembled for b in batches for r in b), "the caller assembles them"

        more = [[_record("completions")] for _ in range(3)]
        assert await asyncio.gather(*(pool.assemble(b) for b in more)) == [True] * 3
        assert all(b[0].reply == SHAPES["completions"].full for b in more)
        assert len(worker_pids()) == 1, "batches asked at once after a failure share one new worker"
        assert first not in worker_pids()
    finally:
        await pool.close()
    assert worker_pids() == set()


@SQLITE
@pytest.mark.parametrize("mode", ["replay", "passthrough"])
async def test_no_worker_where_nothing_upstream_is_recorded(proxy_factory: ProxyFactory, mode: str) -> None:
    await proxy_factory(assembly_workers=1, mode=mode)
    assert worker_pids() == set()


def test_the_worker_stays_light_without_asyncio() -> None:
    """The worker is a second Python on a small machine: asyncio (with ssl) alone would add ~9 MB."""
    probe = "import sys, proxy.assembly_worker; print(sorted({'asyncio', 'ssl', 'sqlalchemy', 'aiohttp'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
