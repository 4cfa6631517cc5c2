"""Assembly in worker processes, beside the relay.

Folding a stream's JSON into its reply costs a good part of what relaying the stream costs
(~0.3 ms for 200 chat chunks with unpacking, against ~0.8-1 ms for a bare relay's whole request).
Run on the event loop's thread it delays every stream's next chunk; run in a thread it still holds
the GIL. So the recorder hands batches to worker processes (``python -m proxy.assembly_worker``,
which imports the fold and nothing else): each recording crosses a pipe packed as the database
stores it (one compressed body and its chunk ends, not 200 objects), and comes back as its reply,
notes and search text, a batch a frame, compressed.

Given the batch's rows too (``rows.write_to``, for a SQLite file), the worker also writes
them and answers only whether that worked.

A worker that dies, hangs or answers nonsense is killed and replaced for the next batch, and that
batch is assembled in this process instead: no recording is lost, or left unassembled, because a
worker went away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Sequence

from proxy.worker_frames import LENGTH, Answer, Job, Packed, WriteTo, frame, unframe
from proxy.record import Record

__all__ = ["AssemblyPool", "DatabaseRefused"]

log = logging.getLogger("streamproxy.assembly")

# A batch of 200 takes ~0.2 s; a worker this late is stuck (a bug in a fold), not busy.
_TIMEOUT = 60.0


def _pack(rec: Record) -> Packed:
    rec.seal()
    packed = rec.packed
    assert packed is not None
    return rec.path, rec.content_type, rec.request_body, packed.body, packed.encoding, packed.chunk_ends


class DatabaseRefused(Exception):
    """The database refused a worker's write of a batch; the batch is assembled, not written."""

    def __init__(self, message: str, *, outage: bool) -> None:
        super().__init__(message)
        self.outage = outage  # locked, read-only, unreachable: the database, not the records, is at fault


