"""The recorder: takes finished recordings from the relay and writes them beside the stream.

``submit`` never waits and never raises; it seals the recording (packs and compresses its
chunks), so what waits in memory is small. A background task has batches assembled (in the
assembly worker when there is one, the next batch while this one is written) and inserts them,
one transaction per batch. When the database fails, batches go to
the spool on disk and are retried until the database is back. When more than
``buffer_bytes`` wait in memory, new recordings go straight to the spool, so a slow
database costs memory only up to that bound and never slows a stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from proxy.assemble import assemble
from proxy.assembly_pool import AssemblyPool, DatabaseRefused
from proxy.worker_frames import WriteTo
from proxy.errors import StoreError
from proxy.record import Record
from proxy.spool import Spool

__all__ = ["Destination", "Recorder", "RecorderStats"]

log = logging.getLogger("streamproxy.recorder")

_RETRY_MIN = 0.25
_RETRY_MAX = 5.0
_SLICE = 0.002
# Assembly's turns grow with the backlog, to this many slices (32 ms) once a whole batch is
# waiting: under sustained load a recorder that yields every 2 ms falls ever further behind and
# spills to the spool, which costs more than writing to the database, so it never catches up.
_SLICE_GROWTH = 16
# How long the first recording of a batch may wait for others to join it: under light load a
# transaction per recording costs several times the CPU of one per batch.
_LINGER = 0.1
_SPILL_PART = 32
# Recordings waiting to be spilled may take this fraction of ``buffer_bytes`` on top of it.
_OVERFLOW_SHARE = 4
# Passes in which the database accepted others but refused a record on its own before it goes aside.
_STRIKES = 3


# A batch taken from the queue, its enqueue times, and its assembly (and write) under way.
_Ahead = tuple[list[Record], list[float], "asyncio.Future[bool]"]
# Batches under way beside the one the recorder waits for, with assembly workers. A worker answers
# in ~40 ms, but at 500 streams serve's event loop turns some ten times a second, and a batch costs
# the recorder a few turns: one batch at a time, recordings came faster than they were written
# and some 2,000 waited in memory (10 MB). In process, assembly takes the loop's own time: one.
_AHEAD_WITH_WORKERS = 2


@dataclass(slots=True)
class RecorderStats:
    submitted: int = 0
    written: int = 0
    spooled: int = 0
    spool_failures: int = 0
    db_failures: int = 0
    rejected: int = 0


class Destination(Protocol):
    """Where recordings go: ``Store``, or the serving process's ``LazyStore``."""

    def direct_write(self, records: Sequence[Record]) -> WriteTo | None: ...

    async def insert(self, records: Sequence[Record]) -> None: ...


def _looks_like_outage(exc: BaseException) -> bool:
    """Locked, read-only, unreachable or dropped (or, for a store opened on first use, not to be
    opened): the database, not the records, is at fault."""
    # Looked up, not imported: a process that never loaded a driver has none of its errors.
    database: tuple[type[BaseException], ...] = ()
    sqlalchemy = sys.modules.get("sqlalchemy.exc")
    if sqlalchemy is not None:
        database += (sqlalchemy.OperationalError, sqlalchemy.InterfaceError)
    asyncpg = sys.modules.get("asyncpg.exceptions")
    if asyncpg is not None:
        # Serve's own PostgreSQL writes: connection lost or refused, server shutting down or out
        # of connections, a read-only server.
        database += (
            asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.OperatorInterventionError,
            asyncpg.InsufficientResourcesError, asyncpg.ReadOnlySQLTransactionError,
        )
    return isinstance(exc, (*database, StoreError, OSError, TimeoutError)) or bool(
        getattr(exc, "connection_invalidated", False)
    )


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else repr(exc)


def _size(rec: Record) -> int:
    """What a sealed recording (every one the recorder holds) weighs in memory, roughly."""
    packed = rec.packed
    assert packed is not None, "the recorder holds sealed recordings only"
    return len(packed.body) + len(packed.chunk_ends) + len(packed.chunk_offsets) + len(rec.request_body) + 512


def ensure_assembled(rec: Record) -> None:
    if rec.assembled:
        return
    try:
        result = assemble(rec.path, rec.content_type, rec.chunk_list()[0])
        rec.reply = result.reply
        rec.notes.extend(result.notes)
    except Exception as exc:  # noqa: BLE001 - a bug in assembly must not cost the recording
        log.exception("assembling %s failed", rec.id)
        rec.notes.append(f"assembly failed: {exc!r}")
    rec.assembled = True


