"""A first look at the cost of pgconnector: ``SELECT 1`` round trips through the manager
against the same driver used directly, in one run, against one embedded server.

    taskset -c 0 .venv/bin/python benchmarks/select1_first_look.py [--ops 3000] [--repeats 5]

Run it under ``taskset -c 0`` so that the server (started by this script, so it inherits the
CPU affinity) and the client share one CPU: unpinned numbers on a 2-core machine swing by
up to 55% between identical runs. Each subject does acquire + ``SELECT 1`` + release (or, for
a plain connection, just the query) ``--ops`` times; the median of ``--repeats`` runs is
reported in µs per operation, with the ratio raw / pgconnector (1.0 = no overhead). Every
subject runs in autocommit mode: one round trip per operation.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pgconnector
from pgconnector import AsyncConnectionManager, ConnectionManager, PoolConfig
from pgconnector._embedded import EmbeddedServer


def timed(fn: Callable[[], None], ops: int, repeats: int) -> float:
    fn()  # warm-up
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(ops):
            fn()
        runs.append((time.perf_counter() - started) / ops * 1e6)
    return statistics.median(runs)


async def atimed(fn: Callable[[], Awaitable[None]], ops: int, repeats: int) -> float:
    await fn()
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(ops):
            await fn()
        runs.append((time.perf_counter() - started) / ops * 1e6)
    return statistics.median(runs)


def psycopg_subjects(dsn: str, ops: int, repeats: int) -> dict[str, float]:
    import psycopg
    import psycopg_pool

    results: dict[str, float] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        results["psycopg: one connection"] = timed(
            lambda: conn.execute("SELECT 1").fetchone() and None, ops, repeats
        )
    with psycopg_pool.ConnectionPool(dsn, min_size=1, max_size=1,
                                     kwargs={"autocommit": True}) as pool:
        pool.wait()

        def raw_pool() -> None:
            with pool.connection() as c:
                c.execute("SELECT 1").fetchone()

        results["psycopg: psycopg_pool (sync)"] = timed(raw_pool, ops, repeats)
    with ConnectionManager(PoolConfig.from_dsn(dsn, min_size=1, max_size=1),
                           backend="psycopg") as m:

        def managed() -> None:
            with m.connection() as c:
                c.fetchval("SELECT 1")

        results["psycopg: pgconnector (sync)"] = timed(managed, ops, repeats)

    async def run_async() -> None:
        async with psycopg_pool.AsyncConnectionPool(dsn, min_size=1, max_size=1,
                                                    kwargs={"autocommit": True},
                                                    open=False) as apool:
            await apool.wait()

            async def araw() -> None:
                async with apool.connection() as c:
                    await (await c.execute("SELECT 1")).fetchone()

            results["psycopg: psycopg_pool (async)"] = await atimed(araw, ops, repeats)
        async with AsyncConnectionManager(PoolConfig.from_dsn(dsn, min_size=1, max_size=1),
                                          backend="psycopg") as am:

            async def amanaged() -> None:
                async with am.connection() as c:
                    await c.fetchval("SELECT 1")

            results["psycopg: pgconnector (async)"] = await atimed(amanaged, ops, repeats)

    asyncio.run(run_async())
    return results


def asyncpg_subjects(dsn: str, ops: int, repeats: int) -> dict[str, float]:
    import asyncpg

    results: dict[str, float] = {}

    async def no_reset(conn: Any) -> None:
        return None

    async def run() -> None:
        conn = await asyncpg.connect(dsn)
        results["asyncpg: one connection"] = await atimed(
            lambda: conn.fetchval("SELECT 1"), ops, repeats
        )
        await conn.close()
        for label, reset in (("default reset", None), ("no-op reset", no_reset)):
            pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1, reset=reset)

            async def raw(pool: Any = pool) -> None:
                async with pool.acquire() as c:
                    await c.fetchval("SELECT 1")

            results[f"asyncpg: asyncpg.Pool ({label})"] = await atimed(raw, ops, repeats)
            await pool.close()
        async with AsyncConnectionManager(PoolConfig.from_dsn(dsn, min_size=1, max_size=1),
                                          backend="asyncpg") as am:

            async def managed() -> None:
                async with am.connection() as c:
                    await c.fetchval("SELECT 1")

            results["asyncpg: pgconnector (async)"] = await atimed(managed, ops, repeats)

    asyncio.run(run())
    return results


def pg8000_subjects(dsn: str, server: EmbeddedServer, ops: int, repeats: int) -> dict[str, float]:
    import pg8000.native

    results: dict[str, float] = {}
    conn = pg8000.native.Connection(server.user, host=server.host, port=server.port,
                                    password=server.password, database=server.database)
    results["pg8000: one connection"] = timed(lambda: conn.run("SELECT 1") and None, ops,
                                              repeats)
    conn.close()
    with ConnectionManager(PoolConfig.from_dsn(dsn, min_size=1, max_size=1),
                           backend="pg8000") as m:

        def managed() -> None:
            with m.connection() as c:
                c.fetchval("SELECT 1")

        results["pg8000: pgconnector (sync)"] = timed(managed, ops, repeats)

    async def run_async() -> None:
        async with AsyncConnectionManager(PoolConfig.from_dsn(dsn, min_size=1, max_size=1),
                                          backend="pg8000") as am:

            async def amanaged() -> None:
                async with am.connection() as c:
                    await c.fetchval("SELECT 1")

            results["pg8000: pgconnector (async)"] = await atimed(amanaged, ops, repeats)

    asyncio.run(run_async())
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    affinity = sorted(os.sched_getaffinity(0))
    installed = pgconnector.available_backends()
    results: dict[str, float] = {}
    with EmbeddedServer() as server:
        dsn = server.dsn()
        if "psycopg" in installed:
            results.update(psycopg_subjects(dsn, args.ops, args.repeats))
        if "asyncpg" in installed:
            results.update(asyncpg_subjects(dsn, args.ops, args.repeats))
        if "pg8000" in installed:
            results.update(pg8000_subjects(dsn, server, args.ops, args.repeats))
    print(f"CPUs: {affinity}; {args.ops} ops x {args.repeats} runs, median µs/op\n")
    print("| subject | µs/op |")
    print("| --- | ---: |")
    for name, value in results.items():
        print(f"| {name} | {value:.1f} |")
    pairs = [
        ("psycopg: pgconnector (sync)", "psycopg: psycopg_pool (sync)"),
        ("psycopg: pgconnector (async)", "psycopg: psycopg_pool (async)"),
        ("asyncpg: pgconnector (async)", "asyncpg: asyncpg.Pool (no-op reset)"),
        ("asyncpg: pgconnector (async)", "asyncpg: asyncpg.Pool (default reset)"),
        ("pg8000: pgconnector (sync)", "pg8000: one connection"),
        ("pg8000: pgconnector (async)", "pg8000: one connection"),
    ]
    print("\n| pgconnector | against | speed ratio (raw µs / pgconnector µs) |")
    print("| --- | --- | ---: |")
    for ours, theirs in pairs:
        if ours in results and theirs in results:
            print(f"| {ours} | {theirs} | {results[theirs] / results[ours]:.2f} |")


if __name__ == "__main__":
    main()
