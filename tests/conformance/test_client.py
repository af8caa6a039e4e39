"""The uniform Client on every backend: queries, rows, transactions, release, broken links."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import pytest

import pgconnector
from pgconnector import ConnectionError, Row
from tests.conftest import MakeManager, ServerInfo

pytestmark = pytest.mark.integration


@pytest.fixture
async def table(pg_server: ServerInfo, make_manager: MakeManager) -> Any:
    """A fresh table for this test (unique name: tests may share a server)."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    m = make_manager(min_size=0, max_size=1)
    await m.connect()
    async with m.connection() as c:
        await c.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, note text)")
    await m.disconnect()
    yield name
    await m.connect()
    async with m.connection() as c:
        await c.execute(f"DROP TABLE IF EXISTS {name}")
    await m.disconnect()


async def test_queries_with_dollar_placeholders(make_manager: MakeManager, table: str) -> None:
    m = make_manager(min_size=1)
    await m.connect()
    async with m.connection() as c:
        assert await c.execute(f"INSERT INTO {table} VALUES ($1, $2)", 1, "one") == "INSERT 0 1"
        assert await c.execute(f"INSERT INTO {table} VALUES ($1, $2), ($3, $2)", 2, "x", 3) == (
            "INSERT 0 2"
        )
        rows = await c.fetch(f"SELECT id, note FROM {table} WHERE id >= $1 ORDER BY id", 1)
        assert [tuple(r) for r in rows] == [(1, "one"), (2, "x"), (3, "x")]
        row = await c.fetchrow(f"SELECT id, note FROM {table} WHERE id = $1", 2)
        assert row is not None
        assert row[0] == 2
        assert row["note"] == "x"
        assert dict(row) == {"id": 2, "note": "x"}
        assert list(row.keys()) == ["id", "note"]
        assert len(row) == 2
        assert await c.fetchrow(f"SELECT * FROM {table} WHERE id = $1", 99) is None
        assert await c.fetchval(f"SELECT note FROM {table} WHERE id = $1", 1) == "one"
        assert await c.fetchval(f"SELECT id, note FROM {table} WHERE id = 3", column=1) == "x"
        assert await c.fetchval(f"SELECT id FROM {table} WHERE id = 99") is None
        assert await c.fetch(f"SELECT * FROM {table} WHERE false") == []
        assert await c.execute(f"UPDATE {table} SET note = $1", "y") == "UPDATE 3"
        assert await c.execute(f"DELETE FROM {table} WHERE id = $1", 3) == "DELETE 1"
        assert isinstance(row, Row)


async def test_autocommit_outside_transaction(make_manager: MakeManager, table: str) -> None:
    m = make_manager(min_size=2, max_size=2)
    await m.connect()
    a = await m.get_client()
    b = await m.get_client()
    try:
        await a.execute(f"INSERT INTO {table} VALUES (1, 'a')")
        assert await b.fetchval(f"SELECT count(*) FROM {table}") == 1
    finally:
        await a.release()
        await b.release()


async def test_transactions_and_nested_savepoints(make_manager: MakeManager, table: str) -> None:
    m = make_manager(min_size=1)
    await m.connect()
    async with m.connection() as c:
        async with c.transaction():
            await c.execute(f"INSERT INTO {table} VALUES (1, 'kept')")
            with pytest.raises(ValueError, match="inner"):
                async with c.transaction():
                    await c.execute(f"INSERT INTO {table} VALUES (2, 'undone')")
                    raise ValueError("inner")
            async with c.transaction():
                await c.execute(f"INSERT INTO {table} VALUES (3, 'kept too')")
        with pytest.raises(RuntimeError, match="outer"):
            async with c.transaction():
                await c.execute(f"INSERT INTO {table} VALUES (4, 'rolled back')")
                raise RuntimeError("outer")
        ids = [r["id"] for r in await c.fetch(f"SELECT id FROM {table} ORDER BY id")]
        assert ids == [1, 3]
        # an SQL error inside a savepoint is contained by it
        async with c.transaction():
            with pytest.raises(pgconnector.UniqueViolation, match="duplicate key"):
                async with c.transaction():
                    await c.execute(f"INSERT INTO {table} VALUES (1, 'dup')")
            await c.execute(f"INSERT INTO {table} VALUES (5, 'after the error')")
        assert await c.fetchval(f"SELECT count(*) FROM {table}") == 3


