"""Full-text search: the same answers on SQLite (FTS5 trigram) and PostgreSQL (pg_trgm), an index
kept in step with inserts and deletes, and migrations 0002 and 0004 on a database that already holds
recordings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.filters import Filters
from proxy.store import Store, open_store
from proxy.store.engine import _alembic_config, create_engine, current_revision
from proxy.store import search as search_module
from proxy.store.search import search_terms
from tests.recordings import T0, insert_as_before_0003, make_record

CORPUS = [
    ("What is the rate limit for gpt-4o?", "The rate limit depends on your tier.", "gpt-4o"),
    ("Translate 'Grüße aus Köln' to English", "Greetings from Cologne", "gpt-4o-mini"),
    ("Explain 100% CPU_usage in top", "It means one core is fully busy.", "gpt-4o-mini"),
    ("Quote: \"hello world\" please", "hello world", "gpt-4o-mini"),
    ("Is an ox a cow?", "An ox is a trained bovine.", "gpt-4o"),
]


@pytest.fixture
async def store(any_db_url: str) -> AsyncIterator[Store]:
    engine = await open_store(any_db_url, create=True)
    s = Store(engine)
    await s.insert([make_record(q, a, model=m, at=T0 + timedelta(minutes=i)) for i, (q, a, m) in enumerate(CORPUS)])
    yield s
    await engine.dispose()


async def questions(store: Store, search: str, **filters: str) -> list[int]:
    """Which of CORPUS (by index, recorded a minute apart) match."""
    records, _ = await store.list_recordings(Filters.from_mapping({"search": search, **filters}), limit=100)
    return sorted(int((r.started_at - T0).total_seconds() // 60) for r in records)


@pytest.mark.parametrize(
    ("search", "expected"),
    [
        ("rate limit", [0]),                 # every word, anywhere
        ("RATE tier", [0]),                  # case-insensitive; the reply counts too
        ('"limit for"', [0]),                # a quoted phrase is one term
        ('"limit gpt"', []),                 # ... and must occur as written
        ("grüße köln", [1]),                 # non-ASCII
        ("cologne", [1]),
        ("100%", [2]),                       # LIKE wildcards are plain characters
        ("cpu_usage", [2]),
        ("cpu%usage", []),
        ('"hello world"', [3]),
        ("ox", [4]),                         # shorter than a trigram: still found
        ("ox bovine", [4]),
        ("brief", [0, 1, 2, 3, 4]),          # the system message is searched too
        ("nothing-like-this", []),
    ],
)
async def test_search_finds_words_and_phrases(store: Store, search: str, expected: list[int]) -> None:
    assert await questions(store, search) == expected


# Quotes, backslashes, wildcards, non-Latin scripts, and trigrams that all occur but apart ("abca cab").
ODD = [
    'She said "yes" (it\'s 5" long) about C:\\tmp\\x_1 at 50% off',
    "Ünïcödé 日本語テキスト and abca cab",
]


@pytest.mark.parametrize(
    ("search", "expected"),
    [
        ('yes"', [0]),                       # a double quote inside a term
        ('"said ""', [0]),                   # the phrase 'said ', then a lone double quote
        ("it's", [0]),
        ('5"', [0]),                         # two characters: LIKE alone
        ("c:\\tmp\\x_1", [0]),
        ("x%1", []),
        ("50%", [0]),                        # exactly three characters, one a wildcard
        ("日本語", [1]),                     # exactly three, none Latin
        ("本語テキ", [1]),
        ("ÜNÏ", [1]),                        # lower-cased like the text, beyond ASCII too
        ("cödé", [1]),
        ("cab", [1]),
        ('"ca c"', [1]),
        ("abcab", []),                       # every trigram is in the text, the term is not
        ("caba", []),
        ("abca yes", []),                    # the terms are in different recordings
    ],
)
async def test_search_takes_odd_characters_literally(any_db_url: str, search: str, expected: list[int]) -> None:
    engine = await open_store(any_db_url, create=True)
    try:
        store = Store(engine)
        await store.insert([make_record(q, "ok", at=T0 + timedelta(minutes=i)) for i, q in enumerate(ODD)])
        assert await questions(store, search) == expected
    finally:
        await engine.dispose()


async def test_search_combines_with_filters_and_pages(store: Store) -> None:
    assert await questions(store, "brief", model="gpt-4o") == [0, 4]
    page, cursor = await store.list_recordings(Filters.from_mapping({"search": "brief"}), limit=2)
    rest, end = await store.list_recordings(Filters.from_mapping({"search": "brief"}), limit=10, cursor=cursor)
    assert cursor is not None and end is None
    assert [r.id for r in page + rest] == sorted((r.id for r in page + rest), reverse=True)
    assert len(page + rest) == len(CORPUS)


async def test_index_follows_deletes_and_reinserts(store: Store) -> None:
    assert await store.delete_before(T0 + timedelta(minutes=2)) == 2
    assert await questions(store, "rate limit") == []
    assert await questions(store, "cologne") == []
    assert await questions(store, "brief") == [2, 3, 4]
    await store.insert([make_record("rate limit again", "ok", at=T0 + timedelta(minutes=9))])
    assert await questions(store, "rate limit") == [9]
    if store.engine.dialect.name == "sqlite":
        async with store.engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("VACUUM"))  # may renumber the recordings' implicit rowids
        assert await questions(store, "rate limit") == [9]
        assert await questions(store, "brief") == [2, 3, 4, 9]


async def test_sqlite_search_uses_the_fts_index(tmp_path: Path) -> None:
    engine = await open_store(f"sqlite+aiosqlite:///{tmp_path / 's.db'}", create=True)
    try:
        from proxy.store.queries import apply_filters
        from proxy.store.models import RecordingRow
        from sqlalchemy import select

        stmt = apply_filters(select(RecordingRow.id), Filters(search="rate limit", model="gpt-4o"))
        sql = str(stmt.compile(engine.sync_engine, compile_kwargs={"literal_binds": True}))
        async with engine.connect() as conn:
            plan = " ".join(str(row[-1]) for row in await conn.execute(text("EXPLAIN QUERY PLAN " + sql)))
        assert "VIRTUAL TABLE INDEX" in plan and "recording_search_fts" in plan
    finally:
        await engine.dispose()


def test_search_terms() -> None:
    assert search_terms('Rate  "Limit For" x') == ["rate", "limit for", "x"]
    assert search_terms('unbalanced "quote') == ["unbalanced", '"quote']
    assert search_terms("it's \"rate limit\" C:\\tmp") == ["it's", "rate limit", "c:\\tmp"]
    assert search_terms(' "" ') == []


async def _migrate_to(engine: AsyncEngine, revision: str, *, down: bool = False) -> None:
    async with engine.begin() as conn:
        op = command.downgrade if down else command.upgrade
        await conn.run_sync(lambda c: op(_alembic_config(c), revision))


async def test_migration_0002_indexes_existing_recordings_and_goes_down(any_db_url: str) -> None:
    engine = create_engine(any_db_url)
    try:
        await _migrate_to(engine, "0001")
        await insert_as_before_0003(engine, make_record("an old question about zebras", "stripes"))
        await _migrate_to(engine, "0002")
        assert await current_revision(engine) == "0002"
        assert await questions_before_0006(engine, "zebras stripes") == [0]
        await _migrate_to(engine, "0001", down=True)
        assert await current_revision(engine) == "0001"
        assert len(await questions_like_0001(engine, "zebras")) == 1
        await _migrate_to(engine, "head")
        assert await questions(Store(engine), "zebras") == [0]
    finally:
        await engine.dispose()


async def _fts_definition(engine: AsyncEngine) -> str | None:
    if engine.dialect.name != "sqlite":
        return None
    async with engine.connect() as conn:
        return await conn.scalar(text("SELECT sql FROM sqlite_master WHERE name = 'recording_search_fts'"))


async def test_migration_0004_keeps_search_answers_both_ways(any_db_url: str) -> None:
    searches = [
        "rate limit", "RATE tier", '"limit for"', '"limit gpt"', "grüße köln", "100%", "cpu_usage", '"hello world"',
        "ox bovine", "brief", "yes\"", "it's", "50%", "日本語", "cödé", "abcab", "cab", "nothing-like-this",
    ]
    corpus = [(q, a) for q, a, _ in CORPUS] + [(q, "ok") for q in ODD]
    engine = create_engine(any_db_url)
    try:
        store = Store(engine)
        await _migrate_to(engine, "0003")
        await store.insert([make_record(q, a, at=T0 + timedelta(minutes=i)) for i, (q, a) in enumerate(corpus)])
        before = {s: await questions_before_0006(engine, s) for s in searches}
        assert before["rate limit"] == [0] and before["日本語"] == [6] and before["abcab"] == []

        await _migrate_to(engine, "0004")
        assert await current_revision(engine) == "0004"
        assert {s: await questions_before_0006(engine, s) for s in searches} == before
        # Written after the migration, found through the rebuilt index with the old rows.
        await store.insert([make_record("rate limit once more", "ok", at=T0 + timedelta(minutes=20))])
        assert await store.delete_before(T0 + timedelta(minutes=1)) == 1
        after = {s: await questions_before_0006(engine, s) for s in searches}
        assert after["rate limit"] == [20] and after["brief"] == [1, 2, 3, 4, 5, 6, 20]

        await _migrate_to(engine, "0003", down=True)
        assert {s: await questions_before_0006(engine, s) for s in searches} == after
        if engine.dialect.name == "sqlite":
            assert "detail" not in (await _fts_definition(engine) or "")
            async with engine.connect() as conn:  # 0002's table answers phrases again
                hits = await conn.scalars(text("""SELECT rowid FROM recording_search_fts WHERE recording_search_fts MATCH '"rate limit"'"""))
                assert len(hits.all()) == 1

        await _migrate_to(engine, "head")
        assert "detail=none" in (await _fts_definition(engine) or "detail=none")
        assert {s: await questions(store, s) for s in searches} == after
    finally:
        await engine.dispose()


async def questions_before_0006(engine: AsyncEngine, search: str) -> list[int]:
    """What the store's search answered from 0002 to 0005, when every recording joined the index
    as it was written: each term by ``LIKE``, narrowed on SQLite by the FTS table (raw SQL: the
    store's reads are written for the head revision, where recent recordings may be pending)."""
    terms = search_terms(search)
    where = [f"search_text LIKE :t{i} ESCAPE '/'" for i in range(len(terms))]
    params: dict[str, str] = {f"t{i}": search_module._like_pattern(t) for i, t in enumerate(terms)}
    indexed = search_module._indexed_terms(terms)
    if indexed and engine.dialect.name == "sqlite":
        params["fts"] = search_module._fts_query(indexed)
        where.append(
            "id IN (SELECT id FROM recording_search WHERE n IN"
            " (SELECT rowid FROM recording_search_fts WHERE recording_search_fts MATCH :fts))"
        )
    async with engine.connect() as conn:
        rows = await conn.scalars(text(f"SELECT started_at FROM recordings WHERE {' AND '.join(where) or '1=1'}"), params)
        started = [datetime.fromisoformat(v) if isinstance(v, str) else v for v in rows]
    return sorted(int((t.replace(tzinfo=UTC) - T0).total_seconds() // 60) for t in started)


async def questions_like_0001(engine: AsyncEngine, word: str) -> list[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT id FROM recordings WHERE search_text LIKE :p"), {"p": f"%{word}%"})
        return [r[0] for r in rows]


@pytest.mark.parametrize(("selective", "window"), [(1, 2), (1, 1), (2, 100)])
async def test_every_plan_returns_the_same_rows(
    db_url: str, monkeypatch: pytest.MonkeyPatch, selective: int, window: int
) -> None:
    """Common terms read the newest rows first, rare ones go through the index; the rows are the same."""
    engine = await open_store(db_url, create=True)
    store = Store(engine)
    try:
        await store.insert([make_record(q, a, model=m, at=T0 + timedelta(minutes=i)) for i, (q, a, m) in enumerate(CORPUS)])
        cases: list[dict[str, str]] = [
            {"search": "brief"}, {"search": "brief", "model": "gpt-4o"}, {"search": "rate limit"},
            {"search": "brief ox"}, {"search": '"hello world"'}, {"search": "ox"},
        ]
        expected = {}
        for case in cases:
            for limit in (1, 2, 10):
                expected[(tuple(case.items()), limit)] = await pages(store, case, limit)
        monkeypatch.setattr(search_module, "_SELECTIVE", selective)
        monkeypatch.setattr(search_module, "_WINDOW", window)
        for (case_items, limit), want in expected.items():
            assert await pages(store, dict(case_items), limit) == want, (case_items, limit)
    finally:
        await engine.dispose()


async def pages(store: Store, values: dict[str, str], limit: int) -> list[list[str]]:
    """Every page of a listing, by id."""
    out: list[list[str]] = []
    cursor = None
    while True:
        records, cursor = await store.list_recordings(Filters.from_mapping(values), limit=limit, cursor=cursor)
        out.append([r.id for r in records])
        if cursor is None:
            return out
