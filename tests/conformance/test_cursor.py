"""``client.cursor()``: rows streamed from a server-side cursor, on every backend x manager.

``pg_cursors`` lists the cursors of the session that queries it, so it is read through the
cursor's own client; whether that session is inside a transaction is read from another
session (``pg_stat_activity.state``), which needs nothing of the client under test.
"""

from __future__ import annotations

import asyncio
import gc
import uuid
from typing import Any

import pytest

import pgconnector
from pgconnector import ConfigError, errors
from tests.conftest import MakeManager
from tests.facade import ClientFacade, ManagerFacade

pytestmark = pytest.mark.integration

SERIES = "SELECT g AS n, g * 3 AS triple FROM generate_series(1, $1) AS g"


@pytest.fixture
async def m(make_manager: MakeManager) -> ManagerFacade:
    manager = make_manager(min_size=1, max_size=3)
    await manager.connect()
    return manager


async def _open_cursors(c: ClientFacade) -> int:
    # Without the unnamed portal of this very query (asyncpg's extended protocol lists it).
    return int(await c.fetchval("SELECT count(*) FROM pg_cursors WHERE name <> ''"))


async def _state(other: ClientFacade, pid: int) -> str:
    """The session's state as another session sees it: 'idle', 'idle in transaction', …"""
    return str(await other.fetchval("SELECT state FROM pg_stat_activity WHERE pid = $1", pid))


async def _until_idle(other: ClientFacade, pid: int, attempts: int = 200) -> str:
    """For async finalization: give the event loop turns (each query through ``other`` waits
    on its socket, so the loop runs the scheduled close meanwhile) until the session is out of
    its transaction, a bounded number of times."""
    state = ""
    for _ in range(attempts):
        state = await _state(other, pid)
        if state == "idle":
            break
        await asyncio.sleep(0)
    return state


async def test_streams_100000_rows_in_order(m: ManagerFacade) -> None:
    total = 100_000
    async with m.connection() as c:
        count = 0
        async for row in c.cursor(SERIES, total, prefetch=1000):
            count += 1
            assert row[0] == row["n"] == count
            assert row["triple"] == 3 * count
            assert list(row.keys()) == ["n", "triple"]
        assert count == total
        assert await _open_cursors(c) == 0


async def test_rows_are_row_objects_like_fetch(m: ManagerFacade) -> None:
    sql = "SELECT $1::text || g AS label, g::numeric / 4 AS q FROM generate_series(1, $2) AS g"
    async with m.connection() as c:
        streamed = [row async for row in c.cursor(sql, "x", 7, prefetch=2)]
        assert streamed == await c.fetch(sql, "x", 7)
        assert all(isinstance(row, pgconnector.Row) for row in streamed)
        assert [row["label"] for row in streamed] == [f"x{i}" for i in range(1, 8)]


@pytest.mark.parametrize("rows", [0, 1, 5, 6, 12])
async def test_edges_of_prefetch(m: ManagerFacade, rows: int) -> None:
    """No rows, fewer than prefetch, exactly one or two chunks, one more than a chunk."""
    async with m.connection() as c:
        got = [row["n"] async for row in c.cursor(SERIES, rows, prefetch=6)]
        assert got == list(range(1, rows + 1))
        assert await _open_cursors(c) == 0


async def test_memory_is_bounded_by_prefetch(m: ManagerFacade) -> None:
    async with m.connection() as c:
        cursor = c.cursor(SERIES, 10_000, prefetch=64)
        held = []
        async for row in cursor:
            held.append(cursor.buffered)
            assert row["n"] == len(held)
        assert len(held) == 10_000
        assert max(held) == 64  # full chunks were held, never more
        assert cursor.buffered == 0  # and nothing once it ended


async def test_outside_a_transaction_it_opens_one_and_commits_it(m: ManagerFacade) -> None:
    table = f"cur_{uuid.uuid4().hex[:10]}"
    async with m.connection() as c, m.connection() as other:
        await c.execute(f"CREATE TABLE {table} (n int)")
        try:
            pid = await c.fetchval("SELECT pg_backend_pid()")
            assert await _state(other, pid) == "idle"
            async for row in c.cursor(SERIES, 5, prefetch=2):
                assert await _state(other, pid) == "idle in transaction"
                # Another statement meanwhile works, and joins the cursor's transaction.
                await c.execute(f"INSERT INTO {table} VALUES ($1)", row["n"])
                assert await c.fetchval("SELECT $1::int * 2", row["n"]) == 2 * row["n"]
                if row["n"] == 3:
                    with pytest.raises(errors.ActiveSqlTransaction, match="cursor"):
                        async with c.transaction():
                            pass
            assert await _state(other, pid) == "idle"
            assert await _open_cursors(c) == 0
            # Committed: another session sees the rows.
            assert await other.fetchval(f"SELECT sum(n) FROM {table}") == 15
        finally:
            await c.execute(f"DROP TABLE {table}")


