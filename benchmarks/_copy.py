"""(k) COPY: ``copy_records_to_table`` of N three-column rows, on every pgconnector backend x
manager, against the driver's own bulk load in the same run:

* psycopg: ``cursor.copy()`` + ``write_row`` (sync and async), what pgconnector's psycopg
  backend uses itself;
* asyncpg: ``Connection.copy_records_to_table`` (binary COPY);
* pg8000: it has no record COPY, so the baseline is its own ``executemany`` (pg8000's DB-API
  cursor, one round trip per row), measured on fewer rows and compared as rows per second.

Every round loads into an emptied table and checks the row count. Rounds are interleaved
(each round runs every subject once, in a rotated order) and the median is reported.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pgconnector
from pgconnector import AsyncConnectionManager, ConnectionManager, PoolConfig

TABLE = "bench_copy"
CREATE = f"CREATE TABLE IF NOT EXISTS {TABLE} (id int8, name text, score float8)"
COPY = f"COPY {TABLE} (id, name, score) FROM STDIN"
INSERT = f"INSERT INTO {TABLE} (id, name, score) VALUES (%s, %s, %s)"
#: pg8000's executemany costs a round trip per row: a slice of the rows is enough to rate it.
EXECUTEMANY_SHARE = 50


def rows(count: int) -> list[tuple[int, str, float]]:
    return [(i, f"name {i}", i * 0.5) for i in range(count)]


def _pairs() -> list[tuple[str, str]]:
    found = []
    for name, info in sorted(pgconnector.available_backends().items()):
        if info.supports_sync:
            found.append((name, "sync"))
        if info.supports_async:
            found.append((name, "async"))
    return found


def _sync_pgconnector(backend: str, dsn: str, data: list[Any]) -> float:
    config = PoolConfig.from_dsn(dsn, min_size=1, max_size=1)
    with ConnectionManager(config, backend=backend) as manager, manager.connection() as c:
        c.execute(f"TRUNCATE {TABLE}")
        started = time.perf_counter()
        copied = c.copy_records_to_table(TABLE, data, columns=["id", "name", "score"])
        elapsed = time.perf_counter() - started
        _check(copied, c.fetchval(f"SELECT count(*) FROM {TABLE}"), len(data))
    return elapsed


async def _async_pgconnector(backend: str, dsn: str, data: list[Any]) -> float:
    config = PoolConfig.from_dsn(dsn, min_size=1, max_size=1)
    async with AsyncConnectionManager(config, backend=backend) as manager, \
            manager.connection() as c:
        await c.execute(f"TRUNCATE {TABLE}")
        started = time.perf_counter()
        copied = await c.copy_records_to_table(TABLE, data, columns=["id", "name", "score"])
        elapsed = time.perf_counter() - started
        _check(copied, await c.fetchval(f"SELECT count(*) FROM {TABLE}"), len(data))
    return elapsed


def _check(copied: int, counted: int, expected: int) -> None:
    if not copied == counted == expected:
        raise AssertionError(f"COPY benchmark: {copied} copied, {counted} in the table, "
                             f"{expected} sent")


def _psycopg_sync(dsn: str, data: list[Any]) -> float:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {TABLE}")
        started = time.perf_counter()
        with conn.cursor() as cur, cur.copy(COPY) as copy:
            for row in data:
                copy.write_row(row)
        elapsed = time.perf_counter() - started
        counted = conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()
    _check(len(data), counted[0] if counted else -1, len(data))
    return elapsed


async def _psycopg_async(dsn: str, data: list[Any]) -> float:
    import psycopg

    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(f"TRUNCATE {TABLE}")
        started = time.perf_counter()
        async with conn.cursor() as cur, cur.copy(COPY) as copy:
            for row in data:
                await copy.write_row(row)
        elapsed = time.perf_counter() - started
        counted = await (await conn.execute(f"SELECT count(*) FROM {TABLE}")).fetchone()
    _check(len(data), counted[0] if counted else -1, len(data))
    return elapsed


async def _asyncpg(dsn: str, data: list[Any]) -> float:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"TRUNCATE {TABLE}")
        started = time.perf_counter()
        await conn.copy_records_to_table(TABLE, records=data, columns=["id", "name", "score"])
        elapsed = time.perf_counter() - started
        _check(len(data), await conn.fetchval(f"SELECT count(*) FROM {TABLE}"), len(data))
    finally:
        await conn.close()
    return elapsed


def _pg8000_executemany(dsn: str, data: list[Any]) -> float:
    import pg8000.dbapi

    params = PoolConfig.from_dsn(dsn).connect_params()
    host, port = params.endpoints[0]
    conn = pg8000.dbapi.connect(params.user, host=host, port=port, password=params.password,
                                database=params.database, ssl_context=None)
    try:
        cur = conn.cursor()
        cur.execute(f"TRUNCATE {TABLE}")
        conn.commit()
        started = time.perf_counter()
        cur.executemany(INSERT, data)
        conn.commit()
        elapsed = time.perf_counter() - started
        cur.execute(f"SELECT count(*) FROM {TABLE}")
        _check(len(data), cur.fetchone()[0], len(data))
    finally:
        conn.close()
    return elapsed


def _baseline(backend: str, mode: str) -> tuple[str, Callable[..., Any], bool] | None:
    """(label, function, is a coroutine function) of the driver's own load for a pair."""
    if backend == "psycopg":
        if mode == "sync":
            return "psycopg copy + write_row", _psycopg_sync, False
        return "psycopg async copy + write_row", _psycopg_async, True
    if backend == "asyncpg":
        return "asyncpg copy_records_to_table", _asyncpg, True
    if backend == "pg8000" and mode == "sync":
        return "pg8000 executemany", _pg8000_executemany, False
    return None