async def test_terminated_connection_is_discarded(
    make_manager: MakeManager, pg_server: ServerInfo
) -> None:
    m = make_manager(min_size=1, max_size=1, application_name="pgc-terminate-test")
    events: list[pgconnector.PoolEvent] = []
    m.add_listener("remove", events.append)
    await m.connect()
    c = await m.get_client()
    victim = c.connection_id
    pid = await c.fetchval("SELECT pg_backend_pid()")
    async with _admin(make_manager) as admin:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid) is True
    with pytest.raises(ConnectionError) as info:
        await c.fetchval("SELECT 1")
    assert info.value.cause is not None
    await c.release()
    assert victim in {e.connection_id for e in events}
    async with m.connection() as fresh:
        assert fresh.connection_id != victim
        assert await fresh.fetchval("SELECT 1") == 1
    stats = m.get_pool_stats()
    assert stats.in_use == 0
    assert stats.total == stats.connections_opened - stats.connections_closed


class _admin:
    """A separate pool for administrative statements in a test."""

    def __init__(self, make_manager: MakeManager) -> None:
        self.m = make_manager(min_size=0, max_size=1)

    async def __aenter__(self) -> Any:
        await self.m.connect()
        self.c = await self.m.get_client()
        return self.c

    async def __aexit__(self, *exc: object) -> None:
        await self.c.release()
        await self.m.disconnect()


TYPE_CASES: list[tuple[str, Any]] = [
    ("SELECT 7::int2", 7),
    ("SELECT 70000::int4", 70000),
    ("SELECT 9000000000::int8", 9000000000),
    ("SELECT 1.5::float4", 1.5),
    ("SELECT 2.25::float8", 2.25),
    ("SELECT 12.340::numeric", Decimal("12.340")),
    ("SELECT 'héllo'::text", "héllo"),
    ("SELECT 'v'::varchar", "v"),
    ("SELECT true", True),
    ("SELECT '\\x00ff'::bytea", b"\x00\xff"),
    ("SELECT '2024-02-29'::date", dt.date(2024, 2, 29)),
    ("SELECT '13:45:01.5'::time", dt.time(13, 45, 1, 500000)),
    ("SELECT '2024-02-29 13:45:01'::timestamp", dt.datetime(2024, 2, 29, 13, 45, 1)),
    (
        "SELECT '2024-02-29 13:45:01+00'::timestamptz",
        dt.datetime(2024, 2, 29, 13, 45, 1, tzinfo=dt.timezone.utc),
    ),
    ("SELECT '1 day 02:00:03'::interval", dt.timedelta(days=1, hours=2, seconds=3)),
    (
        "SELECT 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid",
        uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
    ),
    ("SELECT '{\"a\": [1, 2.5, null]}'::json", {"a": [1, 2.5, None]}),
    ("SELECT '{\"b\": true}'::jsonb", {"b": True}),
    ("SELECT ARRAY[1, 2, NULL]::int4[]", [1, 2, None]),
    ("SELECT ARRAY['x', 'y']::text[]", ["x", "y"]),
    ("SELECT NULL::int4", None),
]


@pytest.mark.parametrize(("sql", "expected"), TYPE_CASES, ids=[c[0][7:] for c in TYPE_CASES])
async def test_type_decoding(make_manager: MakeManager, sql: str, expected: Any) -> None:
    m = make_manager(min_size=1)
    await m.connect()
    async with m.connection() as c:
        value = await c.fetchval(sql)
    assert value == expected
    assert type(value) is type(expected)
    if isinstance(expected, dt.datetime) and expected.tzinfo is not None:
        assert value.tzinfo is dt.timezone.utc  # the same tzinfo on every backend
    if isinstance(expected, Decimal):
        assert str(value) == str(expected)


async def test_arguments_round_trip(make_manager: MakeManager) -> None:
    m = make_manager(min_size=1)
    await m.connect()
    async with m.connection() as c:
        assert await c.fetchval("SELECT $1::int + $2::int", 40, 2) == 42
        assert await c.fetchval("SELECT $1::text", None) is None
        assert await c.fetchval("SELECT $1::numeric * 2", Decimal("1.25")) == Decimal("2.50")
        when = dt.datetime(2020, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
        assert await c.fetchval("SELECT $1::timestamptz", when) == when
        assert await c.fetchval("SELECT $1::bytea", b"\x01\x02") == b"\x01\x02"
        assert await c.fetchval("SELECT $1::int[]", [1, 2, 3]) == [1, 2, 3]
        assert await c.fetchval("SELECT $1::text || $1::text", "ab") == "abab"
        # JSON arguments: JSON text, or a dict, on every backend
        assert await c.fetchval("SELECT $1::jsonb", '{"a": [1, null]}') == {"a": [1, None]}
        assert await c.fetchval("SELECT $1::jsonb -> 'k'", {"k": "v"}) == "v"
        assert await c.fetchval("SELECT $1::json", {"n": 1.5}) == {"n": 1.5}
