"""The assembly worker paces itself while nothing else waits for it (``proxy.assembly_worker``:
a batch in one burst on one of two cores held up the requests under way): it pauses as long as
it worked once ``BURST`` has passed, never while another batch waits, and pacing changes nothing
of what it answers or writes. A real SQLite file; the clock and the pauses are the test's, so
that nothing here depends on how fast this machine is."""

from __future__ import annotations

import sqlite3

import pytest

from proxy.assembly_pool import _pack
from proxy.assembly_worker import BURST, Pacer, run_job
from proxy.store import Store
from tests.test_search_backlog import corpus, store  # noqa: F401 - store: the fixture, a real SQLite file, migrated


class Clock:
    """Time that moves only when the work (each reading) or a pause moves it."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step
        self.pauses: list[float] = []

    def __call__(self) -> float:
        self.now += self.step
        return self.now

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds


def test_it_pauses_as_long_as_it_worked_once_a_burst_has_passed() -> None:
    clock = Clock(step=BURST / 4 * 1.01)  # the margin: sums of floats a hair short of BURST
    pace = Pacer(lambda: False, clock=clock, sleep=clock.sleep)
    for _ in range(3):  # three readings: less than a burst of work so far
        pace()
    assert clock.pauses == []
    pace()  # the fourth passes it
    assert clock.pauses == [pytest.approx(BURST, rel=0.02)]
    pace()  # and the count starts again after the pause
    assert clock.pauses == [pytest.approx(BURST, rel=0.02)]


def test_it_never_pauses_while_another_batch_waits() -> None:
    clock = Clock(step=BURST * 1.01)
    pace = Pacer(lambda: True, clock=clock, sleep=clock.sleep)
    for _ in range(100):
        pace()
    assert clock.pauses == []


def test_waiting_for_input_is_not_work() -> None:
    clock = Clock(step=BURST / 4)
    pace = Pacer(lambda: False, clock=clock, sleep=clock.sleep)
    clock.now += 10.0  # the worker sat waiting for the next batch
    pace.start()
    pace()
    assert clock.pauses == []


async def test_a_paced_batch_is_written_and_answered_as_an_unpaced_one(store: Store) -> None:
    paced, unpaced = corpus(0), corpus(100)  # the same answers, recorded at other times
    clock = Clock(step=BURST * 1.01)  # every reading a burst: a pause before each recording and the write
    pace = Pacer(lambda: False, clock=clock, sleep=clock.sleep)
    connections: dict[str, sqlite3.Connection] = {}
    for batch, paces in ((paced, [pace]), (unpaced, [])):
        write = store.direct_write(batch)
        assert write is not None
        assert run_job(([_pack(r) for r in batch], write), connections, *paces) == (None, None)
    assert len(clock.pauses) == len(paced) + 1
    for a, b in zip(paced, unpaced, strict=True):
        got_a, got_b = await store.get(a.id), await store.get(b.id)
        assert got_a is not None and got_b is not None
        assert got_a.reply == got_b.reply is not None
        assert got_a.chunk_list() == got_b.chunk_list()
    # Without a write, the replies come back the same too.
    assert run_job(([_pack(r) for r in corpus(200)], None), {}, pace)[0] == run_job(([_pack(r) for r in corpus(300)], None), {})[0]
