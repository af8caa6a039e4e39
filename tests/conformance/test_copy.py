"""COPY: ``copy_records_to_table``, ``copy_in`` and ``copy_out`` on every backend x manager."""

from __future__ import annotations

import datetime as dt
import io
import ipaddress
import math
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import pytest

import pgconnector
from pgconnector import ConfigError, errors
from tests.conftest import MakeManager
from tests.facade import ClientFacade

pytestmark = pytest.mark.integration

UTC = dt.timezone.utc

#: One column per type-parity type (and arrays of them), in the order of ``_ROWS``' values.
_COLUMNS = """
    id int4, i2 int2, i8 int8, f4 float4, f8 float8, num numeric, t text, vc varchar, b bool,
    by bytea, d date, tm time, ts timestamp, tstz timestamptz, iv interval, u uuid, j json,
    jb jsonb, ip inet, net cidr, ai int4[], at text[], a2 int4[], ajb jsonb[]
"""

_TEXT = "tab\there\nnewline\r\ncr back\\slash \\N \"double\" 'single' é ✓ 日本 {x,y} ,"

_ROWS: list[tuple[Any, ...]] = [
    (
        1, -32768, 2**62, 1.5, 0.1, Decimal("12345.678900"), _TEXT, "NULL", True,
        bytes(range(256)), dt.date(2024, 2, 29), dt.time(12, 34, 56, 789),
        dt.datetime(2024, 1, 2, 3, 4, 5, 6),
        dt.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))),
        dt.timedelta(days=-1, seconds=5, microseconds=7),
        uuid.UUID("12345678-1234-5678-1234-567812345678"),
        {"a": [1, "x\ty"], "b": None}, {"k": "é\n\\", "n": 1.5},
        ipaddress.ip_interface("192.168.1.5/24"), ipaddress.ip_network("10.0.0.0/8"),
        [1, None, 3], ["a,b", 'c"d', "e\\f", None, "", "NULL", " sp ", "{x}", "日本\t"],
        [[1, 2], [3, None]], [{"x": 1}, None],
    ),
    (2,) + (None,) * 23,
    (
        3, 32767, -(2**63), float("inf"), -1e308, Decimal("NaN"), "", "", False, b"",
        dt.date(1, 1, 1), dt.time(0, 0), dt.datetime(9999, 12, 31, 23, 59, 59, 999999),
        dt.datetime(1970, 1, 1, tzinfo=UTC), dt.timedelta(0), uuid.UUID(int=0),
        '{"as": "text"}', "[1, 2]", ipaddress.ip_address("::1"),
        ipaddress.ip_network("2001:db8::/32"), [], [], [], [],
    ),
]

#: What reading ``_ROWS`` back gives: the same values, JSON text decoded.
_EXPECTED = [list(row) for row in _ROWS]
_EXPECTED[2][16] = {"as": "text"}
_EXPECTED[2][17] = [1, 2]


def _comparable(value: Any) -> Any:
    """NaN never equals itself: compare it by name."""
    if isinstance(value, Decimal) and value.is_nan():
        return "Decimal NaN"
    if isinstance(value, float) and math.isnan(value):
        return "float NaN"
    return value


def _rows(rows: list[Any]) -> list[list[Any]]:
    return [[_comparable(value) for value in row] for row in rows]


def _name(prefix: str) -> str:
    return f"{prefix} {secrets.token_hex(4)}"


async def _table(c: ClientFacade, name: str, columns: str, schema: str | None = None) -> str:
    """Create ``name`` (a quoted identifier) and return its qualified, quoted name."""
    qualified = f'"{name}"' if schema is None else f'"{schema}"."{name}"'
    await c.execute(f"CREATE TABLE {qualified} ({columns})")
    return qualified