async def test_inside_a_transaction_it_uses_it_and_leaves_it_open(m: ManagerFacade) -> None:
    table = f"cur_{uuid.uuid4().hex[:10]}"
    async with m.connection() as c, m.connection() as other:
        await c.execute(f"CREATE TABLE {table} (n int)")
        try:
            pid = await c.fetchval("SELECT pg_backend_pid()")
            async with c.transaction():
                await c.execute(f"INSERT INTO {table} SELECT generate_series(1, 10)")
                # The cursor sees the transaction's own uncommitted rows.
                got = [r["n"] async for r in c.cursor(f"SELECT n FROM {table} ORDER BY n",
                                                       prefetch=3)]
                assert got == list(range(1, 11))
                assert await _open_cursors(c) == 0  # closed at its end
                assert await _state(other, pid) == "idle in transaction"
                async with c.transaction():  # a savepoint: the transaction is the caller's
                    assert [r["n"] async for r in c.cursor(SERIES, 3)] == [1, 2, 3]
                assert await other.fetchval(f"SELECT count(*) FROM {table}") == 0
            assert await other.fetchval(f"SELECT count(*) FROM {table}") == 10
        finally:
            await c.execute(f"DROP TABLE {table}")


@pytest.mark.parametrize("in_transaction", [False, True], ids=["autocommit", "transaction"])
@pytest.mark.parametrize("how", ["break", "exception", "close"])
async def test_leaving_early_closes_the_server_cursor_at_once(
    m: ManagerFacade, how: str, in_transaction: bool
) -> None:
    async with m.connection() as c, m.connection() as other:
        pid = await c.fetchval("SELECT pg_backend_pid()")

        async def leave_early() -> None:
            seen = 0
            async with c.cursor(SERIES, 1000, prefetch=10) as rows:
                if how == "close":
                    async for _ in rows:
                        seen += 1
                        if seen == 15:
                            await rows.aclose()
                            assert rows.closed
                            assert await _open_cursors(c) == 0
                    assert seen == 15  # iterating a closed cursor ends it
                    return
                async for _ in rows:
                    seen += 1
                    if seen == 15:
                        if how == "break":
                            break
                        raise LookupError("stop here")
            assert rows.closed

        if in_transaction:
            async with c.transaction():
                with pytest.raises(LookupError) if how == "exception" else _nothing():
                    await leave_early()
                assert await _open_cursors(c) == 0
                assert await _state(other, pid) == "idle in transaction"
        else:
            with pytest.raises(LookupError) if how == "exception" else _nothing():
                await leave_early()
            assert await _state(other, pid) == "idle"  # checked first: no statement on c
            assert await _open_cursors(c) == 0


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: Any) -> None:
        return None


async def test_bare_for_break_closes_when_the_cursor_is_finalized(m: ManagerFacade) -> None:
    async with m.connection() as c, m.connection() as other:
        pid = await c.fetchval("SELECT pg_backend_pid()")
        async for row in c.cursor(SERIES, 1000, prefetch=10):
            if row["n"] == 15:
                break
        if m.mode == "sync":
            # CPython finalizes the dropped cursor at once, and it closes there and then.
            assert await _state(other, pid) == "idle"
        else:
            # The loop runs the close on its next turns.
            assert await _until_idle(other, pid) == "idle"
        assert await _open_cursors(c) == 0
        # Inside a transaction: the CLOSE runs, the transaction stays.
        async with c.transaction():
            async for row in c.cursor(SERIES, 1000, prefetch=10):
                if row["n"] == 15:
                    break
            if m.mode == "async":
                for _ in range(100):
                    await asyncio.sleep(0)
            assert await _open_cursors(c) == 0
            assert await c.fetchval("SELECT 41 + 1") == 42


