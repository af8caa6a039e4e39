"""client.executemany(): one statement, many argument rows, pipelined and atomic, the same on
every backend and manager."""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
import struct
import threading
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

import pgconnector
from pgconnector import ConfigError, PoolConfig, errors
from tests.conftest import MakeManager, ServerInfo
from tests.tls import dsn_through

pytestmark = pytest.mark.integration

COLUMNS = (
    "id int PRIMARY KEY, big bigint, t text, n numeric, ts timestamptz, b bytea, j jsonb, "
    "u uuid, a text[]"
)
INSERT = "INSERT INTO {table} VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
TEXTS = ("plain", "tab\there", "new\nline", "it's \"quoted\" \\ back", "ünïcödé ✓ 日本 🐘", "")
BASE = dt.datetime(2024, 2, 29, 23, 59, 58, 123456, tzinfo=dt.timezone.utc)


def typed_row(i: int) -> tuple[Any, ...]:
    """Row ``i`` of the round-trip table: every value kind, NULLs in every column but id."""
    if i % 97 == 5:
        return (i, None, None, None, None, None, None, None, None)
    return (
        i,
        i * 2**33 if i % 3 else i,  # int2 to int8 in one column
        f"{TEXTS[i % len(TEXTS)]} #{i}",
        Decimal(i) / 8 - Decimal("100.000"),
        BASE + dt.timedelta(hours=i, microseconds=i),
        bytes([i % 256, 0, 255, 10]) * (i % 4),
        {"i": i, "s": TEXTS[i % len(TEXTS)], "list": [1, None, True], "nested": {"x": 1.5}},
        uuid.UUID(int=i * 7919 + 1),
        [f"e{i}", "with,comma", 'q"uote', "ü", None] if i % 2 else [],
    )


@pytest.fixture
async def m(make_manager: MakeManager) -> Any:
    manager = make_manager(min_size=1, max_size=2)
    await manager.connect()
    yield manager
    await manager.disconnect()


@pytest.fixture
async def table(m: Any) -> Any:
    name = f"em_{uuid.uuid4().hex[:12]}"
    async with m.connection() as c:
        await c.execute(f"CREATE TABLE {name} ({COLUMNS})")
    yield name
    async with m.connection() as c:
        await c.execute(f"DROP TABLE {name}")


async def count(c: Any, table: str) -> int:
    return int(await c.fetchval(f"SELECT count(*) FROM {table}"))


def small_rows(n: int, start: int = 0) -> list[tuple[Any, ...]]:
    return [(i, i, f"r{i}", None, None, None, None, None, None) for i in range(start, start + n)]


async def test_2000_rows_round_trip_exactly(m: Any, table: str) -> None:
    rows = [typed_row(i) for i in range(2000)]
    async with m.connection() as c:
        assert await c.executemany(INSERT.format(table=table), rows) is None
        back = await c.fetch(f"SELECT * FROM {table} ORDER BY id")
    assert [tuple(row) for row in back] == rows


async def test_generator_rows_and_lists(m: Any, table: str) -> None:
    async with m.connection() as c:
        await c.executemany(INSERT.format(table=table), (list(row) for row in small_rows(300)))
        assert await count(c, table) == 300
        assert await c.fetchval(f"SELECT t FROM {table} WHERE id = 299") == "r299"


async def test_no_rows_sends_nothing(m: Any) -> None:
    # A statement that would fail if it were sent, so that no error means nothing was sent.
    never = "INSERT INTO no_such_table_for_executemany VALUES ($1)"
    async with m.connection() as c:
        assert await c.executemany(never, []) is None
        assert await c.executemany(never, iter(())) is None
        async with c.transaction():
            assert await c.executemany(never, ()) is None
            assert await c.fetchval("SELECT 1") == 1  # the transaction was not aborted


