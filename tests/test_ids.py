"""Recording ids are ULIDs: 26 Crockford base32 digits, time first, so they sort by time."""

from __future__ import annotations

import os

import pytest

from proxy import ids
from proxy.ids import IdSource, new_id

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def ulid(ms: int, random: bytes) -> str:
    """The ULID spec's encoding, digit by digit: 48 bits of milliseconds, then 80 random bits."""
    value = (ms << 80) | int.from_bytes(random, "big")
    return "".join(CROCKFORD[(value >> (5 * k)) & 31] for k in range(25, -1, -1))


@pytest.mark.parametrize("random", [bytes(10), b"\xff" * 10, bytes(range(10)), os.urandom(10)])
@pytest.mark.parametrize("now", [0.0, 1.0, 1_764_201_600.123, 2**48 / 1000 - 0.001])
def test_an_id_is_the_ulid_of_its_millisecond_and_random_bits(monkeypatch: pytest.MonkeyPatch, now: float, random: bytes) -> None:
    monkeypatch.setattr(ids.os, "urandom", lambda n: random[:n])
    assert new_id(now) == ulid(int(now * 1000), random)


def test_ids_sort_by_time_and_do_not_repeat() -> None:
    made = [new_id(1_764_201_600 + i / 1000) for i in range(2000)]
    assert made == sorted(made)
    assert len(set(made)) == len(made)
    assert all(len(i) == 26 and set(i) <= set(CROCKFORD) for i in made)


def test_ids_from_one_source_sort_in_the_order_made_within_a_millisecond() -> None:
    """Replay gives the n-th identical request the n-th recording by id: requests that start in
    the same millisecond (or after the clock stepped back) must still sort as they came."""
    ids = IdSource()
    now = 1_764_201_600.5  # exact in binary, as are the times below
    made = [ids(now) for _ in range(1000)] + [ids(now - 5)] + [ids(now + 0.25)]
    assert made == sorted(made) and len(set(made)) == len(made)
    assert all(i[:10] == made[0][:10] for i in made[:1001]), "the same millisecond, as far as the clock said"
    assert made[-1][:10] > made[0][:10], "a later millisecond starts afresh"
