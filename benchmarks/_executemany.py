"""(j) executemany: 10,000 three-column rows inserted by one call, on every pgconnector
backend x manager, against the driver's own executemany and against a loop of execute.

Three ways of inserting the same rows (int, text, float8) into an empty table, each in one
transaction on the same pooled connection:

* ``pgconnector``: ``client.executemany(sql, rows)`` (its own transaction);
* ``driver``: the driver's own executemany through ``client.raw`` (psycopg's
  ``cursor.executemany``, pipelined; asyncpg's ``executemany``) inside ``client.transaction()``;
  pg8000 has none (its DB-API ``executemany`` is a loop of execute), so no such row;
* ``loop``: ``client.execute`` once per row inside ``client.transaction()``: what an
  application does without executemany.

Every way must leave exactly the rows it was given (counted). Rounds are interleaved (each
round runs every pair and way once, in rotated orders) and the median is reported.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from _listen import pairs

from pgconnector import AsyncConnectionManager, ConnectionManager, PoolConfig

TABLE = "bench_executemany"
INSERT = f"INSERT INTO {TABLE} VALUES ($1, $2, $3)"
WAYS = ("pgconnector", "driver", "loop")
X = "\N{MULTIPLICATION SIGN}"


def _rows(count: int) -> list[tuple[int, str, float]]:
    return [(i, f"row {i} of the executemany benchmark", i / 7) for i in range(count)]


def _has_driver_way(backend: str) -> bool:
    return backend in ("psycopg", "asyncpg")


def _sync_way(client: Any, backend: str, way: str, rows: list[Any]) -> None:
    if way == "pgconnector":
        client.executemany(INSERT, rows)
    elif way == "driver":
        with client.transaction():
            client.raw.cursor().executemany(INSERT, rows)
    else:
        with client.transaction():
            for row in rows:
                client.execute(INSERT, *row)


async def _async_way(client: Any, backend: str, way: str, rows: list[Any]) -> None:
    if way == "pgconnector":
        await client.executemany(INSERT, rows)
    elif way == "driver":
        async with client.transaction():
            if backend == "asyncpg":
                await client.raw.executemany(INSERT, rows)
            else:
                await client.raw.cursor().executemany(INSERT, rows)
    else:
        async with client.transaction():
            for row in rows:
                await client.execute(INSERT, *row)


def _sync_round(backend: str, dsn: str, ways: list[str], rows: list[Any]) -> dict[str, float]:
    config = PoolConfig.from_dsn(dsn, min_size=1, max_size=1)
    times = {}
    with ConnectionManager(config, backend=backend) as manager, \
            manager.connection() as client:
        for way in ways:
            client.execute(f"TRUNCATE {TABLE}")
            started = time.perf_counter()
            _sync_way(client, backend, way, rows)
            times[way] = time.perf_counter() - started
            _check(client.fetchval(f"SELECT count(*) FROM {TABLE}"), len(rows), backend, way)
    return times


async def _async_round(
    backend: str, dsn: str, ways: list[str], rows: list[Any]
) -> dict[str, float]:
    config = PoolConfig.from_dsn(dsn, min_size=1, max_size=1)
    times = {}
    async with AsyncConnectionManager(config, backend=backend) as manager, \
            manager.connection() as client:
        for way in ways:
            await client.execute(f"TRUNCATE {TABLE}")
            started = time.perf_counter()
            await _async_way(client, backend, way, rows)
            times[way] = time.perf_counter() - started
            count = await client.fetchval(f"SELECT count(*) FROM {TABLE}")
            _check(count, len(rows), backend, way)
    return times


def _check(count: int, expected: int, backend: str, way: str) -> None:
    if count != expected:
        raise AssertionError(f"executemany benchmark: {backend} {way} left {count} rows, "
                             f"not {expected}")


async def measure_executemany(dsn: str, count: int, reps: int) -> dict[str, Any]:
    """Seconds per way, per ``backend-mode``, and the ratios the targets judge."""
    chosen = pairs()
    rows = _rows(count)
    config = PoolConfig.from_dsn(dsn, min_size=1, max_size=1)
    with ConnectionManager(config, backend="psycopg") as manager, manager.connection() as c:
        c.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (id int, t text, x float8)")
    runs: dict[str, dict[str, list[float]]] = {f"{b}-{m}": {} for b, m in chosen}
    for rep in range(reps):
        k = rep % len(chosen) if chosen else 0
        for backend, mode in [*chosen[k:], *chosen[:k]]:
            ways = [way for way in WAYS if way != "driver" or _has_driver_way(backend)]
            ways = [*ways[rep % len(ways):], *ways[:rep % len(ways)]]
            if mode == "sync":
                times = _sync_round(backend, dsn, ways, rows)
            else:
                times = await _async_round(backend, dsn, ways, rows)
            for way, seconds in times.items():
                runs[f"{backend}-{mode}"].setdefault(way, []).append(seconds)
    with ConnectionManager(config, backend="psycopg") as manager, manager.connection() as c:
        c.execute(f"DROP TABLE {TABLE}")
    results: dict[str, Any] = {}
    for key, by_way in runs.items():
        medians = {way: statistics.median(seconds) for way, seconds in by_way.items()}
        ours = medians["pgconnector"]
        results[key] = {
            "seconds": medians,
            "runs": by_way,
            # time / our time: how many times faster pgconnector's call is (>= 1: faster).
            "vs_loop": medians["loop"] / ours,
            "vs_driver": medians["driver"] / ours if "driver" in medians else None,
        }
    return {"rows": count, "reps": reps, "pairs": results}


def section(results: dict[str, Any]) -> list[str]:
    """The Markdown section of the report (nothing when the run had no executemany)."""
    many = results.get("executemany")
    if not many:
        return []
    lines = [
        "## (j) executemany: 10,000 three-column rows",
        "",
        f"{many['rows']:,} rows `(int, text, float8)` inserted into an empty table in one "
        "transaction on one pooled connection: pgconnector's `executemany`, the driver's "
        "own executemany through `client.raw` (psycopg: `cursor.executemany`, pipelined; "
        "asyncpg: `executemany`; pg8000 has none), and a loop of `execute`. Milliseconds, "
        f"median of {many['reps']} interleaved rounds; the ratios are the other way's time "
        f"/ pgconnector's (targets: within 1.25{X} of the driver, i.e. ≥ 0.8; ≥ 10{X} the "
        f"loop for psycopg and asyncpg, ≥ 5{X} for pg8000).",
        "",
        "| backend-manager | pgconnector ms | driver ms | loop ms | driver / ours | "
        "loop / ours |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, value in many["pairs"].items():
        seconds = value["seconds"]
        driver = seconds.get("driver")
        vs_driver = value["vs_driver"]
        lines.append(
            f"| `{key}` | {seconds['pgconnector'] * 1000:,.1f} | "
            + ("n/a" if driver is None else f"{driver * 1000:,.1f}")
            + f" | {seconds['loop'] * 1000:,.1f} | "
            + ("n/a" if vs_driver is None else f"{vs_driver:.2f}")
            + f" | {value['vs_loop']:.1f} |"
        )
    return [*lines, ""]