async def _assemble_in_slices(batch: list[Record], backlog: float = 1.0) -> None:
    """Assemble a batch, yielding to the event loop every few milliseconds (more with a
    ``backlog`` of several batches): a batch at once would hold up every stream's next chunk
    for as long as it takes (~0.1 s for 200)."""
    turn = _SLICE * min(_SLICE_GROWTH, max(1.0, backlog * _SLICE_GROWTH))
    deadline = time.perf_counter() + turn
    for r in batch:
        ensure_assembled(r)
        if time.perf_counter() > deadline:
            await asyncio.sleep(0)
            deadline = time.perf_counter() + turn


class Recorder:
    def __init__(
        self,
        store: Destination,
        spool: Spool,
        *,
        buffer_bytes: int = 32 * 1024**2,
        batch_size: int = 200,
        observe_lag: Callable[[float], None] | None = None,
        pool: AssemblyPool | None = None,
    ) -> None:
        self.store = store
        self.pool = pool
        self.observe_lag = observe_lag
        self.spool = spool
        self.buffer_bytes = buffer_bytes
        self.batch_size = batch_size
        self.stats = RecorderStats()
        self._pending: deque[tuple[Record, float]] = deque()
        self._ahead: deque[_Ahead] = deque()  # the next batches, taken from _pending, being assembled
        self._max_ahead = _AHEAD_WITH_WORKERS if pool is not None and pool.size else 1
        self._pending_bytes = 0
        self._overflow: list[Record] = []
        self._overflow_bytes = 0
        self._wake = asyncio.Event()
        self._full = asyncio.Event()  # a batch is ready, or drain/close wants it now
        self._idle = asyncio.Event()
        self._idle.set()
        self._spool_waiting = True  # a previous run may have left a spool
        self._db_ok = True
        self._retry_delay = _RETRY_MIN
        self._retry_at = 0.0
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._rejected: set[str] = set()
        self._strikes: Counter[str] = Counter()

    @property
    def depth(self) -> int:
        """Recordings waiting in memory."""
        ahead = sum(len(batch) for batch, _, _ in self._ahead)
        return len(self._pending) + len(self._overflow) + ahead

    def submit(self, rec: Record) -> None:
        """Hand over a finished recording. Never blocks, never raises."""
        self.stats.submitted += 1
        rec.seal()
        size = _size(rec)
        if self._pending_bytes + size > self.buffer_bytes:
            if self._overflow_bytes + size > self.buffer_bytes // _OVERFLOW_SHARE:
                # Even the spilling falls behind: memory stays bounded, at the stream's cost.
                self._spool_now([rec])
                return
            # Spilled by the background task, a part per write and fsync: spooling here, one
            # recording at a time, would stall every stream on the disk just when load is highest.
            self._overflow.append(rec)
            self._overflow_bytes += size
            self._idle.clear()
            self._wake.set()
            return
        self._pending.append((rec, time.monotonic()))
        self._pending_bytes += size
        if len(self._pending) >= self.batch_size:
            self._full.set()
        self._idle.clear()
        self._wake.set()

    def _spool_now(self, records: list[Record]) -> bool:
        """Write to the spool; False (and the records back in memory) if the disk refuses."""
        for r in records:
            ensure_assembled(r)
        try:
            self.spool.append(records)
        except OSError:
            # Both the database and the disk refuse: keep them in memory rather than drop them.
            self.stats.spool_failures += 1
            log.exception("spool write failed; keeping %d recording(s) in memory", len(records))
            for r in records:
                self._pending.append((r, time.monotonic()))
                self._pending_bytes += _size(r)
            return False
        self.stats.spooled += len(records)
        self._spool_waiting = True
        self._wake.set()
        return True

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="streamproxy-recorder")

    async def _run(self) -> None:
        while True:
            now = time.monotonic()
            may_try_db = self._db_ok or now >= self._retry_at
            if self._overflow:
                await self._spill()
                continue
            if self._ahead:
                await self._write_pending(may_try_db)
                continue
            if self._pending:
                await self._linger()
                await self._write_pending(may_try_db)
                continue
            if self._spool_waiting and may_try_db:
                await self._ingest_spool()
                continue
            self._idle.set()
            if self._closing:
                return
            timeout = max(0.0, self._retry_at - now) if self._spool_waiting else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()

    async def _spill(self) -> None:
        # A part at a time, each left in the overflow until it is spooled: cancelled (by
        # close), whatever is left there goes to the spool with the rest.
        part = self._overflow[:_SPILL_PART]
        await self._assemble(part, self._backlog())
        del self._overflow[: len(part)]
        self._overflow_bytes -= sum(map(_size, part))
        if not self._spool_now(part):
            # The disk refuses too (the part is back in memory): no retrying it in a loop that never yields.
            await asyncio.sleep(max(0.0, self._retry_at - time.monotonic()))

    async def _linger(self) -> None:
        wait = self._pending[0][1] + _LINGER - time.monotonic()
        if wait > 0 and not self._full.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), wait)
        self._full.clear()

    async def _assemble(self, batch: list[Record], backlog: float, *, write: bool = False) -> bool:
        """Assemble the batch; True when an assembly worker wrote it to the database too (asked
        to ``write``, with a SQLite file). Raises ``DatabaseRefused`` if the database refused
        the worker's write."""
        if self.pool is not None:
            rows = self.store.direct_write(batch) if write and not any(r.assembled for r in batch) else None
            if await self.pool.assemble(batch, rows):
                return rows is not None
        await _assemble_in_slices(batch, backlog)
        return False

    def _backlog(self) -> float:
        """Recordings waiting in memory, in batches."""
        return self.depth / self.batch_size

    def _worth_starting_next(self) -> bool:
        """Enough waits to assemble beside this batch's insert: a quarter batch, or what has
        lingered its time. Under load that keeps the worker and the database busy at once
        (waiting for a whole batch, the two took turns and the lag grew past a second);
        under light load the batch still lingers to fill, a transaction per few recordings
        costing far more CPU each."""
        if not self._pending:
            return False
        return len(self._pending) >= self.batch_size // 4 or time.monotonic() - self._pending[0][1] >= _LINGER

    def _assemble_next(self, *, write: bool) -> _Ahead:
        """Take the next batch out of ``_pending`` and start assembling (and writing) it."""
        backlog = self._backlog()
        batch: list[Record] = []
        times: list[float] = []
        while self._pending and len(batch) < self.batch_size:
            rec, t = self._pending.popleft()
            self._pending_bytes -= _size(rec)
            batch.append(rec)
            times.append(t)
        return batch, times, asyncio.ensure_future(self._assemble(batch, backlog, write=write))

    def _start_ahead(self, may_try_db: bool) -> None:
        """Start the next batches' assembly (in a worker process, and write), to run while this
        one is written, as far as there is room and work worth starting."""
        while may_try_db and len(self._ahead) < self._max_ahead and self._worth_starting_next():
            self._ahead.append(self._assemble_next(write=True))

    async def _write_pending(self, may_try_db: bool) -> None:
        batch, times, assembling = self._ahead.popleft() if self._ahead else self._assemble_next(write=may_try_db)
        if self._max_ahead > 1:
            # With workers, the next batches go out now, beside this one. In process, the next
            # would only take turns with this one's assembly: it starts once this one is assembled.
            self._start_ahead(may_try_db)
        refused_whole: DatabaseRefused | None = None
        try:
            written = await assembling
        except asyncio.CancelledError:
            assembling.cancel()
            self._spool_now(batch)
            raise
        except DatabaseRefused as exc:
            written, refused_whole = False, exc
        self._start_ahead(may_try_db)
        if written:
            self._written(batch, times, [])
            return
        if refused_whole is not None:
            if refused_whole.outage:
                # Trying again from here would wait out the same lock or failure a second time.
                self._db_failed(refused_whole)
                self._spool_now(batch)
                return
            # A record the database refuses: the store's insert below finds which, and sets it
            # aside. Records of a share another worker wrote come back unassembled.
            for r in batch:
                ensure_assembled(r)
        if not may_try_db:
            if not self._spool_now(batch):
                # Neither the database nor the disk takes them: wait for the next database attempt
                # instead of retrying the disk in a loop that never yields.
                await asyncio.sleep(max(0.0, self._retry_at - time.monotonic()))
            return
        try:
            refused = await self._insert(batch)
        except asyncio.CancelledError:
            self._spool_now(batch)
            raise
        except Exception as exc:  # noqa: BLE001 - any database failure: spool, never drop
            self._db_failed(exc)
            self._spool_now(batch)
            return
        self._written(batch, times, refused)

    def _written(self, batch: list[Record], times: list[float], refused: list[tuple[Record, BaseException]]) -> None:
        self._db_recovered()
        self._quarantine(refused)
        self.stats.written += len(batch) - len(refused)
        if self.observe_lag is not None:
            now = time.monotonic()
            for t in times:
                self.observe_lag(now - t)

    async def _insert(self, batch: list[Record]) -> list[tuple[Record, BaseException]]:
        """Insert a batch; if the database refuses it, insert one at a time. Returns the records it
        refused while accepting others (then the fault is theirs, not the database's); raises
        when it accepted none."""
        try:
            await self.store.insert(batch)
            return []
        except Exception as exc:
            # One at a time against a database that is down would only multiply the wait.
            if len(batch) == 1 or _looks_like_outage(exc):
                raise
        refused: list[tuple[Record, BaseException]] = []
        for rec in batch:
            try:
                await self.store.insert([rec])
            except Exception as exc:  # noqa: BLE001 - sorted out below
                refused.append((rec, exc))
        if len(refused) == len(batch):
            raise refused[-1][1]
        return refused

    def _quarantine(self, refused: list[tuple[Record, BaseException]]) -> None:
        """Records the database refuses while it accepts others go aside, so they cannot block the rest."""
        if not refused:
            return
        try:
            self.spool.reject([rec for rec, _ in refused])
        except OSError:
            self.stats.spool_failures += 1
            log.exception("could not set aside %d recording(s) the database refused", len(refused))
            return
        for rec, exc in refused:
            log.error("the database refused recording %s; set aside in the spool directory: %s", rec.id, _first_line(exc))
            self._rejected.add(rec.id)
        self.stats.rejected += len(refused)

    async def _ingest_spool(self) -> None:
        self._spool_waiting = False
        failure: BaseException | None = None
        lone_failures: list[tuple[Record, BaseException]] = []
        accepted = 0
        for path in self.spool.claim():
            file_ok = True
            for batch in Spool.read(path, self.batch_size):
                batch = [r for r in batch if r.id not in self._rejected]
                if not batch:
                    continue
                try:
                    refused = await self._insert(batch)
                except Exception as exc:  # noqa: BLE001 - leave the claimed file for the next attempt
                    failure, file_ok = exc, False
                    if _looks_like_outage(exc):
                        break
                    if len(batch) == 1:
                        lone_failures.append((batch[0], exc))
                    continue
                self._quarantine(refused)
                accepted += len(batch) - len(refused)
            if file_ok:
                path.unlink(missing_ok=True)
            elif failure is not None and _looks_like_outage(failure):
                break
        self.stats.written += accepted
        if failure is None:
            self._db_recovered()
            return
        if accepted:
            # The database took others in this same pass; a record it keeps refusing on its own goes aside.
            for rec, refusal in lone_failures:
                self._strikes[rec.id] += 1
                if self._strikes[rec.id] >= _STRIKES:
                    self._quarantine([(rec, refusal)])
        self._db_failed(failure)
        self._spool_waiting = True

    def _db_failed(self, exc: BaseException) -> None:
        self.stats.db_failures += 1
        if self._db_ok:
            log.warning("database write failed, spooling until it is back: %s", _first_line(exc))
        else:
            self._retry_delay = min(self._retry_delay * 2, _RETRY_MAX)
        self._db_ok = False
        self._retry_at = time.monotonic() + self._retry_delay

    def _db_recovered(self) -> None:
        if not self._db_ok:
            log.warning("database is back; writing spooled recordings")
        self._db_ok = True
        self._retry_delay = _RETRY_MIN

    async def drain(self, timeout: float | None = None) -> None:
        """Wait until everything submitted so far is in the database or the spool.

        Recordings waiting in the spool get one attempt at the database now, without waiting out
        the retry delay (after an outage, a drain tells whether they got in).
        """
        self._full.set()
        if self._spool_waiting:
            self._retry_at = 0.0
            self._idle.clear()
        self._wake.set()
        await asyncio.wait_for(self._idle.wait(), timeout)

    async def close(self, timeout: float = 30.0) -> None:
        """Write what is buffered; whatever the database cannot take by ``timeout`` goes to the spool."""
        self._closing = True
        self._full.set()
        self._retry_at = 0.0  # one last try at the database, whatever the backoff says
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        leftover = [r for r, _ in self._pending] + self._overflow
        while self._ahead:
            batch, _, assembling = self._ahead.pop()
            assembling.cancel()
            leftover = batch + leftover
        self._overflow = []
        self._overflow_bytes = 0
        self._pending.clear()
        self._pending_bytes = 0
        if leftover:
            self._spool_now(leftover)