async def test_a_dropped_cursor_never_overlaps_the_next_statement(m: ManagerFacade) -> None:
    """The close of a dropped cursor and the caller's next statements share the connection
    one at a time: many in a row, each immediately followed by statements."""
    async with m.connection() as c:
        for i in range(30):
            async for row in c.cursor(SERIES, 100, prefetch=5):
                if row["n"] == 7:
                    break
            assert await c.fetchval("SELECT $1::int", i) == i
            assert [r["n"] for r in await c.fetch(SERIES, 3)] == [1, 2, 3]
        gc.collect()
        assert await _open_cursors(c) == 0


async def test_release_with_a_cursor_open_returns_the_connection_clean(
    make_manager: MakeManager,
) -> None:
    m = make_manager(min_size=1, max_size=1)  # the next borrower gets the same connection
    await m.connect()
    watcher = make_manager(min_size=1, max_size=1)
    await watcher.connect()
    table = f"cur_{uuid.uuid4().hex[:10]}"
    async with m.connection() as c:
        await c.execute(f"CREATE TABLE {table} (n int)")
    try:
        for in_transaction in (False, True):
            c = await m.get_client()
            pid = await c.fetchval("SELECT pg_backend_pid()")
            block = c.transaction()  # kept referenced: a block left open at release
            if in_transaction:
                await block.__aenter__()
            cursor = c.cursor(SERIES, 1000, prefetch=10)
            async for row in cursor:
                await c.execute(f"INSERT INTO {table} VALUES ($1)", row["n"])
                if row["n"] == 3:
                    break
            await c.release()
            async with watcher.connection() as other:
                assert await _state(other, pid) == "idle"
            async with m.connection() as after:
                assert await after.fetchval("SELECT pg_backend_pid()") == pid
                assert await _open_cursors(after) == 0
                # Outside a transaction the rows inserted meanwhile were committed (as the
                # cursor's end would have); inside one, release rolled back as always.
                expected = 0 if in_transaction else 3
                assert await after.fetchval(f"SELECT count(*) FROM {table}") == expected
                await after.execute(f"DELETE FROM {table}")
            with pytest.raises(pgconnector.ClientReleasedError):
                await cursor.__anext__()
            del cursor
            if in_transaction:  # the client was released under the open block
                with pytest.raises(pgconnector.ClientReleasedError):
                    await block.__aexit__(None, None, None)
    finally:
        async with m.connection() as c:
            await c.execute(f"DROP TABLE {table}")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"prefetch": 0}, "prefetch"),
        ({"prefetch": -5}, "prefetch"),
        ({"prefetch": True}, "prefetch"),
        ({"prefetch": 2.5}, "prefetch"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": -1.0}, "timeout"),
        ({"timeout": "1"}, "timeout"),
    ],
)
async def test_bad_arguments_raise_config_error_and_send_nothing(
    m: ManagerFacade, kwargs: dict[str, Any], field: str
) -> None:
    async with m.connection() as c, m.connection() as other:
        pid = await c.fetchval("SELECT pg_backend_pid()")
        with pytest.raises(ConfigError) as info:
            c.cursor(SERIES, 10, **kwargs)
        assert info.value.field == field
        assert await _state(other, pid) == "idle"
        assert await _open_cursors(c) == 0


@pytest.mark.parametrize("in_transaction", [False, True], ids=["autocommit", "transaction"])
async def test_query_errors_raise_their_class(m: ManagerFacade, in_transaction: bool) -> None:
    async with m.connection() as c, m.connection() as other:
        pid = await c.fetchval("SELECT pg_backend_pid()")
        if in_transaction:
            async with c.transaction():
                with pytest.raises(errors.UndefinedTable):
                    async for _ in c.cursor("SELECT * FROM no_such_table_here"):
                        pass
                with pytest.raises(errors.InFailedSqlTransaction):
                    await c.execute("SELECT 1")
            with pytest.raises(errors.InvalidCursorName):
                await c.execute("CLOSE pgc_cursor_1")  # never left behind
            return
        with pytest.raises(errors.SyntaxError):
            async for _ in c.cursor("SELEC 1"):
                pass
        with pytest.raises(errors.UndefinedTable):
            async with c.cursor("SELECT * FROM no_such_table_here"):
                pass
        assert await _state(other, pid) == "idle"
        # An error on row 501, in the sixth fetch: the rows before it were delivered.
        seen = []
        with pytest.raises(errors.DivisionByZero):
            sql = "SELECT 1 / (501 - g) AS x, g FROM generate_series(1, 1000) AS g"
            async for row in c.cursor(sql, prefetch=100):
                seen.append(row["g"])
        assert seen == list(range(1, 501))
        assert await _state(other, pid) == "idle"
        assert await _open_cursors(c) == 0
        assert await c.fetchval("SELECT 1") == 1