async def test_records_of_every_type_round_trip(make_manager: MakeManager) -> None:
    m = make_manager()
    await m.connect()
    async with m.connection() as c:
        table = await _table(c, _name("types"), _COLUMNS)
        try:
            copied = await c.copy_records_to_table(table.strip('"'), _ROWS)
            assert copied == len(_ROWS)
            rows = await c.fetch(f"SELECT * FROM {table} ORDER BY id")
            assert _rows([list(row) for row in rows]) == _rows(_EXPECTED)
            # timestamptz reads back aware, in UTC, on every backend
            assert rows[0]["tstz"].utcoffset() == dt.timedelta(0)
            assert type(rows[0]["by"]) is bytes
        finally:
            await c.execute(f"DROP TABLE {table}")


async def test_identifiers_are_quoted_and_columns_subset(make_manager: MakeManager) -> None:
    m = make_manager()
    await m.connect()
    async with m.connection() as c:
        schema = _name("My Schema")
        await c.execute(f'CREATE SCHEMA "{schema}"')
        try:
            name = _name("My Table")
            table = await _table(
                c, name, '"Odd Col" text, "ID" int4, other text DEFAULT \'dflt\'', schema
            )
            copied = await c.copy_records_to_table(
                name, [(1, "one"), (2, 'two "2"')], columns=["ID", "Odd Col"], schema=schema
            )
            assert copied == 2
            rows = await c.fetch(f'SELECT "ID", "Odd Col", other FROM {table} ORDER BY 1')
            assert [tuple(row) for row in rows] == [(1, "one", "dflt"), (2, 'two "2"', "dflt")]
        finally:
            await c.execute(f'DROP SCHEMA "{schema}" CASCADE')


async def test_empty_records_copy_nothing(make_manager: MakeManager) -> None:
    m = make_manager()
    await m.connect()
    async with m.connection() as c:
        table = await _table(c, _name("empty"), "a int")
        try:
            assert await c.copy_records_to_table(table.strip('"'), iter([])) == 0
            assert await c.fetchval(f"SELECT count(*) FROM {table}") == 0
        finally:
            await c.execute(f"DROP TABLE {table}")


