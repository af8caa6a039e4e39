"""The subjects of the benchmark: one small adapter per pool (or plain connection) measured.

Every adapter has the same face, sync or async:

* ``open(min_size, max_size)`` builds and opens the pool, returns once ``min_size``
  connections are open, and reports how long that took (:class:`OpenTimes`);
* ``cycle()`` borrows a connection and gives it back, with no query;
* ``select1()`` borrows, runs ``SELECT 1``, fetches the row, gives it back;
* ``health()`` is pgconnector's ``health_check()``, or ``select1()`` for a raw pool;
* ``held_cycle(waits)`` is ``select1()`` that appends how long the borrow waited to ``waits``;
* ``close()``.

Borrowing uses the cheapest public path on both sides: pgconnector's ``get_client()`` +
``client.release()``, psycopg_pool's ``getconn()``/``putconn()``, asyncpg's ``acquire()`` /
``release()``, SQLAlchemy's ``pool.connect()`` / ``.close()``. The one exception is
psycopg_pool in its default (non-autocommit) mode, which needs its ``connection()`` context
manager to commit the transaction psycopg opens (``putconn()`` would warn and roll back).

Every subject runs one round trip per ``SELECT 1`` (autocommit, no reset on a clean release)
unless it is labelled "default", which is the peer as it comes out of the box. The run counts
the statements each subject sends (see ``audit_round_trips`` in ``run.py``).
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pgconnector
from pgconnector import AsyncConnectionManager, ConnectionManager, PoolConfig
from pgconnector._embedded import EmbeddedServer

#: How long opening a pool (up to 200 connections on one shared CPU) may take.
OPEN_TIMEOUT_S = 120.0
SQL = "SELECT 1"

# Measures; a subject lists those that apply to it.
CYCLE, SELECT1, HEALTH, CONTENTION, COLD, SCALING = (
    "cycle", "select1", "health", "contention", "cold_start", "scaling")


class BenchmarkError(RuntimeError):
    """A subject misbehaved (a pool that never filled, a failed health check, ...)."""


@dataclass(frozen=True)
class Target:
    """Where and as whom to connect: every subject gets the same server and settings."""

    dsn: str
    host: str
    port: int
    user: str
    password: str
    database: str
    bin_dir: Path

    @classmethod
    def of(cls, server: EmbeddedServer) -> Target:
        # The embedded server has no TLS: sslmode=disable spares libpq, asyncpg and the pg8000
        # backend the SSLRequest round trip of the default "prefer", which raw pg8000
        # (ssl_context=False) never sends, so that every subject connects the same way.
        return cls(server.dsn() + "?sslmode=disable", server.host, server.port, server.user,
                   server.password, server.database, server.bin_dir)


@dataclass(frozen=True)
class OpenTimes:
    """Seconds from building the pool to the first usable connection, and to all of
    ``min_size`` open (equal where the pool returns only once all are open)."""

    first_s: float
    all_s: float


@dataclass(frozen=True)
class Info:
    key: str
    label: str
    family: str
    kind: str  # "pgconnector", "pool", "connection" or "pgbench"
    is_async: bool
    measures: frozenset[str]
    default_mode: bool = False  # the peer's out-of-the-box configuration, more round trips


class Subject:
    """Base of every adapter; a measure a subject does not support is never called."""

    info: Info

    def __init__(self, info: Info, target: Target) -> None:
        self.info = info
        self.target = target


# ------------------------------------------------------------------------------ pgconnector


class PgcSync(Subject):
    def __init__(self, info: Info, target: Target, backend: str) -> None:
        super().__init__(info, target)
        self.backend = backend

    def open(self, min_size: int, max_size: int) -> OpenTimes:
        opened: list[float] = []
        all_open = threading.Event()

        def on_connect(_event: object) -> None:
            opened.append(time.perf_counter())
            if len(opened) >= min_size:
                all_open.set()

        started = time.perf_counter()
        config = PoolConfig.from_dsn(self.target.dsn, min_size=min_size, max_size=max_size)
        manager = ConnectionManager(config, backend=self.backend)
        manager.add_listener("connect", on_connect)
        manager.connect()  # returns after one verified connection; the rest open behind it
        first = time.perf_counter()
        if not all_open.wait(OPEN_TIMEOUT_S):
            raise BenchmarkError(f"{self.info.key}: {min_size} connections never opened")
        # Listeners run in the pool's code path: measure without any.
        manager.remove_listener("connect", on_connect)
        self.manager = manager
        self._get = manager.get_client
        return OpenTimes(first - started, opened[min_size - 1] - started)

    def cycle(self) -> None:
        self._get().release()

    def select1(self) -> None:
        client = self._get()
        try:
            client.fetchval(SQL)
        finally:
            client.release()

    def held_cycle(self, waits: list[float]) -> None:
        asked = time.perf_counter()
        client = self._get()
        waits.append(time.perf_counter() - asked)
        try:
            client.fetchval(SQL)
        finally:
            client.release()

    def health(self) -> None:
        status = self.manager.health_check()
        if not status.connected:
            raise BenchmarkError(f"{self.info.key}: health check failed: {status.error}")

    def close(self) -> None:
        self.manager.disconnect()


class PgcAsync(Subject):
    def __init__(self, info: Info, target: Target, backend: str) -> None:
        super().__init__(info, target)
        self.backend = backend

    async def open(self, min_size: int, max_size: int) -> OpenTimes:
        loop = asyncio.get_running_loop()
        opened: list[float] = []
        all_open = asyncio.Event()

        def on_connect(_event: object) -> None:
            # The pg8000 backend opens connections in its own threads.
            opened.append(time.perf_counter())
            if len(opened) == min_size:
                loop.call_soon_threadsafe(all_open.set)

        started = time.perf_counter()
        config = PoolConfig.from_dsn(self.target.dsn, min_size=min_size, max_size=max_size)
        manager = AsyncConnectionManager(config, backend=self.backend)
        manager.add_listener("connect", on_connect)
        await manager.connect()
        first = time.perf_counter()
        try:
            await asyncio.wait_for(all_open.wait(), OPEN_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise BenchmarkError(f"{self.info.key}: {min_size} connections never opened") from None
        manager.remove_listener("connect", on_connect)
        self.manager = manager
        self._get = manager.get_client
        return OpenTimes(first - started, opened[min_size - 1] - started)

    async def cycle(self) -> None:
        await (await self._get()).release()

    async def select1(self) -> None:
        client = await self._get()
        try:
            await client.fetchval(SQL)
        finally:
            await client.release()

    async def held_cycle(self, waits: list[float]) -> None:
        asked = time.perf_counter()
        client = await self._get()
        waits.append(time.perf_counter() - asked)
        try:
            await client.fetchval(SQL)
        finally:
            await client.release()

    async def health(self) -> None:
        status = await self.manager.health_check()
        if not status.connected:
            raise BenchmarkError(f"{self.info.key}: health check failed: {status.error}")

    async def close(self) -> None:
        await self.manager.disconnect()


# ------------------------------------------------------------------------------ psycopg_pool


class PsycopgPoolSync(Subject):
    autocommit = True

    def open(self, min_size: int, max_size: int) -> OpenTimes:
        import psycopg_pool

        started = time.perf_counter()
        pool = psycopg_pool.ConnectionPool(
            self.target.dsn, min_size=min_size, max_size=max_size, open=False,
            kwargs={"autocommit": True} if self.autocommit else None)
        # open(wait=True) in two steps, to also see when the first connection is usable.
        pool.open(wait=False)
        pool.putconn(pool.getconn(OPEN_TIMEOUT_S))
        first = time.perf_counter()
        pool.wait(OPEN_TIMEOUT_S)
        self.pool = pool
        self._get, self._put = pool.getconn, pool.putconn
        return OpenTimes(first - started, time.perf_counter() - started)

    def cycle(self) -> None:
        self._put(self._get())

    def select1(self) -> None:
        conn = self._get()
        try:
            conn.execute(SQL).fetchone()
        finally:
            self._put(conn)

    def held_cycle(self, waits: list[float]) -> None:
        asked = time.perf_counter()
        conn = self._get()
        waits.append(time.perf_counter() - asked)
        try:
            conn.execute(SQL).fetchone()
        finally:
            self._put(conn)

    health = select1

    def close(self) -> None:
        self.pool.close()


class PsycopgPoolSyncDefault(PsycopgPoolSync):
    """Out of the box: no autocommit, so psycopg wraps the query in BEGIN ... COMMIT, and the
    documented ``with pool.connection()`` (which commits on exit)."""

    autocommit = False

    def cycle(self) -> None:
        with self.pool.connection():
            pass

    def select1(self) -> None:
        with self.pool.connection() as conn:
            conn.execute(SQL).fetchone()

    def held_cycle(self, waits: list[float]) -> None:
        asked = time.perf_counter()
        with self.pool.connection() as conn:
            waits.append(time.perf_counter() - asked)
            conn.execute(SQL).fetchone()

    health = select1


class PsycopgPoolAsync(Subject):
    autocommit = True

    async def open(self, min_size: int, max_size: int) -> OpenTimes:
        import psycopg_pool

        started = time.perf_counter()
        pool = psycopg_pool.AsyncConnectionPool(
            self.target.dsn, min_size=min_size, max_size=max_size, open=False,
            kwargs={"autocommit": True} if self.autocommit else None)
        await pool.open(wait=False)
        await pool.putconn(await pool.getconn(OPEN_TIMEOUT_S))
        first = time.perf_counter()
        await pool.wait(OPEN_TIMEOUT_S)
        self.pool = pool
        self._get, self._put = pool.getconn, pool.putconn
        return OpenTimes(first - started, time.perf_counter() - started)

    async def cycle(self) -> None:
        await self._put(await self._get())

    async def select1(self) -> None:
        conn = await self._get()
        try:
            await (await conn.execute(SQL)).fetchone()
        finally:
            await self._put(conn)

    async def held_cycle(self, waits: list[float]) -> None:
        asked = time.perf_counter()
        conn = await self._get()
        waits.append(time.perf_counter() - asked)
        try:
            await (await conn.execute(SQL)).fetchone()
        finally:
            await self._put(conn)

    health = select1

    async def close(self) -> None:
        await self.pool.close()


class PsycopgPoolAsyncDefault(PsycopgPoolAsync):
    autocommit = False

    async def cycle(self) -> None:
        async with self.pool.connection():
            pass

    async def select1(self) -> None:
        async with self.pool.connection() as conn:
            await (await conn.execute(SQL)).fetchone()

    async def held_cycle(self, waits: list[float]) -> None:
        asked = time.perf_counter()
        async with self.pool.connection() as conn:
            waits.append(time.perf_counter() - asked)
            await (await conn.execute(SQL)).fetchone()

    health = select1


# ------------------------------------------------------------------------------ asyncpg


async def _no_reset(_conn: Any) -> None:
    """asyncpg's ``reset=`` hook doing nothing: no reset query on release, as in pgconnector's
    asyncpg backend (``reset=None`` would keep asyncpg's default query)."""


class AsyncpgPool(Subject):
    no_op_reset = True

    async def open(self, min_size: int, max_size: int) -> OpenTimes:
        import asyncpg

        started = time.perf_counter()
        # create_pool opens all min_size connections before returning. reset=None: the
        # default reset query.
        pool = await asyncpg.create_pool(self.target.dsn, min_size=min_size, max_size=max_size,
                                         reset=_no_reset if self.no_op_reset else None)
        ready = time.perf_counter() - started
        self.pool = pool
        self._get, self._put = pool.acquire, pool.release
        return OpenTimes(ready, ready)

    async def cycle(self) -> None:
        await self._put(await self._get())

    async def select1(self) -> None:
        conn = await self._get()
        try:
            await conn.fetchval(SQL)
        finally:
            await self._put(conn)

    async def held_cycle(self, waits: list[float]) -> None:
        asked = time.perf_counter()
        conn = await self._get()
        waits.append(time.perf_counter() - asked)
        try:
            await conn.fetchval(SQL)
        finally:
            await self._put(conn)

    health = select1

    async def close(self) -> None:
        await self.pool.close()


class AsyncpgPoolDefault(AsyncpgPool):
    no_op_reset = False


# ------------------------------------------------------------------------------ SQLAlchemy


class SqlaQueuePool(Subject):
    """``sqlalchemy.pool.QueuePool`` with a creator: the pool SQLAlchemy puts under an
    Engine, used directly. ``reset_on_return=None`` over an autocommit connection is one round
    trip per query; the default configuration rolls back on every return."""

    reset_on_return: str | None = None

    def connect(self) -> Any:
        raise NotImplementedError

    def query(self, fairy: Any) -> None:
        raise NotImplementedError

    def open(self, min_size: int, max_size: int) -> OpenTimes:
        from sqlalchemy.pool import QueuePool

        started = time.perf_counter()
        pool = QueuePool(self.connect, pool_size=max_size, max_overflow=0,
                         reset_on_return=self.reset_on_return, timeout=OPEN_TIMEOUT_S)
        # QueuePool opens connections lazily: fill it by holding min_size at once.
        held = [pool.connect()]
        first = time.perf_counter()
        held += [pool.connect() for _ in range(min_size - 1)]
        for fairy in held:
            fairy.close()
        self.pool = pool
        self._get = pool.connect
        return OpenTimes(first - started, time.perf_counter() - started)

    def cycle(self) -> None:
        self._get().close()

    def select1(self) -> None:
        fairy = self._get()
        try:
            self.query(fairy)
        finally:
            fairy.close()

    def held_cycle(self, waits: list[float]) -> None:
        asked = time.perf_counter()
        fairy = self._get()
        waits.append(time.perf_counter() - asked)
        try:
            self.query(fairy)
        finally:
            fairy.close()

    health = select1

    def close(self) -> None:
        self.pool.dispose()


class SqlaPsycopg(SqlaQueuePool):
    def connect(self) -> Any:
        import psycopg

        return psycopg.connect(self.target.dsn, autocommit=True)

    def query(self, fairy: Any) -> None:
        fairy.dbapi_connection.execute(SQL).fetchone()


class SqlaPsycopgDefault(SqlaPsycopg):
    reset_on_return = "rollback"

    def connect(self) -> Any:
        import psycopg

        return psycopg.connect(self.target.dsn)


class SqlaPg8000(SqlaQueuePool):
    """Over ``pg8000.native`` (always autocommit), the driver API pgconnector's pg8000
    backend is built on, so that both run the same driver code per query."""

    def connect(self) -> Any:
        import pg8000.native

        t = self.target
        return pg8000.native.Connection(t.user, host=t.host, port=t.port, password=t.password,
                                        database=t.database, ssl_context=False)

    def query(self, fairy: Any) -> None:
        fairy.dbapi_connection.run(SQL)


class SqlaPg8000Default(SqlaQueuePool):
    """What SQLAlchemy users of pg8000 get: the DB-API connection (a transaction opened by
    the first query) and a rollback on every return."""

    reset_on_return = "rollback"

    def connect(self) -> Any:
        import pg8000.dbapi

        t = self.target
        return pg8000.dbapi.connect(t.user, host=t.host, port=t.port, password=t.password,
                                    database=t.database, ssl_context=False)

    def query(self, fairy: Any) -> None:
        cursor = fairy.cursor()
        cursor.execute(SQL)
        cursor.fetchone()


# ------------------------------------------------------------------------------ plain connections


class ConnSync(Subject):
    """One persistent connection, no pool: the floor of ``select1`` at one worker."""

    def connect(self) -> Any:
        raise NotImplementedError

    def open(self, min_size: int, max_size: int) -> OpenTimes:
        started = time.perf_counter()
        self.conn = self.connect()
        ready = time.perf_counter() - started
        return OpenTimes(ready, ready)

    def close(self) -> None:
        self.conn.close()


class ConnPsycopg(ConnSync):
    def connect(self) -> Any:
        import psycopg

        return psycopg.connect(self.target.dsn, autocommit=True)

    def select1(self) -> None:
        self.conn.execute(SQL).fetchone()


class ConnPg8000(ConnSync):
    def connect(self) -> Any:
        import pg8000.native

        t = self.target
        return pg8000.native.Connection(t.user, host=t.host, port=t.port, password=t.password,
                                        database=t.database, ssl_context=False)

    def select1(self) -> None:
        self.conn.run(SQL)


class ConnAsync(Subject):
    async def connect(self) -> Any:
        raise NotImplementedError

    async def open(self, min_size: int, max_size: int) -> OpenTimes:
        started = time.perf_counter()
        self.conn = await self.connect()
        ready = time.perf_counter() - started
        return OpenTimes(ready, ready)

    async def close(self) -> None:
        await self.conn.close()


class ConnPsycopgAsync(ConnAsync):
    async def connect(self) -> Any:
        import psycopg

        return await psycopg.AsyncConnection.connect(self.target.dsn, autocommit=True)

    async def select1(self) -> None:
        await (await self.conn.execute(SQL)).fetchone()


class ConnAsyncpg(ConnAsync):
    async def connect(self) -> Any:
        import asyncpg

        return await asyncpg.connect(self.target.dsn)

    async def select1(self) -> None:
        await self.conn.fetchval(SQL)


# ------------------------------------------------------------------------------ pgbench


class Pgbench(Subject):
    """``pgbench`` running a ``SELECT 1;`` script: the C client, the ceiling of what the server
    answers on this machine. Prepared protocol (Bind/Execute/Sync per query), as psycopg and
    asyncpg send once a statement is prepared; one thread (-j 1) because the whole run shares
    one CPU. It inherits this process's CPU affinity."""

    def __init__(self, info: Info, target: Target) -> None:
        super().__init__(info, target)
        self._dir = tempfile.TemporaryDirectory(prefix="pgconnector-bench-")
        self.script = Path(self._dir.name) / "select1.sql"
        self.script.write_text(f"{SQL};\n")

    def run(self, clients: int, *, seconds: int | None = None,
            transactions: int | None = None) -> float:
        """Run for ``seconds`` (or ``transactions`` per client); return pgbench's tps, which
        leaves out the time spent connecting."""
        t = self.target
        base = [str(t.bin_dir / "pgbench"), "-n", "-M", "prepared", "-f", str(self.script),
                "-c", str(clients), "-j", "1", "-h", t.host, "-p", str(t.port), "-U", t.user]
        # pgbench's -T clock starts before its clients have connected, and when the duration
        # is over before any transaction ran (64 connections on a busy 2-core machine can take
        # longer than a one-second smoke run) it prints no tps line at all and exits 0. Such a
        # run measured nothing: run it again for longer, a bounded number of times.
        for attempt in range(3):
            argv = [*base]
            if seconds is not None:
                argv += ["-T", str(seconds * 2**attempt)]
            else:
                argv += ["-t", str(transactions)]
            argv.append(t.database)
            budget = (seconds or 0) * 2**attempt + 120
            done = subprocess.run(argv, env=pgbench_env(t.password), capture_output=True,
                                  text=True, timeout=budget, check=False)
            found = re.search(r"^tps = ([0-9.]+)", done.stdout, re.MULTILINE)
            if done.returncode == 0 and found is not None:
                return float(found.group(1))
            if done.returncode != 0 or seconds is None:
                break
        raise BenchmarkError(
            f"pgbench failed ({done.returncode}): {done.stderr.strip()}\n{done.stdout[-800:]}")

    def close(self) -> None:
        self._dir.cleanup()


def pgbench_env(password: str) -> dict[str, str]:
    # PG* variables of ours would redirect pgbench; C locale keeps its output parseable.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(PGPASSWORD=password, LC_ALL="C", LANG="C")
    return env


# ------------------------------------------------------------------------------ the list

POOL_MEASURES = frozenset({CYCLE, SELECT1, HEALTH, CONTENTION, COLD, SCALING})
# A default-mode peer is the same pool with more round trips: its sizing and opening say
# nothing new.
DEFAULT_MEASURES = frozenset({CYCLE, SELECT1, CONTENTION})
LAZY_POOL_MEASURES = POOL_MEASURES - {COLD}  # QueuePool opens nothing until asked
CONN_MEASURES = frozenset({SELECT1, COLD})

PSYCOPG_SYNC, PSYCOPG_ASYNC, ASYNCPG, PG8000, CEILING = (
    "psycopg (sync)", "psycopg (async)", "asyncpg", "pg8000", "C ceiling")


@dataclass(frozen=True)
class Spec:
    info: Info
    factory: Callable[[Info, Target], Subject]
    needs: tuple[str, ...]  # modules (or "backend:NAME") that must be importable

    def make(self, target: Target) -> Any:
        return self.factory(self.info, target)


def _spec(key: str, label: str, family: str, kind: str, factory: Callable[..., Subject],
          needs: tuple[str, ...], measures: frozenset[str], *, is_async: bool = False,
          default_mode: bool = False) -> Spec:
    return Spec(Info(key, label, family, kind, is_async, measures, default_mode), factory, needs)


SPECS: tuple[Spec, ...] = (
    # psycopg, sync
    _spec("pgc-psycopg-sync", "pgconnector psycopg (sync)", PSYCOPG_SYNC, "pgconnector",
          partial(PgcSync, backend="psycopg"), ("backend:psycopg",), POOL_MEASURES),
    _spec("psycopg_pool-sync", "psycopg_pool ConnectionPool, autocommit", PSYCOPG_SYNC, "pool",
          PsycopgPoolSync, ("psycopg_pool",), POOL_MEASURES),
    _spec("psycopg_pool-sync-default", "psycopg_pool ConnectionPool, default (BEGIN/COMMIT)",
          PSYCOPG_SYNC, "pool", PsycopgPoolSyncDefault, ("psycopg_pool",), DEFAULT_MEASURES,
          default_mode=True),
    _spec("sqla-psycopg", "SQLAlchemy QueuePool + psycopg, autocommit, no reset", PSYCOPG_SYNC,
          "pool", SqlaPsycopg, ("sqlalchemy", "psycopg"), LAZY_POOL_MEASURES),
    _spec("sqla-psycopg-default", "SQLAlchemy QueuePool + psycopg, default (BEGIN/ROLLBACK)",
          PSYCOPG_SYNC, "pool", SqlaPsycopgDefault, ("sqlalchemy", "psycopg"),
          DEFAULT_MEASURES, default_mode=True),
    _spec("conn-psycopg-sync", "one psycopg connection (no pool)", PSYCOPG_SYNC, "connection",
          ConnPsycopg, ("psycopg",), CONN_MEASURES),
    # psycopg, async
    _spec("pgc-psycopg-async", "pgconnector psycopg (async)", PSYCOPG_ASYNC, "pgconnector",
          partial(PgcAsync, backend="psycopg"), ("backend:psycopg",), POOL_MEASURES, is_async=True),
    _spec("psycopg_pool-async", "psycopg_pool AsyncConnectionPool, autocommit", PSYCOPG_ASYNC,
          "pool", PsycopgPoolAsync, ("psycopg_pool",), POOL_MEASURES, is_async=True),
    _spec("psycopg_pool-async-default",
          "psycopg_pool AsyncConnectionPool, default (BEGIN/COMMIT)", PSYCOPG_ASYNC, "pool",
          PsycopgPoolAsyncDefault, ("psycopg_pool",), DEFAULT_MEASURES, is_async=True,
          default_mode=True),
    _spec("conn-psycopg-async", "one psycopg AsyncConnection (no pool)", PSYCOPG_ASYNC,
          "connection", ConnPsycopgAsync, ("psycopg",), CONN_MEASURES, is_async=True),
    # asyncpg
    _spec("pgc-asyncpg-async", "pgconnector asyncpg (async)", ASYNCPG, "pgconnector",
          partial(PgcAsync, backend="asyncpg"), ("backend:asyncpg",), POOL_MEASURES, is_async=True),
    _spec("asyncpg-pool", "asyncpg Pool, no-op reset", ASYNCPG, "pool", AsyncpgPool,
          ("asyncpg",), POOL_MEASURES, is_async=True),
    _spec("asyncpg-pool-default", "asyncpg Pool, default reset query", ASYNCPG, "pool",
          AsyncpgPoolDefault, ("asyncpg",), DEFAULT_MEASURES, is_async=True,
          default_mode=True),
    _spec("conn-asyncpg", "one asyncpg connection (no pool)", ASYNCPG, "connection",
          ConnAsyncpg, ("asyncpg",), CONN_MEASURES, is_async=True),
    # pg8000
    _spec("pgc-pg8000-sync", "pgconnector pg8000 (sync)", PG8000, "pgconnector",
          partial(PgcSync, backend="pg8000"), ("backend:pg8000",), POOL_MEASURES),
    _spec("pgc-pg8000-async", "pgconnector pg8000 (async)", PG8000, "pgconnector",
          partial(PgcAsync, backend="pg8000"), ("backend:pg8000",), POOL_MEASURES, is_async=True),
    _spec("sqla-pg8000", "SQLAlchemy QueuePool + pg8000.native, no reset", PG8000, "pool",
          SqlaPg8000, ("sqlalchemy", "pg8000"), LAZY_POOL_MEASURES),
    _spec("sqla-pg8000-default", "SQLAlchemy QueuePool + pg8000.dbapi, default (BEGIN/ROLLBACK)",
          PG8000, "pool", SqlaPg8000Default, ("sqlalchemy", "pg8000"), DEFAULT_MEASURES,
          default_mode=True),
    _spec("conn-pg8000", "one pg8000.native connection (no pool)", PG8000, "connection",
          ConnPg8000, ("pg8000",), CONN_MEASURES),
    # the C ceiling
    _spec("pgbench", "pgbench (C), SELECT 1 script", CEILING, "pgbench", Pgbench, (),
          frozenset({SELECT1})),
)

#: The subject every other subject of a family is compared with.
REFERENCES: dict[str, str] = {
    PSYCOPG_SYNC: "psycopg_pool-sync",
    PSYCOPG_ASYNC: "psycopg_pool-async",
    ASYNCPG: "asyncpg-pool",
    PG8000: "sqla-pg8000",
}

#: The plain connection whose open time a pool's cold start is compared with.
ONE_CONNECTION: dict[str, str] = {
    "pgc-psycopg-sync": "conn-psycopg-sync",
    "pgc-psycopg-async": "conn-psycopg-async",
    "pgc-asyncpg-async": "conn-asyncpg",
    "pgc-pg8000-sync": "conn-pg8000",
    "pgc-pg8000-async": "conn-pg8000",
    "psycopg_pool-sync": "conn-psycopg-sync",
    "psycopg_pool-async": "conn-psycopg-async",
    "asyncpg-pool": "conn-asyncpg",
}


def available_specs() -> tuple[list[Spec], list[str]]:
    """The subjects whose packages are installed, and a note for each one left out."""
    import importlib.util

    backends = set(pgconnector.available_backends())
    kept: list[Spec] = []
    missing: list[str] = []
    for spec in SPECS:
        absent = [
            need for need in spec.needs
            if (need.removeprefix("backend:") not in backends if need.startswith("backend:")
                else importlib.util.find_spec(need) is None)
        ]
        if absent:
            missing.append(f"{spec.info.key} (needs {', '.join(absent)})")
        else:
            kept.append(spec)
    return kept, missing
