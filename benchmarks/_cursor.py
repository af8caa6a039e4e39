"""(i) Streaming cursors: ``client.cursor()`` over N rows against the driver's own server-side
cursor, on every pgconnector backend x manager, and the process's RSS growth while it streams.

Every subject reads the same query (``SELECT g AS n, g::text AS s FROM generate_series(1, N)``)
``PREFETCH`` rows per round trip, inside one transaction, and checks every row (count and
sum): pgconnector's ``client.cursor(sql, N, prefetch=PREFETCH)`` (Row objects) against, as
the reference, what each driver offers for the job — psycopg's named cursor
(``conn.cursor(name=...)``, ``itersize``), asyncpg's ``conn.cursor(prefetch=...)`` in a
transaction, and for pg8000 (no cursor API of its own) ``DECLARE`` / ``FETCH FORWARD`` /
``CLOSE`` by hand over ``pg8000.native`` (each fetch through ``asyncio.to_thread`` for the
async manager, as pgconnector's pg8000-async does). Rounds are interleaved (each round runs
every subject once, in a rotated order); the median rate is reported.

RSS growth: the resident set size (``/proc/self/statm``) sampled every ``SAMPLE`` rows while a
subject streams, minus the RSS just before it started (after a ``gc.collect()``); the report
gives the largest growth over the rounds. Bounded memory means it stays flat however many rows
come.
"""

from __future__ import annotations

import asyncio
import gc
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pgconnector
from pgconnector import AsyncConnectionManager, ConnectionManager, PoolConfig

SQL = "SELECT g AS n, g::text AS s FROM generate_series(1, $1::int) AS g"
PREFETCH = 1000
SAMPLE = 10_000
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss() -> int:
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * _PAGE