async def _async_chunks(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def test_copy_in_from_every_source(make_manager: MakeManager) -> None:
    m = make_manager()
    await m.connect()
    data = "1\tone\n2\t\\N\n3\tthree é\\ttab\n"
    expected = [(1, "one"), (2, None), (3, "three é\ttab")]
    raw = data.encode()

    def split() -> Iterator[bytes]:
        # chunk boundaries anywhere, even inside a row or a UTF-8 character
        for i in range(0, len(raw), 5):
            yield raw[i:i + 5]

    sources: list[Any] = [raw, data, bytearray(raw), io.BytesIO(raw), split(), [raw]]
    if m.mode == "async":
        sources.append(_async_chunks([raw[:7], raw[7:]]))
    async with m.connection() as c:
        table = await _table(c, _name("src"), "a int, b text")
        try:
            for source in sources:
                await c.execute(f"TRUNCATE {table}")
                copied = await c.copy_in(f"COPY {table} FROM STDIN", source)
                assert copied == 3, source
                rows = await c.fetch(f"SELECT a, b FROM {table} ORDER BY a")
                assert [tuple(row) for row in rows] == expected, source
            # other formats are the server's business
            await c.execute(f"TRUNCATE {table}")
            csv = b'4,"quoted, comma"\n5,\n'
            assert await c.copy_in(f"COPY {table} (a, b) FROM STDIN WITH (FORMAT csv)", csv) == 2
            rows = await c.fetch(f"SELECT a, b FROM {table} ORDER BY a")
            assert [tuple(row) for row in rows] == [(4, "quoted, comma"), (5, None)]
        finally:
            await c.execute(f"DROP TABLE {table}")


async def test_copy_out_yields_the_data(make_manager: MakeManager) -> None:
    m = make_manager()
    await m.connect()
    async with m.connection() as c:
        table = await _table(c, _name("out"), "a int, b text, c bytea")
        try:
            await c.copy_records_to_table(
                table.strip('"'), [(1, "x\ty\\z", b"\x00\xff"), (2, None, None), (3, "é", b"")]
            )
            data = await c.copy_out(f"COPY {table} TO STDOUT").read_all()
            assert data == (
                b"1\tx\\ty\\\\z\t\\\\x00ff\n2\t\\N\t\\N\n3\t\xc3\xa9\t\\\\x\n"
            )
            query = f"COPY (SELECT a FROM {table} WHERE a > $$1$$ ORDER BY a) TO STDOUT"
            assert await c.copy_out(query).read_all() == b"2\n3\n"
            csv = await c.copy_out(f"COPY {table} (a, b) TO STDOUT WITH (FORMAT csv)").read_all()
            assert csv == b'1,x\ty\\z\n2,\n3,\xc3\xa9\n'
            # many rows arrive in several chunks, none split
            big = "COPY (SELECT generate_series(1, 100000)) TO STDOUT"
            chunks = [chunk async for chunk in c.copy_out(big)]
            assert len(chunks) > 1
            assert all(chunk.endswith(b"\n") for chunk in chunks)
            assert b"".join(chunks) == b"".join(b"%d\n" % i for i in range(1, 100001))
            assert await c.fetchval("SELECT 1") == 1
        finally:
            await c.execute(f"DROP TABLE {table}")


async def test_not_a_copy_in_the_right_direction_runs_nothing(make_manager: MakeManager) -> None:
    m = make_manager()
    await m.connect()
    async with m.connection() as c:
        table = await _table(c, _name("dir"), "a int")
        try:
            for sql in (
                f"INSERT INTO {table} VALUES (1)",
                f"COPY {table} TO STDOUT",
                f"COPY {table} FROM '/dev/null'",
                f"COPY {table} FROM STDIN; INSERT INTO {table} VALUES (2)",
                f"/* COPY {table} FROM STDIN */ INSERT INTO {table} VALUES (3)",
                "",
            ):
                with pytest.raises(ConfigError) as info:
                    await c.copy_in(sql, b"9\n")
                assert info.value.field == "sql"
            for sql in (
                f"SELECT * FROM {table}",
                f"COPY {table} FROM STDIN",
                f"COPY {table} TO '/tmp/out'",
                f"-- COPY {table} TO STDOUT\nDELETE FROM {table}",
            ):
                with pytest.raises(ConfigError) as info:
                    c.copy_out(sql)  # refused at the call, before any iteration
                assert info.value.field == "sql"
            assert await c.fetchval(f"SELECT count(*) FROM {table}") == 0
            # comments and mixed case are fine
            sql = f"/* load */ -- now\n copy {table} from stdin;"
            assert await c.copy_in(sql, b"7\n") == 1
            assert await c.copy_out(f"Copy {table} To StdOut").read_all() == b"7\n"
        finally:
            await c.execute(f"DROP TABLE {table}")


async def test_bad_input_is_refused_before_anything_is_sent(make_manager: MakeManager) -> None:
    m = make_manager()
    await m.connect()
    async with m.connection() as c:
        table = await _table(c, _name("bad"), "a int, b text")
        name = table.strip('"')
        try:
            for kwargs in ({"timeout": 0}, {"timeout": -1}, {"columns": []},
                           {"columns": "a"}, {"schema": ""}):
                with pytest.raises(ConfigError):
                    await c.copy_records_to_table(name, [(1, "x")], **kwargs)
            with pytest.raises(ConfigError, match="table"):
                await c.copy_records_to_table("", [(1, "x")])
            with pytest.raises(ConfigError, match="source"):
                await c.copy_in(f"COPY {table} FROM STDIN", 42)
            with pytest.raises(ConfigError, match="timeout"):
                await c.copy_in(f"COPY {table} FROM STDIN", b"", timeout=0)
            with pytest.raises(ConfigError, match="timeout"):
                c.copy_out(f"COPY {table} TO STDOUT", timeout=-1)
            # a row of the wrong length aborts the COPY: nothing of it is applied
            rows = [(1, "a"), (2, "b"), (3,), (4, "d")]
            with pytest.raises(ConfigError, match="row 2"):
                await c.copy_records_to_table(name, rows)
            with pytest.raises(ConfigError, match="row 0 has 2 values, expected 1"):
                await c.copy_records_to_table(name, [(1, "a")], columns=["a"])
            assert await c.fetchval(f"SELECT count(*) FROM {table}") == 0
            assert await c.copy_records_to_table(name, [(5, "e")]) == 1
        finally:
            await c.execute(f"DROP TABLE {table}")


async def test_missing_table_or_column_is_a_database_error(make_manager: MakeManager) -> None:
    m = make_manager()
    await m.connect()
    async with m.connection() as c:
        table = await _table(c, _name("err"), "a int")
        name = table.strip('"')
        try:
            with pytest.raises(errors.UndefinedTable):
                await c.copy_records_to_table(_name("missing"), [(1,)])
            with pytest.raises(errors.UndefinedColumn):
                await c.copy_records_to_table(name, [(1,)], columns=["nope"])
            with pytest.raises(errors.UndefinedTable):
                await c.copy_in(f'COPY "{_name("missing")}" FROM STDIN', b"1\n")
            with pytest.raises(errors.UndefinedTable):
                await c.copy_out(f'COPY "{_name("missing")}" TO STDOUT').read_all()
            # bad data: the server's error, nothing applied
            with pytest.raises(errors.InvalidTextRepresentation):
                await c.copy_in(f"COPY {table} FROM STDIN", b"1\n2\nthree\n")
            assert await c.fetchval(f"SELECT count(*) FROM {table}") == 0
            assert await c.fetchval("SELECT 1") == 1  # the client is usable
            assert await c.copy_records_to_table(name, [(1,)]) == 1
        finally:
            await c.execute(f"DROP TABLE {table}")


async def test_a_failing_source_aborts_the_copy(make_manager: MakeManager) -> None:
    m = make_manager()
    await m.connect()

    def failing() -> Iterator[bytes]:
        yield b"1\n2\n"
        raise ZeroDivisionError("the source failed")

    async with m.connection() as c:
        table = await _table(c, _name("fail"), "a int")
        try:
            with pytest.raises(ZeroDivisionError, match="the source failed"):
                await c.copy_in(f"COPY {table} FROM STDIN", failing())
            assert await c.fetchval(f"SELECT count(*) FROM {table}") == 0
            assert await c.copy_in(f"COPY {table} FROM STDIN", b"3\n") == 1
        finally:
            await c.execute(f"DROP TABLE {table}")


async def test_copy_inside_a_transaction_rolls_back(make_manager: MakeManager) -> None:
    m = make_manager()
    await m.connect()
    async with m.connection() as c:
        table = await _table(c, _name("tx"), "a int")
        try:
            with pytest.raises(ZeroDivisionError):
                async with c.transaction():
                    assert await c.copy_records_to_table(table.strip('"'), [(1,), (2,)]) == 2
                    assert await c.copy_in(f"COPY {table} FROM STDIN", b"3\n") == 1
                    assert await c.copy_out(f"COPY {table} TO STDOUT").read_all() == b"1\n2\n3\n"
                    raise ZeroDivisionError
            assert await c.fetchval(f"SELECT count(*) FROM {table}") == 0
        finally:
            await c.execute(f"DROP TABLE {table}")


_BIG = "COPY (SELECT i, repeat('x', 100) FROM generate_series(1, 1000000) AS i) TO STDOUT"


async def test_copy_out_abandoned_early_leaves_the_connection_usable(
    make_manager: MakeManager,
) -> None:
    """Closing a copy_out early cancels the COPY on the server: the same connection runs the
    next statement at once, and the pool gets its slot back."""
    m = make_manager(max_size=1, min_size=1)
    await m.connect()
    c = await m.get_client()
    pid = await c.fetchval("SELECT pg_backend_pid()")
    # closed explicitly
    chunks = c.copy_out(_BIG)
    first = await chunks.__anext__()
    assert first.startswith(b"1\t")
    await chunks.aclose()
    await chunks.aclose()  # idempotent
    with pytest.raises(StopAsyncIteration):
        await chunks.__anext__()
    assert await c.fetchval("SELECT pg_backend_pid()") == pid
    # left behind (a break): the next statement ends it first
    async for _ in c.copy_out(_BIG):
        break
    assert await c.fetchval("SELECT 2") == 2
    # a second copy_out ends the first
    first_copy = c.copy_out(_BIG)
    await first_copy.__anext__()
    assert await c.copy_out("COPY (SELECT 1) TO STDOUT").read_all() == b"1\n"
    # left behind, then the client released: the release ends it, and says so
    left = c.copy_out(_BIG)
    async for _ in left:
        break
    await c.release()
    with pytest.raises(pgconnector.ClientReleasedError):
        await left.__anext__()
    assert m.get_pool_stats().in_use == 0
    async with m.connection(timeout=5.0) as again:
        assert await again.fetchval("SELECT pg_backend_pid()") == pid
        state = await again.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY (SELECT i, repeat%'"
            " AND state = 'active'"
        )
        assert state == 0


async def test_a_cancelled_copy_applies_nothing(make_manager: MakeManager) -> None:
    """An async COPY whose task is cancelled while its source waits (copy_in), or while it
    reads (copy_out): cancelled on the server, nothing applied, the client usable after."""
    m = make_manager(max_size=1, min_size=1)
    if m.mode == "sync":
        pytest.skip("cancelling a task is an async matter")
    import asyncio

    await m.connect()
    started = asyncio.Event()

    async def stalled() -> AsyncIterator[bytes]:
        yield b"1\n2\n"
        started.set()
        await asyncio.Event().wait()  # never set: the task is cancelled here
        yield b"3\n"

    async with m.connection() as c:
        table = await _table(c, _name("cancel"), "a int")
        try:
            task = asyncio.ensure_future(c.copy_in(f"COPY {table} FROM STDIN", stalled()))
            await asyncio.wait_for(started.wait(), 10)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await c.fetchval(f"SELECT count(*) FROM {table}") == 0
            assert await c.copy_in(f"COPY {table} FROM STDIN", b"4\n") == 1

            async def read_some() -> None:
                async for _ in c.copy_out(_BIG):
                    started.set()
            started.clear()
            task = asyncio.ensure_future(read_some())
            await asyncio.wait_for(started.wait(), 10)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await c.fetchval(f"SELECT count(*) FROM {table}") == 1
        finally:
            await c.execute(f"DROP TABLE {table}")
    assert m.get_pool_stats().in_use == 0


async def test_disconnect_while_a_copy_out_is_open(make_manager: MakeManager) -> None:
    """disconnect() takes away a client whose copy_out is half read: the pool closes within
    its timeout, and reading on raises ConnectionError (not a hang, not data from nowhere)."""
    m = make_manager(max_size=1, min_size=1)
    await m.connect()
    c = await m.get_client()
    chunks = c.copy_out(_BIG)
    await chunks.__anext__()
    await m.disconnect(timeout=0.5)
    with pytest.raises(pgconnector.ConnectionError):
        async for _ in chunks:
            pass
    await chunks.aclose()
    await c.release()


# -- timeout= -------------------------------------------------------------------------------

#: Generous: the call must end long before the server would (30 s), not fast.
_BOUND = 15.0


async def test_timeout_cancels_the_copy_on_the_server(make_manager: MakeManager) -> None:
    """timeout= covers the whole COPY: when it runs out the COPY is cancelled on the server,
    StatementTimeoutError is raised, nothing is applied and the same session goes on."""
    import time

    m = make_manager(max_size=1, min_size=1)
    await m.connect()
    async with m.connection() as c:
        pid = await c.fetchval("SELECT pg_backend_pid()")
        name = _name("slow")
        await c.execute(
            "CREATE FUNCTION pg_temp.slow(int) RETURNS bool LANGUAGE sql "
            "AS 'SELECT pg_sleep(CASE WHEN $1 = 2 THEN 30 ELSE 0 END) IS NOT NULL'"
        )
        table = await _table(c, name, "a int CHECK (pg_temp.slow(a))")
        try:
            calls = [
                lambda: c.copy_records_to_table(name, [(1,), (2,), (3,)], timeout=0.3),
                lambda: c.copy_in(f"COPY {table} FROM STDIN", b"1\n2\n3\n", timeout=0.3),
                lambda: c.copy_out(
                    "COPY (SELECT i, pg_sleep(CASE WHEN i = 2 THEN 30 ELSE 0 END) "
                    "FROM generate_series(1, 3) AS i) TO STDOUT", timeout=0.3
                ).read_all(),
            ]
            for call in calls:
                started = time.monotonic()
                with pytest.raises(errors.StatementTimeoutError):
                    await call()
                assert time.monotonic() - started < _BOUND
                assert await c.fetchval("SELECT pg_backend_pid()") == pid
                assert await c.fetchval(f"SELECT count(*) FROM {table}") == 0
            # a timeout that does not expire changes nothing
            assert await c.copy_in(f"COPY {table} FROM STDIN", b"1\n", timeout=30) == 1
            assert await c.copy_out(f"COPY {table} TO STDOUT", timeout=30).read_all() == b"1\n"
            assert await c.copy_records_to_table(name, [(3,)], timeout=30) == 1
        finally:
            await c.execute(f"DROP TABLE {table}")


async def test_timeout_ends_a_stalled_async_source(make_manager: MakeManager) -> None:
    """An async source that never yields its next chunk: the COPY's timeout still ends the
    call (StatementTimeoutError), nothing applied, the client usable."""
    import asyncio

    m = make_manager(max_size=1, min_size=1)
    if m.mode == "sync":
        pytest.skip("async sources are for the async manager")
    await m.connect()

    async def stalled() -> AsyncIterator[bytes]:
        yield b"1\n"
        await asyncio.Event().wait()
        yield b"2\n"

    async with m.connection() as c:
        table = await _table(c, _name("stall"), "a int")
        try:
            with pytest.raises(errors.StatementTimeoutError):
                await asyncio.wait_for(
                    c.copy_in(f"COPY {table} FROM STDIN", stalled(), timeout=0.3), 30
                )
            assert await c.fetchval(f"SELECT count(*) FROM {table}") == 0
            assert await c.copy_in(f"COPY {table} FROM STDIN", b"5\n") == 1
        finally:
            await c.execute(f"DROP TABLE {table}")


async def test_copy_beside_an_open_cursor(make_manager: MakeManager) -> None:
    """COPY on a client with a cursor open: the COPY joins the cursor's transaction (applied
    when the cursor commits it), and the cursor's fetches go on between COPYs."""
    m = make_manager()
    await m.connect()
    async with m.connection() as c:
        name = _name("beside")
        table = await _table(c, name, "a int")
        try:
            async with c.cursor("SELECT generate_series(1, 5)", prefetch=1) as rows:
                assert (await rows.__anext__())[0] == 1
                assert await c.copy_records_to_table(name, [(1,), (2,)]) == 2
                assert (await rows.__anext__())[0] == 2
                assert await c.copy_in(f"COPY {table} FROM STDIN", b"3\n") == 1
                assert await c.copy_out(f"COPY {table} TO STDOUT").read_all() == b"1\n2\n3\n"
                assert [row[0] async for row in rows] == [3, 4, 5]
            assert await c.copy_out(f"COPY {table} TO STDOUT").read_all() == b"1\n2\n3\n"
        finally:
            await c.execute(f"DROP TABLE {table}")


async def test_copy_out_left_early_in_a_transaction_aborts_it(make_manager: MakeManager) -> None:
    """Leaving a copy_out early cancels the COPY on the server: inside transaction() that is
    an error like any other, so the transaction is aborted (and rolled back at its end)."""
    m = make_manager()
    await m.connect()
    async with m.connection() as c:
        table = await _table(c, _name("abort"), "a int")
        try:
            with pytest.raises(errors.InFailedSqlTransaction):
                async with c.transaction():
                    await c.copy_in(f"COPY {table} FROM STDIN", b"1\n")
                    chunks = c.copy_out(_BIG)
                    await chunks.__anext__()
                    await chunks.aclose()
                    await c.execute(f"INSERT INTO {table} VALUES (2)")
            assert await c.fetchval(f"SELECT count(*) FROM {table}") == 0
        finally:
            await c.execute(f"DROP TABLE {table}")
