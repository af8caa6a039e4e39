"""(h) Statement timeouts: what ``timeout=`` costs on every pgconnector backend x manager.

On one borrowed client: µs per ``SELECT 1`` (``fetchval``) without a timeout and with one that
never expires (``timeout=10``): the price of arming and disarming the backend's timer (a
thread for sync psycopg and pg8000, a ``call_later`` for async psycopg, asyncpg's own); and how
long after its timeout a ``pg_sleep(5)`` called with ``timeout=0.05`` raises
``StatementTimeoutError``: the cancel request's round trip and the statement's end. Rounds
are interleaved (each round runs every pair once, in a rotated order); medians reported.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from _listen import pairs

from pgconnector import AsyncConnectionManager, ConnectionManager, PoolConfig, StatementTimeoutError

QUERY = "SELECT 1"
SLOW = "SELECT pg_sleep(5)"
EXPIRES = 0.05


def _sync_round(backend: str, dsn: str, queries: int) -> tuple[float, float, float]:
    config = PoolConfig.from_dsn(dsn, min_size=1, max_size=1)
    with ConnectionManager(config, backend=backend) as manager, \
            manager.connection() as client:
        timings = []
        for timeout in (None, 10.0):
            for _ in range(max(1, queries // 10)):  # warm
                client.fetchval(QUERY, timeout=timeout)
            started = time.perf_counter()
            for _ in range(queries):
                client.fetchval(QUERY, timeout=timeout)
            timings.append((time.perf_counter() - started) / queries * 1e6)
        started = time.perf_counter()
        try:
            client.fetchval(SLOW, timeout=EXPIRES)
        except StatementTimeoutError:
            pass
        else:
            raise AssertionError("timeout benchmark: the slow statement was not cancelled")
        cancel_ms = (time.perf_counter() - started - EXPIRES) * 1e3
    return timings[0], timings[1], cancel_ms


async def _async_round(backend: str, dsn: str, queries: int) -> tuple[float, float, float]:
    config = PoolConfig.from_dsn(dsn, min_size=1, max_size=1)
    async with AsyncConnectionManager(config, backend=backend) as manager, \
            manager.connection() as client:
        timings = []
        for timeout in (None, 10.0):
            for _ in range(max(1, queries // 10)):  # warm
                await client.fetchval(QUERY, timeout=timeout)
            started = time.perf_counter()
            for _ in range(queries):
                await client.fetchval(QUERY, timeout=timeout)
            timings.append((time.perf_counter() - started) / queries * 1e6)
        started = time.perf_counter()
        try:
            await client.fetchval(SLOW, timeout=EXPIRES)
        except StatementTimeoutError:
            pass
        else:
            raise AssertionError("timeout benchmark: the slow statement was not cancelled")
        cancel_ms = (time.perf_counter() - started - EXPIRES) * 1e3
    return timings[0], timings[1], cancel_ms


async def measure_timeouts(dsn: str, queries: int, reps: int) -> dict[str, Any]:
    """Per ``backend-mode``: µs per query without / with a timeout, and ms from the timeout
    to ``StatementTimeoutError``."""
    chosen = pairs()
    runs: dict[str, dict[str, list[float]]] = {
        f"{b}-{m}": {"plain_us": [], "timed_us": [], "cancel_ms": []} for b, m in chosen
    }
    for rep in range(reps):
        k = rep % len(chosen) if chosen else 0
        for backend, mode in [*chosen[k:], *chosen[:k]]:
            if mode == "sync":
                plain, timed, cancel = _sync_round(backend, dsn, queries)
            else:
                plain, timed, cancel = await _async_round(backend, dsn, queries)
            run = runs[f"{backend}-{mode}"]
            run["plain_us"].append(plain)
            run["timed_us"].append(timed)
            run["cancel_ms"].append(cancel)
    return {
        "queries": queries,
        "reps": reps,
        "expires_s": EXPIRES,
        "pairs": {
            key: {name: {"median": statistics.median(v), "runs": v} for name, v in run.items()}
            for key, run in runs.items()
        },
    }


def section(results: dict[str, Any]) -> list[str]:
    """The Markdown section of the report (nothing when the run had no timeout measure)."""
    data = results.get("timeouts")
    if not data:
        return []
    rows = []
    for key, run in data["pairs"].items():
        plain, timed = run["plain_us"]["median"], run["timed_us"]["median"]
        rows.append(
            f"| `{key}` | {plain:,.1f} | {timed:,.1f} | {timed / plain:.2f}\N{MULTIPLICATION SIGN} "
            f"| {run['cancel_ms']['median']:,.1f} |"
        )
    return [
        "## (h) Statement timeouts: the cost of `timeout=`",
        "",
        f"One borrowed client: µs per `SELECT 1` without a timeout and with `timeout=10` (never "
        f"expiring), over {data['queries']:,} queries; and ms from the expiry of "
        f"`timeout={data['expires_s']:g}` on `pg_sleep(5)` to `StatementTimeoutError` (the "
        f"cancel request and the statement's end). Median of {data['reps']} interleaved rounds.",
        "",
        "| backend-manager | µs/query | µs/query with timeout | ratio | ms to the error |",
        "| --- | ---: | ---: | ---: | ---: |",
        *rows,
        "",
    ]
