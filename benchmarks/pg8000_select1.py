"""``SELECT 1`` through pgconnector's own pool over pg8000, against pg8000 used directly and
SQLAlchemy's QueuePool over pg8000, in one run against one embedded server.

    taskset -c 0 .venv/bin/python benchmarks/pg8000_select1.py [--ops 3000] [--repeats 7]
        [--sqlalchemy-path DIR]

Run it under ``taskset -c 0`` (see BENCHMARKING.md): the server is started by this script and
inherits the affinity, so client and server share one CPU. Each subject does acquire +
``SELECT 1`` + release ``--ops`` times (a plain connection: just the query); the median of
``--repeats`` runs is printed in µs per operation. Every subject costs one round trip per
operation (autocommit, no reset on a clean release) except the one labelled "default",
which is QueuePool's default reset-on-return (a ROLLBACK per release: two round trips).
SQLAlchemy is optional: ``--sqlalchemy-path`` adds a directory holding it (for example one
made with ``uv pip install --target DIR sqlalchemy``) to ``sys.path``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import pg8000.native  # type: ignore[import-untyped]

from pgconnector import AsyncConnectionManager, ConnectionManager, PoolConfig
from pgconnector._embedded import EmbeddedServer

Subject = Callable[[], object]


async def measure(subjects: dict[str, tuple[Subject, bool]], ops: int,
                  repeats: int) -> dict[str, float]:
    """Median µs per operation of each subject. The subjects take turns, round after round, so
    that a drift of the machine over the run weighs on all of them alike."""
    runs: dict[str, list[float]] = {name: [] for name in subjects}
    for round_number in range(repeats + 1):
        for name, (fn, is_async) in subjects.items():
            started = time.perf_counter()
            if is_async:
                for _ in range(ops):
                    await fn()  # type: ignore[misc]
            else:
                for _ in range(ops):
                    fn()
            if round_number:  # the first round warms up
                runs[name].append((time.perf_counter() - started) / ops * 1e6)
    return {name: statistics.median(values) for name, values in runs.items()}


def raw_connect(config: PoolConfig) -> Any:
    params = config.connect_params()
    return pg8000.native.Connection(params.user, host=params.host, port=params.port,
                                    password=params.password, database=params.database,
                                    ssl_context=False)


async def run(config: PoolConfig, ops: int, repeats: int) -> dict[str, float]:
    subjects: dict[str, tuple[Subject, bool]] = {}
    conn = raw_connect(config)
    subjects["pg8000: one connection, conn.run('SELECT 1')"] = (
        lambda: conn.run("SELECT 1"), False)
    subjects["pg8000: one connection, conn.run('SELECT :x::int', x=1)"] = (
        lambda: conn.run("SELECT :x::int", x=1), False)

    manager = ConnectionManager(config, backend="pg8000")
    manager.connect()

    def through_manager() -> object:
        with manager.connection() as c:
            return c.fetchval("SELECT 1")

    def with_argument() -> object:
        with manager.connection() as c:
            return c.fetchval("SELECT $1::int", 1)

    subjects["pgconnector pg8000 sync: acquire + fetchval('SELECT 1') + release"] = (
        through_manager, False)
    subjects["pgconnector pg8000 sync: ... fetchval('SELECT $1::int', 1) ..."] = (
        with_argument, False)

    amanager = AsyncConnectionManager(config, backend="pg8000")
    await amanager.connect()

    async def through_async() -> object:
        async with amanager.connection() as c:
            return await c.fetchval("SELECT 1")

    subjects["pgconnector pg8000 async: acquire + fetchval('SELECT 1') + release"] = (
        through_async, True)

    pools: list[Any] = []
    try:
        from sqlalchemy.pool import QueuePool
    except ImportError:
        print("(SQLAlchemy not found: QueuePool skipped; see --sqlalchemy-path)")
    else:
        # pg8000.native has no rollback(): give it the one a DBAPI driver has.
        pg8000.native.Connection.rollback = lambda self: self.run("ROLLBACK")
        for label, reset in (("reset_on_return=None", None),
                             ("default reset_on_return (ROLLBACK)", "rollback")):
            pool = QueuePool(lambda: raw_connect(config), pool_size=1, max_overflow=0,
                             reset_on_return=reset)
            pools.append(pool)

            def through_pool(pool: Any = pool) -> object:
                fairy = pool.connect()
                try:
                    return fairy.dbapi_connection.run("SELECT 1")
                finally:
                    fairy.close()

            subjects[f"SQLAlchemy QueuePool over pg8000, {label}"] = (through_pool, False)
    try:
        return await measure(subjects, ops, repeats)
    finally:
        conn.close()
        manager.disconnect()
        await amanager.disconnect()
        for pool in pools:
            pool.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--sqlalchemy-path")
    args = parser.parse_args()
    if args.sqlalchemy_path:
        sys.path.append(args.sqlalchemy_path)
    print(f"CPU affinity: {sorted(os.sched_getaffinity(0))}")
    with EmbeddedServer(password="bench-pw") as server:
        config = PoolConfig.from_dsn(server.dsn(), min_size=1, max_size=1)
        results = asyncio.run(run(config, args.ops, args.repeats))
    width = max(map(len, results))
    base = results["pg8000: one connection, conn.run('SELECT 1')"]
    for name, micros in results.items():
        print(f"{name:<{width}}  {micros:8.1f} µs   x{micros / base:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