async def measure_copy(dsn: str, count: int, reps: int) -> dict[str, Any]:
    """Rows per second of ``copy_records_to_table`` per ``backend-mode``, and of the driver's
    own load beside it, with their ratio."""
    await _create(dsn)
    data = rows(count)
    few = data[: max(1, count // EXECUTEMANY_SHARE)]
    jobs: list[tuple[str, int, Callable[[], Awaitable[float]]]] = []
    for backend, mode in _pairs():
        key = f"{backend}-{mode}"
        if mode == "sync":
            jobs.append((key, count, _wrap(_sync_pgconnector, backend, dsn, data)))
        else:
            jobs.append((key, count, _wrap_async(_async_pgconnector, backend, dsn, data)))
        baseline = _baseline(backend, mode)
        if baseline is not None:
            label, fn, is_async = baseline
            sample = few if backend == "pg8000" else data
            jobs.append((f"{key}|{label}", len(sample),
                         (_wrap_async if is_async else _wrap)(fn, dsn, sample)))
    runs: dict[str, list[float]] = {key: [] for key, _, _ in jobs}
    for rep in range(reps):
        k = rep % len(jobs)
        for key, n, job in [*jobs[k:], *jobs[:k]]:
            runs[key].append(n / await job())
    rates = {key: statistics.median(v) for key, v in runs.items()}
    table = []
    for backend, mode in _pairs():
        key = f"{backend}-{mode}"
        baseline = _baseline(backend, mode)
        own = f"{key}|{baseline[0]}" if baseline else None
        table.append({
            "pair": key,
            "rows_per_s": rates[key],
            "baseline": baseline[0] if baseline else None,
            "baseline_rows_per_s": rates[own] if own else None,
            "ratio": rates[key] / rates[own] if own else None,
        })
    return {"rows": count, "reps": reps, "executemany_rows": len(few), "table": table}


async def _create(dsn: str) -> None:
    backend, mode = _pairs()[0]
    config = PoolConfig.from_dsn(dsn, min_size=1, max_size=1)
    if mode == "sync":
        with ConnectionManager(config, backend=backend) as manager, \
                manager.connection() as c:
            c.execute(CREATE)
    else:
        async with AsyncConnectionManager(config, backend=backend) as amanager, \
                amanager.connection() as ac:
            await ac.execute(CREATE)


def _wrap(fn: Callable[..., float], *args: Any) -> Callable[[], Awaitable[float]]:
    async def run() -> float:
        return fn(*args)
    return run


def _wrap_async(fn: Callable[..., Awaitable[float]], *args: Any) -> Callable[[], Awaitable[float]]:
    async def run() -> float:
        return await fn(*args)
    return run


def section(results: dict[str, Any]) -> list[str]:
    """The Markdown section of the report (nothing when the run had no COPY measure)."""
    copy = results.get("copy")
    if not copy:
        return []
    lines = []
    for row in copy["table"]:
        baseline = row["baseline"] or "—"
        own = f"{row['baseline_rows_per_s']:,.0f}" if row["baseline_rows_per_s"] else "—"
        ratio = f"{row['ratio']:.2f}x" if row["ratio"] else "—"
        lines.append(f"| `{row['pair']}` | {row['rows_per_s']:,.0f} | {baseline} | {own} | "
                     f"{ratio} |")
    return [
        "## (k) COPY: `copy_records_to_table` against the driver's own bulk load",
        "",
        f"{copy['rows']:,} rows of three columns (int8, text, float8) into an emptied table, "
        "row count checked; rows per second, median of "
        f"{copy['reps']} interleaved rounds. pg8000 has no record COPY: its baseline is its own "
        f"`executemany` (a round trip per row), rated on {copy['executemany_rows']:,} rows.",
        "",
        "| backend-manager | rows/s | driver's own | its rows/s | ratio |",
        "| --- | ---: | --- | ---: | ---: |",
        *lines,
        "",
    ]


if __name__ == "__main__":  # a one-off run: python benchmarks/_copy.py DSN ROWS REPS
    import json
    import sys

    print(json.dumps(asyncio.run(measure_copy(sys.argv[1], int(sys.argv[2]),
                                              int(sys.argv[3]))), indent=2))