async def test_unique_violation_applies_nothing_outside_a_transaction(
    m: Any, table: str
) -> None:
    rows = small_rows(2000)
    rows[1500] = (7, 7, "duplicate of row 7", None, None, None, None, None, None)
    async with m.connection() as c:
        await c.execute(f"INSERT INTO {table} (id) VALUES (-1)")
        with pytest.raises(pgconnector.UniqueViolation) as info:
            await c.executemany(INSERT.format(table=table), rows)
        assert type(info.value) is errors.UniqueViolation
        assert info.value.detail == "Key (id)=(7) already exists."
        assert await count(c, table) == 1  # only the row from before the call
        # The client is usable, and the same call without the bad row goes through.
        rows[1500] = (1500, 1500, "r1500", None, None, None, None, None, None)
        await c.executemany(INSERT.format(table=table), rows)
        assert await count(c, table) == 2001


async def test_unique_violation_inside_a_transaction_rolls_back_only_the_call(
    m: Any, table: str
) -> None:
    rows = small_rows(2000, start=10)
    rows[1500] = (10, 10, "duplicate of the first row", None, None, None, None, None, None)
    async with m.connection() as c:
        async with c.transaction():
            await c.execute(f"INSERT INTO {table} (id, t) VALUES (1, 'before')")
            with pytest.raises(pgconnector.UniqueViolation):
                await c.executemany(INSERT.format(table=table), rows)
            # The enclosing transaction goes on: the failure was rolled back to a savepoint.
            await c.execute(f"INSERT INTO {table} (id, t) VALUES (2, 'after')")
            await c.executemany(INSERT.format(table=table), small_rows(5, start=100))
        back = await c.fetch(f"SELECT id FROM {table} ORDER BY id")
        assert [row[0] for row in back] == [1, 2, 100, 101, 102, 103, 104]
        # And a failed call inside a block that itself fails leaves nothing at all.
        with pytest.raises(pgconnector.UniqueViolation):
            async with c.transaction():
                await c.execute(f"INSERT INTO {table} (id) VALUES (3)")
                await c.executemany(INSERT.format(table=table), [rows[0], rows[0]])
        assert await count(c, table) == 7


async def test_inside_the_transaction_a_cursor_opened(m: Any, table: str) -> None:
    """A cursor outside transaction() opens a transaction that statements run meanwhile join:
    executemany joins it too, under a savepoint of its own, so that a failing call leaves
    the cursor and the transaction going; what the cursor's transaction holds is committed
    when the cursor ends."""
    async with m.connection() as c:
        async with c.cursor("SELECT g FROM generate_series(1, 10) AS g", prefetch=2) as rows:
            assert (await rows.__anext__())["g"] == 1
            with pytest.raises(pgconnector.UniqueViolation):
                await c.executemany(INSERT.format(table=table), small_rows(3) * 2)
            await c.executemany(INSERT.format(table=table), small_rows(3))
            assert [row["g"] async for row in rows] == list(range(2, 11))
        assert await count(c, table) == 3


@pytest.mark.parametrize("inside", [False, True], ids=["autocommit", "transaction"])
async def test_wrong_length_row_is_refused_before_anything_is_sent(
    m: Any, table: str, inside: bool
) -> None:
    rows = small_rows(2000)
    rows[1234] = (1234, 1234, "two short")
    missing = "INSERT INTO no_such_table_for_executemany VALUES ($1, $2, $3, $4, $5, $6, $7)"
    async with m.connection() as c:
        async with contextlib.AsyncExitStack() as stack:
            if inside:
                await stack.enter_async_context(c.transaction())
            with pytest.raises(ConfigError, match=r"rows\[1234\]: has 3 values, but rows\[0\] "
                               r"has 9") as info:
                await c.executemany(INSERT.format(table=table), rows)
            assert info.value.field == "rows"
            # Not sent at all: a statement the server would refuse fails the same way.
            with pytest.raises(ConfigError, match=r"rows\[1234\]"):
                await c.executemany(missing, iter(rows))
            assert await count(c, table) == 0  # and, in a transaction, it is not aborted
        assert await count(c, table) == 0


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([(1,), 2], r"rows\[1\]: must be a sequence of arguments \(a tuple or a list\), not int"),
        ([(1,), "ab"], r"rows\[1\]: must be a sequence .*, not str"),
        ([{"id": 1}], r"rows\[0\]: must be a sequence .*, not dict"),
        ("abc", r"rows: must be an iterable of argument sequences, not str"),
        (42, r"rows: must be an iterable of argument sequences, not int"),
    ],
    ids=["int-row", "str-row", "dict-row", "str-rows", "int-rows"],
)
async def test_rows_that_are_not_rows_are_refused(m: Any, rows: Any, message: str) -> None:
    async with m.connection() as c:
        with pytest.raises(ConfigError, match=message):
            await c.executemany("INSERT INTO no_such_table_for_executemany VALUES ($1)", rows)
        assert await c.fetchval("SELECT 1") == 1