async def test_a_cursor_whose_transaction_ended_says_so(m: ManagerFacade) -> None:
    async with m.connection() as c:
        # The transaction() block that declared it ended before it was consumed.
        async with c.transaction():
            cursor = c.cursor(SERIES, 100, prefetch=10)
            async with cursor:
                pass
            cursor = c.cursor(SERIES, 100, prefetch=10)
            assert (await cursor.__anext__())["n"] == 1
        with pytest.raises(errors.InvalidCursorName, match="transaction"):
            async for _ in cursor:
                pass
        # Ended by hand, behind pgconnector's back.
        async with c.transaction():
            cursor = c.cursor(SERIES, 100, prefetch=10)
            assert (await cursor.__anext__())["n"] == 1
            await c.execute("COMMIT")
            with pytest.raises(errors.InvalidCursorName, match="transaction") as info:
                async for _ in cursor:
                    pass
            assert isinstance(info.value.cause, Exception)
            await c.execute("BEGIN")  # for the block's own COMMIT
        # A savepoint rolled back takes the cursors declared inside it; closing one is a no-op
        # that leaves the outer transaction healthy.
        async with c.transaction():
            with pytest.raises(LookupError):
                async with c.transaction():
                    cursor = c.cursor(SERIES, 100, prefetch=1)
                    await cursor.__anext__()
                    raise LookupError
            with pytest.raises(errors.InvalidCursorName):
                await cursor.__anext__()
            await cursor.aclose()
            assert await c.fetchval("SELECT 2") == 2
        assert await _open_cursors(c) == 0


async def test_nested_cursors_outside_a_transaction(m: ManagerFacade) -> None:
    async with m.connection() as c, m.connection() as other:
        pid = await c.fetchval("SELECT pg_backend_pid()")
        pairs = []
        async for outer in c.cursor(SERIES, 3, prefetch=1):
            async for inner in c.cursor(SERIES, 2, prefetch=1):
                pairs.append((outer["n"], inner["n"]))
            assert await _state(other, pid) == "idle in transaction"  # the outer's, still
        assert pairs == [(o, i) for o in (1, 2, 3) for i in (1, 2)]
        assert await _state(other, pid) == "idle"
        assert await _open_cursors(c) == 0


async def test_cursor_on_a_released_client_raises(m: ManagerFacade) -> None:
    c = await m.get_client()
    await c.release()
    with pytest.raises(pgconnector.ClientReleasedError):
        c.cursor("SELECT 1")


@pytest.mark.parametrize("in_transaction", [False, True], ids=["autocommit", "transaction"])
async def test_timeout_cancels_a_fetch_on_the_server(
    m: ManagerFacade, in_transaction: bool
) -> None:
    """The fetch that stalls (on row 150, in the second chunk) is cancelled on the server and
    raises StatementTimeoutError after the first chunk's rows; the client goes on."""
    sql = ("SELECT g AS n, CASE WHEN g = 150 THEN pg_sleep(30) END AS pause "
           "FROM generate_series(1, 300) AS g")
    async with m.connection() as c, m.connection() as other:
        pid = await c.fetchval("SELECT pg_backend_pid()")
        seen: list[int] = []

        async def stream() -> None:
            with pytest.raises(errors.StatementTimeoutError):
                async for row in c.cursor(sql, prefetch=100, timeout=0.5):
                    seen.append(row["n"])

        if in_transaction:
            async with c.transaction():
                await stream()
                with pytest.raises(errors.InFailedSqlTransaction):
                    await c.execute("SELECT 1")
        else:
            await stream()
        assert seen == list(range(1, 101))
        assert await _state(other, pid) == "idle"
        assert await _open_cursors(c) == 0
        assert await c.fetchval("SELECT 7") == 7


async def test_timeout_covers_each_fetch_not_the_whole_stream(m: ManagerFacade) -> None:
    """Five fetches of 0.3 s each, under a timeout of 1 s: each fits, the 1.5 s sum would
    not."""
    sql = ("SELECT g AS n, CASE WHEN g % 100 = 50 THEN pg_sleep(0.3) END AS pause "
           "FROM generate_series(1, 500) AS g")
    async with m.connection() as c:
        got = [row["n"] async for row in c.cursor(sql, prefetch=100, timeout=1.0)]
        assert got == list(range(1, 501))