class _Worker:
    """One worker process and its pipes. Several batches may be on their way at once: each is
    written as it comes, and the worker answers them in that order."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        assert proc.stdin is not None and proc.stdout is not None
        self.stdin = proc.stdin
        self.stdout = proc.stdout
        # Done once the answer to the last question asked has been read (or its asker gave up):
        # the next asker reads after it. Waiting for each answer before asking again cost the
        # recorder several turns of serve's event loop a batch, ~0.1 s each at 500 streams.
        self._answered: asyncio.Future[None] | None = None

    @classmethod
    async def spawn(cls) -> _Worker:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "proxy.assembly_worker",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            # Out of serve's process group: a terminal's Ctrl-C reaches the whole group, and the
            # worker must outlive it to assemble what serve flushes on the way out. It leaves
            # when serve closes its input, or dies.
            start_new_session=True,
        )
        worker = cls(proc)
        await worker.run(([], None))  # up, and answering
        return worker

    async def run(self, job: Job) -> Answer:
        before, mine = self._answered, asyncio.get_running_loop().create_future()
        self._answered = mine
        try:
            self.stdin.write(frame(job))  # at once, so questions go out in the order they are asked
            await self.stdin.drain()
            if before is not None:
                await asyncio.shield(before)
            (size,) = LENGTH.unpack(await self.stdout.readexactly(LENGTH.size))
            answer: Answer = unframe(await self.stdout.readexactly(size))
        finally:
            # Also on failure: the pool then kills this worker, and those asking after it fail on its pipe.
            if not mine.done():
                mine.set_result(None)
        items, write = job
        results, refusal = answer
        # Replies come back unless the worker wrote them.
        if (results is not None) != (write is None or refusal is not None):
            raise ValueError("worker answered out of turn")
        if results is not None and len(results) != len(items):
            raise ValueError(f"worker answered {len(results)} of {len(items)}")
        return answer

    async def stop(self, *, kill: bool = False) -> None:
        if self.proc.returncode is None:
            if kill:
                self.proc.kill()
            else:
                self.stdin.close()  # end of input: the worker exits
        with contextlib.suppress(ProcessLookupError, TimeoutError):
            await asyncio.wait_for(self.proc.wait(), 5.0)
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


class AssemblyPool:
    """``workers`` processes that assemble recordings' replies, a contiguous share of each batch each."""

    def __init__(self, workers: int, *, timeout: float = _TIMEOUT) -> None:
        self.size = workers
        self.timeout = timeout
        self._workers: list[_Worker | None] = [None] * workers
        self._spawning = asyncio.Lock()

    async def start(self) -> None:
        """Start the workers now, so the first batch does not wait for a Python to boot."""
        for i in range(self.size):
            await self._worker(i)

    async def _worker(self, i: int) -> _Worker:
        async with self._spawning:  # batches asked at once must not each start a worker of their own
            worker = self._workers[i]
            if worker is None or worker.proc.returncode is not None:
                worker = self._workers[i] = await _Worker.spawn()
            return worker

    async def assemble(self, records: Sequence[Record], write: WriteTo | None = None) -> bool:
        """Fill in ``reply`` and ``notes`` of each record not yet assembled; or, given ``write``
        (the rows of ``records``, none of them assembled), have the workers write them too, each
        its share in a transaction, and fill in nothing. False if a worker failed (it is replaced
        for the next batch); the caller then assembles in-process (and writes). Raises
        ``DatabaseRefused`` if the database refused a share: the records are assembled then,
        except those of shares it accepted."""
        todo = [r for r in records if not r.assembled]
        if not todo:
            return True
        if write is not None and len(todo) != len(records):
            raise ValueError("only a batch with none of its records assembled is written by a worker")
        packed = [_pack(r) for r in todo]
        share = -(-len(packed) // self.size)
        shares = [(i, slice(i * share, (i + 1) * share)) for i in range(self.size) if i * share < len(packed)]
        jobs: list[tuple[int, Job]] = [
            (i, (packed[s], None if write is None else write._replace(rows=write.rows[s], body_rows=write.body_rows[s])))
            for i, s in shares
        ]
        asked: list[_Worker] = []
        try:
            # No gather and no wait_for for one share: each task or future between the answer
            # and the recorder is one more turn of a busy event loop.
            async with asyncio.timeout(self.timeout):
                for i, _ in jobs:
                    asked.append(await self._worker(i))
                if len(jobs) == 1:
                    answers = [await asked[0].run(jobs[0][1])]
                else:
                    answers = await asyncio.gather(*(w.run(job) for w, (_, job) in zip(asked, jobs, strict=True)))
        except Exception as exc:  # noqa: BLE001 - a dead, stuck or confused worker, or a bug here: the recorder assembles
            log.warning("an assembly worker failed (%r); replacing it, assembling this batch here", exc)
            await self._retire(asked, kill=True)
            return False
        except asyncio.CancelledError:
            # Cut off between a question and its answer, a worker would hand the next caller this one's.
            for w in self._forget(asked):
                if w.proc.returncode is None:
                    w.proc.kill()
            raise
        refusal: tuple[str, bool] | None = None
        for (_, s), (results, refused) in zip(shares, answers, strict=True):
            refusal = refusal or refused
            for rec, (reply, notes, text) in zip(todo[s], results or (), strict=results is not None):
                rec.reply = reply
                rec.notes.extend(notes)
                rec.search_text = text
                rec.assembled = True
        if refusal is not None:
            raise DatabaseRefused(refusal[0], outage=refusal[1])
        return True

    def _forget(self, workers: Sequence[_Worker]) -> list[_Worker]:
        """Take ``workers`` out of the pool, where they still are (a batch asked after another
        that failed may find its worker replaced already), so that the next batch starts anew."""
        for k, current in enumerate(self._workers):
            if current is not None and any(current is w for w in workers):
                self._workers[k] = None
        return list(workers)

    async def _retire(self, workers: Sequence[_Worker], *, kill: bool) -> None:
        """Stop ``workers``: after a failure none of them is known to be between frames."""
        for w in self._forget(workers):
            await w.stop(kill=kill)

    async def close(self) -> None:
        await self._retire([w for w in self._workers if w is not None], kill=False)