@pytest.mark.parametrize("timeout", [0, -1.0, float("nan"), "1", True])
async def test_bad_timeout_is_refused_and_runs_nothing(
    m: Any, table: str, timeout: Any
) -> None:
    async with m.connection() as c:
        with pytest.raises(ConfigError, match="timeout") as info:
            await c.executemany(INSERT.format(table=table), small_rows(3), timeout=timeout)
        assert info.value.field == "timeout"
        assert await count(c, table) == 0


async def test_a_failing_row_raises_its_own_error(m: Any, table: str) -> None:
    rows = [(i, 1 if i != 1700 else 0) for i in range(2000)]
    async with m.connection() as c:
        with pytest.raises(errors.DivisionByZero):
            await c.executemany(f"INSERT INTO {table} (id, big) VALUES ($1, 100 / $2)", rows)
        assert await count(c, table) == 0
        assert await c.fetchval("SELECT 1") == 1


async def test_a_value_the_driver_cannot_send_applies_nothing(m: Any, table: str) -> None:
    """A value of the wrong type: the server refuses it (psycopg, pg8000: its SQLSTATE's
    class) or the driver does, while encoding the rows (asyncpg: its own DataError, as for
    execute); either way nothing of the call is applied and the client goes on."""
    rows = small_rows(2000)
    rows[1600] = (1600, "not a number", "r", None, None, None, None, None, None)
    async with m.connection() as c:
        with pytest.raises(Exception) as info:  # noqa: PT011 - the class is the driver's
            await c.executemany(INSERT.format(table=table), rows)
        if m.backend_name != "asyncpg":
            assert type(info.value) is errors.InvalidTextRepresentation
        assert not isinstance(info.value, pgconnector.ConnectionError)
        assert await count(c, table) == 0
        await c.executemany(INSERT.format(table=table), small_rows(10))
        assert await count(c, table) == 10


async def test_a_released_client_refuses(m: Any, table: str) -> None:
    c = await m.get_client()
    await c.release()
    with pytest.raises(pgconnector.ClientReleasedError):
        await c.executemany(INSERT.format(table=table), small_rows(1))


# -- pipelined: what goes over the wire ----------------------------------------------------