class _Probe:
    """Counts and sums the rows, samples the RSS every ``SAMPLE`` rows."""

    __slots__ = ("base", "count", "peak", "total")

    def __init__(self) -> None:
        gc.collect()
        self.base = _rss()
        self.peak = self.base
        self.count = 0
        self.total = 0

    def row(self, n: int) -> None:
        self.count += 1
        self.total += n
        if self.count % SAMPLE == 0:
            self.peak = max(self.peak, _rss())

    def check(self, rows: int) -> int:
        """Raise unless every row came; return the RSS growth in bytes."""
        if (self.count, self.total) != (rows, rows * (rows + 1) // 2):
            raise AssertionError(f"cursor benchmark: {self.count} rows, sum {self.total}")
        self.peak = max(self.peak, _rss())
        return self.peak - self.base


def pairs() -> list[tuple[str, str]]:
    found = []
    for name, info in sorted(pgconnector.available_backends().items()):
        if info.supports_sync:
            found.append((name, "sync"))
        if info.supports_async:
            found.append((name, "async"))
    return found


# -- pgconnector -----------------------------------------------------------------------------

def _pgc_sync(backend: str, dsn: str, rows: int) -> tuple[float, int]:
    config = PoolConfig.from_dsn(dsn, min_size=1, max_size=1)
    with ConnectionManager(config, backend=backend) as manager, \
            manager.connection() as client:
        probe = _Probe()
        started = time.perf_counter()
        for row in client.cursor(SQL, rows, prefetch=PREFETCH):
            probe.row(row[0])
        elapsed = time.perf_counter() - started
    return rows / elapsed, probe.check(rows)


async def _pgc_async(backend: str, dsn: str, rows: int) -> tuple[float, int]:
    config = PoolConfig.from_dsn(dsn, min_size=1, max_size=1)
    async with AsyncConnectionManager(config, backend=backend) as manager, \
            manager.connection() as client:
        probe = _Probe()
        started = time.perf_counter()
        async for row in client.cursor(SQL, rows, prefetch=PREFETCH):
            probe.row(row[0])
        elapsed = time.perf_counter() - started
    return rows / elapsed, probe.check(rows)


# -- the drivers' own ------------------------------------------------------------------------

def _psycopg_sync(dsn: str, rows: int) -> tuple[float, int]:
    import psycopg

    with psycopg.connect(dsn) as conn:  # not autocommit: the named cursor's transaction
        probe = _Probe()
        started = time.perf_counter()
        with conn.cursor(name="bench") as cur:
            cur.itersize = PREFETCH
            cur.execute(SQL.replace("$1", "%s"), (rows,))
            for row in cur:
                probe.row(row[0])
        conn.commit()
        elapsed = time.perf_counter() - started
    return rows / elapsed, probe.check(rows)


async def _psycopg_async(dsn: str, rows: int) -> tuple[float, int]:
    import psycopg

    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        probe = _Probe()
        started = time.perf_counter()
        async with conn.cursor(name="bench") as cur:
            cur.itersize = PREFETCH
            await cur.execute(SQL.replace("$1", "%s"), (rows,))
            async for row in cur:
                probe.row(row[0])
        await conn.commit()
        elapsed = time.perf_counter() - started
    return rows / elapsed, probe.check(rows)


async def _asyncpg(dsn: str, rows: int) -> tuple[float, int]:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        probe = _Probe()
        started = time.perf_counter()
        async with conn.transaction():
            async for row in conn.cursor(SQL, rows, prefetch=PREFETCH):
                probe.row(row[0])
        elapsed = time.perf_counter() - started
    finally:
        await conn.close()
    return rows / elapsed, probe.check(rows)


def _pg8000_connect(dsn: str) -> Any:
    import pg8000.native

    params = PoolConfig.from_dsn(dsn).connect_params()
    return pg8000.native.Connection(
        params.user or "", host=params.host or "127.0.0.1", port=params.port or 5432,
        password=params.password, database=params.database,
    )


def _pg8000_stream(probe: _Probe, fetch: Callable[[], list[list[Any]]]) -> None:
    while True:
        chunk = fetch()
        for row in chunk:
            probe.row(row[0])
        if len(chunk) < PREFETCH:
            break


def _pg8000_sync(dsn: str, rows: int) -> tuple[float, int]:
    conn = _pg8000_connect(dsn)
    try:
        probe = _Probe()
        started = time.perf_counter()
        conn.run("BEGIN")
        conn.run("DECLARE bench NO SCROLL CURSOR FOR "
                 "SELECT g AS n, g::text AS s FROM generate_series(1, :n) AS g", n=rows)
        _pg8000_stream(probe, lambda: conn.run(f"FETCH FORWARD {PREFETCH} FROM bench"))
        conn.run("CLOSE bench")
        conn.run("COMMIT")
        elapsed = time.perf_counter() - started
    finally:
        conn.close()
    return rows / elapsed, probe.check(rows)


async def _pg8000_async(dsn: str, rows: int) -> tuple[float, int]:
    conn = await asyncio.to_thread(_pg8000_connect, dsn)
    try:
        probe = _Probe()
        started = time.perf_counter()
        await asyncio.to_thread(conn.run, "BEGIN")
        await asyncio.to_thread(
            conn.run, "DECLARE bench NO SCROLL CURSOR FOR "
            "SELECT g AS n, g::text AS s FROM generate_series(1, :n) AS g", n=rows)
        fetch_sql = f"FETCH FORWARD {PREFETCH} FROM bench"
        while True:
            chunk = await asyncio.to_thread(conn.run, fetch_sql)
            for row in chunk:
                probe.row(row[0])
            if len(chunk) < PREFETCH:
                break
        await asyncio.to_thread(conn.run, "CLOSE bench")
        await asyncio.to_thread(conn.run, "COMMIT")
        elapsed = time.perf_counter() - started
    finally:
        await asyncio.to_thread(conn.close)
    return rows / elapsed, probe.check(rows)


_DRIVER_SYNC = {"psycopg": _psycopg_sync, "pg8000": _pg8000_sync}
_DRIVER_ASYNC = {"psycopg": _psycopg_async, "asyncpg": _asyncpg, "pg8000": _pg8000_async}
_DRIVER_LABEL = {
    "psycopg": "psycopg `conn.cursor(name=...)`, `itersize`",
    "asyncpg": "asyncpg `conn.cursor(prefetch=...)`",
    "pg8000": "pg8000.native `DECLARE` / `FETCH FORWARD` by hand",
}


def _subjects(dsn: str, rows: int) -> list[tuple[str, Callable[[], Awaitable[tuple[float, int]]]]]:
    """(key, run) for every subject: ``pgc:backend-mode`` and ``driver:backend-mode``."""
    found: list[tuple[str, Callable[[], Awaitable[tuple[float, int]]]]] = []
    for backend, mode in pairs():
        key = f"{backend}-{mode}"
        if mode == "sync":
            def pgc(b: str = backend) -> Awaitable[tuple[float, int]]:
                return _done(_pgc_sync(b, dsn, rows))
            found.append((f"pgc:{key}", pgc))
            own = _DRIVER_SYNC.get(backend)
            if own is not None:
                def drv(f: Any = own) -> Awaitable[tuple[float, int]]:
                    return _done(f(dsn, rows))
                found.append((f"driver:{key}", drv))
        else:
            found.append((f"pgc:{key}", lambda b=backend: _pgc_async(b, dsn, rows)))
            own_async = _DRIVER_ASYNC.get(backend)
            if own_async is not None:
                found.append((f"driver:{key}", lambda f=own_async: f(dsn, rows)))
    return found


async def _done(value: tuple[float, int]) -> tuple[float, int]:
    return value


async def measure_cursor(dsn: str, rows: int, reps: int) -> dict[str, Any]:
    """Rows per second and RSS growth per subject; ratios pgconnector / driver."""
    subjects = _subjects(dsn, rows)
    rates: dict[str, list[float]] = {key: [] for key, _ in subjects}
    growth: dict[str, list[int]] = {key: [] for key, _ in subjects}
    for rep in range(reps):
        k = rep % len(subjects) if subjects else 0
        for key, run in [*subjects[k:], *subjects[:k]]:
            # A sync subject runs when its awaitable is made (it blocks the loop, which has
            # nothing else to do), the async ones when awaited.
            rate, grew = await run()
            rates[key].append(rate)
            growth[key].append(grew)
    pairs_out: dict[str, Any] = {}
    for backend, mode in pairs():
        key = f"{backend}-{mode}"
        pgc = statistics.median(rates[f"pgc:{key}"])
        entry: dict[str, Any] = {
            "pgc_rows_per_s": pgc,
            "pgc_rss_growth_mb": max(growth[f"pgc:{key}"]) / 2**20,
            "pgc_runs": rates[f"pgc:{key}"],
        }
        if f"driver:{key}" in rates:
            drv = statistics.median(rates[f"driver:{key}"])
            entry.update(driver=_DRIVER_LABEL[backend], driver_rows_per_s=drv,
                         driver_rss_growth_mb=max(growth[f"driver:{key}"]) / 2**20,
                         driver_runs=rates[f"driver:{key}"], ratio=pgc / drv)
        pairs_out[key] = entry
    return {"rows": rows, "prefetch": PREFETCH, "reps": reps, "pairs": pairs_out}


def section(results: dict[str, Any]) -> list[str]:
    """The Markdown section of the report (nothing when the run had no cursor measure)."""
    cursor = results.get("cursor")
    if not cursor:
        return []
    lines = [
        "## (i) Streaming cursor: `client.cursor()` vs the driver's own server-side cursor",
        "",
        f"{cursor['rows']:,} rows (`int`, `text`), {cursor['prefetch']} per round trip, every "
        "row checked; rows/s, median of "
        f"{cursor['reps']} interleaved rounds; RSS growth is the largest over the rounds "
        "(target: ratio >= 0.8, RSS growth < 30 MB).",
        "",
        "| backend-manager | pgconnector rows/s | driver's own | driver rows/s | ratio | "
        "RSS growth pgconnector | RSS growth driver |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for key, e in cursor["pairs"].items():
        lines.append(
            f"| `{key}` | {e['pgc_rows_per_s']:,.0f} | {e.get('driver', '-')} | "
            f"{e.get('driver_rows_per_s', 0):,.0f} | {e.get('ratio', 0):.2f} | "
            f"{e['pgc_rss_growth_mb']:.1f} MB | {e.get('driver_rss_growth_mb', 0):.1f} MB |"
        )
    lines.append("")
    return lines


def main() -> None:
    """``python benchmarks/_cursor.py [ROWS [REPS]]``: this measure alone, on an embedded
    server of its own, unpinned (a one-off; ``run.py`` runs it pinned with the rest)."""
    import json
    import sys

    from pgconnector._embedded import EmbeddedServer

    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    with EmbeddedServer() as server:
        results = asyncio.run(measure_cursor(server.dsn() + "?sslmode=disable", rows, reps))
    print("\n".join(section({"cursor": results})))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
