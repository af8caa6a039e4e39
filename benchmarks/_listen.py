"""(g) LISTEN / NOTIFY: one stream receiving a burst of notifications, on every pgconnector
backend x manager.

One statement (``SELECT pg_notify('bench', i::text) FROM generate_series(1, N)``) sends N
notifications, delivered together at its commit; the stream (``manager.listen``) must receive
all N in order, none lost (checked, not assumed). The rate is N divided by the time from
sending the statement to receiving the last one. Rounds are interleaved (each round runs every
pair once, in a rotated order) and the median is reported.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import pgconnector
from pgconnector import AsyncConnectionManager, ConnectionManager, PoolConfig

SEND = "SELECT count(pg_notify('bench', i::text)) FROM generate_series(1, $1::int) AS i"


def pairs() -> list[tuple[str, str]]:
    """Every installed (backend, mode)."""
    found = []
    for name, info in sorted(pgconnector.available_backends().items()):
        if info.supports_sync:
            found.append((name, "sync"))
        if info.supports_async:
            found.append((name, "async"))
    return found


def _check(payloads: list[str], count: int) -> None:
    expected = [str(i) for i in range(1, count + 1)]
    if payloads != expected:
        lost = count - len(set(payloads) & set(expected))
        raise AssertionError(f"LISTEN benchmark: {lost} of {count} lost or out of order")


def _sync_round(backend: str, dsn: str, count: int) -> float:
    config = PoolConfig.from_dsn(dsn, min_size=1, max_size=1)
    with ConnectionManager(config, backend=backend) as manager, \
            manager.listen("bench") as stream, manager.connection() as client:
        started = time.perf_counter()
        client.fetchval(SEND, count)
        payloads = [stream.get(timeout=60).payload for _ in range(count)]
        elapsed = time.perf_counter() - started
    _check(payloads, count)
    return count / elapsed


async def _async_round(backend: str, dsn: str, count: int) -> float:
    config = PoolConfig.from_dsn(dsn, min_size=1, max_size=1)
    async with AsyncConnectionManager(config, backend=backend) as manager, \
            manager.listen("bench") as stream, manager.connection() as client:
        started = time.perf_counter()
        await client.fetchval(SEND, count)
        payloads = [(await stream.get(timeout=60)).payload for _ in range(count)]
        elapsed = time.perf_counter() - started
    _check(payloads, count)
    return count / elapsed


async def measure_listen(dsn: str, count: int, reps: int) -> dict[str, Any]:
    """Notifications per second received by one stream, per ``backend-mode``."""
    chosen = pairs()
    runs: dict[str, list[float]] = {f"{b}-{m}": [] for b, m in chosen}
    for rep in range(reps):
        k = rep % len(chosen) if chosen else 0
        for backend, mode in [*chosen[k:], *chosen[:k]]:
            if mode == "sync":
                rate = _sync_round(backend, dsn, count)
            else:
                rate = await _async_round(backend, dsn, count)
            runs[f"{backend}-{mode}"].append(rate)
    return {
        "notifications": count,
        "reps": reps,
        "rates": {key: {"median": statistics.median(v), "runs": v} for key, v in runs.items()},
    }


def section(results: dict[str, Any]) -> list[str]:
    """The Markdown section of the report (nothing when the run had no LISTEN measure)."""
    listen = results.get("listen")
    if not listen:
        return []
    count = listen["notifications"]
    rows = [
        f"| `{key}` | {count:,} | {count:,} | {value['median']:,.0f} |"
        for key, value in listen["rates"].items()
    ]
    return [
        "## (g) LISTEN / NOTIFY: one stream receiving a burst",
        "",
        f"One statement sends {count:,} notifications (`pg_notify` over `generate_series`), "
        "delivered at its commit; one `manager.listen()` stream must receive all of them, in "
        "order (checked: the run fails otherwise). Notifications per second from sending the "
        f"statement to receiving the last one; median of {listen['reps']} interleaved rounds.",
        "",
        "| backend-manager | sent | received in order | notifications/s |",
        "| --- | ---: | ---: | ---: |",
        *rows,
        "",
    ]