class Recorder:
    """A TCP relay in front of the test server that keeps every byte the client sends, so
    that a test can read back the protocol messages of one call. One thread per direction:
    the relay itself never makes either side wait for the other."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.to_server = bytearray()
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def mark(self) -> int:
        with self._lock:
            return len(self.to_server)

    def since(self, mark: int) -> bytes:
        with self._lock:
            return bytes(self.to_server[mark:])

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection(self.upstream, timeout=10.0)
            upstream.settimeout(None)
            self._sockets += [client, upstream]
            for source, sink, record in ((client, upstream, True), (upstream, client, False)):
                thread = threading.Thread(
                    target=self._pump, args=(source, sink, record), daemon=True
                )
                self._threads.append(thread)
                thread.start()

    def _pump(self, source: socket.socket, sink: socket.socket, record: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if record:
                    with self._lock:
                        self.to_server += data
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._listener.close()
        self._accepting.join(timeout=5.0)
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in self._threads:
            thread.join(timeout=5.0)
        assert not any(t.is_alive() for t in self._threads), "relay threads left running"


def message_types(stream: bytes) -> Iterator[str]:
    """The types of the frontend messages in ``stream`` (which starts at a message)."""
    at = 0
    while at < len(stream):
        kind = stream[at : at + 1].decode()
        (length,) = struct.unpack_from("!i", stream, at + 1)
        yield kind
        at += 1 + length


@pytest.fixture
def recorder(pg_server: ServerInfo) -> Iterator[tuple[Recorder, str]]:
    params = PoolConfig.from_dsn(pg_server.dsn).connect_params()
    assert params.host is not None and params.port is not None
    relay = Recorder(params.host, params.port)
    try:
        yield relay, dsn_through(pg_server, relay.port)
    finally:
        relay.close()


async def test_pipelined_no_round_trip_per_row(
    make_manager: MakeManager, recorder: tuple[Recorder, str]
) -> None:
    """The client cannot wait for the server between two rows without asking it to answer:
    the server holds its replies to extended-protocol messages until a Sync or Flush (or a
    simple Query) comes. So the number of Sync/Flush/Query messages the call sends bounds
    its round trips from above; a round trip per row would take at least one per row."""
    relay, dsn = recorder
    m = make_manager(dsn=dsn, min_size=1, max_size=1)
    await m.connect()
    table = f"em_{uuid.uuid4().hex[:12]}"
    async with m.connection() as c:
        await c.execute(f"CREATE TABLE {table} ({COLUMNS})")
        try:
            start = relay.mark()
            await c.executemany(INSERT.format(table=table), small_rows(2000))
            sent = list(message_types(relay.since(start)))
            assert await count(c, table) == 2000
        finally:
            await c.execute(f"DROP TABLE {table}")
    assert sent.count("B") == 2000  # one Bind per row
    assert sent.count("E") == 2000  # and one Execute
    waits = sent.count("S") + sent.count("H") + sent.count("Q")
    # BEGIN and COMMIT, then a few for the rows: pg8000 a Sync per batch (at most 1,000 rows
    # or 64 KiB: 3 here); psycopg a Flush and one Sync; asyncpg its statement's preparation
    # and one Sync. A little slack for drivers' versions; none per row.
    assert waits <= 2 + 4, f"{waits} waits for the server: {sorted(set(sent))}"


# -- timeout= ------------------------------------------------------------------------------

#: 2,000 rows, the 1,501st of which sleeps far longer than the timeout.
SLEEPY = "INSERT INTO {table} (id) SELECT $1::int FROM pg_sleep($2)"
SLEEPY_ROWS = [(i, 30.0 if i == 1500 else 0.0) for i in range(2000)]


async def test_timeout_covers_the_call_and_applies_nothing(m: Any, table: str) -> None:
    async with m.connection() as c:
        pid = await c.fetchval("SELECT pg_backend_pid()")
        with pytest.raises(pgconnector.StatementTimeoutError) as info:
            await c.executemany(SLEEPY.format(table=table), SLEEPY_ROWS, timeout=0.5)
        assert isinstance(info.value, errors.QueryCanceled)
        assert not isinstance(info.value, pgconnector.ConnectionError)
        # Cancelled on the server: the same session goes on, nothing of the call applied.
        assert await c.fetchval("SELECT pg_backend_pid()") == pid
        assert await count(c, table) == 0
        # A timeout that does not expire changes nothing.
        await c.executemany(INSERT.format(table=table), small_rows(2000), timeout=60)
        assert await count(c, table) == 2000


async def test_timeout_inside_a_transaction_rolls_back_only_the_call(
    m: Any, table: str
) -> None:
    async with m.connection() as c:
        async with c.transaction():
            await c.execute(f"INSERT INTO {table} (id, t) VALUES (-1, 'before')")
            with pytest.raises(pgconnector.StatementTimeoutError):
                await c.executemany(SLEEPY.format(table=table), SLEEPY_ROWS, timeout=0.5)
            await c.execute(f"INSERT INTO {table} (id, t) VALUES (-2, 'after')")
        back = await c.fetch(f"SELECT id, t FROM {table} ORDER BY id")
        assert [tuple(row) for row in back] == [(-2, "after"), (-1, "before")]
