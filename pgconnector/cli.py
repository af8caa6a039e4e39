"""The ``pgconnector`` command: ``demo``, ``check`` and ``backends``.

Exit codes of ``check``: 0 healthy, 1 unhealthy, 2 bad usage (unknown backend, malformed DSN).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any, TextIO

from ._config import PoolConfig
from ._pool import ConnectionManager
from ._pool_async import AsyncConnectionManager
from ._redact import redact
from ._registry import available_backends
from ._stats import ConnectionStatus, PoolStats, utcnow
from .errors import ConfigError, PgConnectorError, UnsupportedBackendError

EXIT_OK, EXIT_UNHEALTHY, EXIT_USAGE = 0, 1, 2


class _UsageError(Exception):
    pass


def _status_json(status: ConnectionStatus) -> str:
    def default(value: object) -> object:
        if isinstance(value, datetime):
            return value.isoformat()
        raise TypeError(type(value).__name__)

    return json.dumps(asdict(status), default=default, indent=2)


# -- check ---------------------------------------------------------------------------------


def _config_from_args(dsn: str | None, backend: str | None) -> PoolConfig:
    overrides: dict[str, Any] = {"min_size": 0, "max_size": 1}
    if backend:
        overrides["backend"] = backend
    if dsn:
        return PoolConfig.from_dsn(dsn, **overrides)
    return PoolConfig.from_env(**overrides)


def cmd_check(args: argparse.Namespace, out: TextIO) -> int:
    timeout: float = args.timeout
    if not timeout > 0:
        print("pgconnector check: --timeout must be a positive number of seconds", file=sys.stderr)
        return EXIT_USAGE
    try:
        config = _config_from_args(args.dsn, args.backend)
        config = replace(config, connect_timeout=min(config.connect_timeout, timeout))
        manager: ConnectionManager | AsyncConnectionManager
        if _has_sync_backend(config):
            try:
                manager = ConnectionManager(config)
            except UnsupportedBackendError:
                manager = AsyncConnectionManager(config)
        else:
            manager = AsyncConnectionManager(config)
    except (ConfigError, UnsupportedBackendError) as exc:
        print(f"pgconnector check: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if isinstance(manager, ConnectionManager):
        status = _check_sync(manager, timeout)
    else:
        status = asyncio.run(_check_async(manager, timeout))
    if args.json:
        out.write(_status_json(status) + "\n")
    elif status.connected:
        out.write(f"healthy: SELECT 1 in {_fmt(status.latency_ms)} ms\n")
    else:
        out.write(f"unhealthy: {status.error}\n")
    return EXIT_OK if status.connected else EXIT_UNHEALTHY


def _has_sync_backend(config: PoolConfig) -> bool:
    """With no backend named anywhere, "auto" may only find async backends (asyncpg alone)."""
    named = config.backend != "auto" or config.dsn_backend or os.environ.get("PGCONNECTOR_BACKEND")
    return bool(named) or any(b.supports_sync for b in available_backends().values())


def _failed_status(
    manager: ConnectionManager | AsyncConnectionManager, exc: Exception
) -> ConnectionStatus:
    return ConnectionStatus(
        connected=False,
        pool_stats=manager.get_pool_stats(),
        last_checked=utcnow(),
        error=redact(str(exc) or type(exc).__name__, manager._secrets),
    )


def _check_sync(manager: ConnectionManager, timeout: float) -> ConnectionStatus:
    try:
        manager.connect()
    except PgConnectorError as exc:
        return _failed_status(manager, exc)
    try:
        return manager.health_check(timeout)
    finally:
        manager.disconnect(timeout=1.0)


async def _check_async(manager: AsyncConnectionManager, timeout: float) -> ConnectionStatus:
    try:
        await asyncio.wait_for(manager.connect(), timeout)
    except (PgConnectorError, asyncio.TimeoutError) as exc:
        return _failed_status(manager, exc)
    try:
        return await manager.health_check(timeout)
    finally:
        await manager.disconnect(timeout=1.0)


# -- backends ------------------------------------------------------------------------------


def cmd_backends(args: argparse.Namespace, out: TextIO) -> int:
    backends = available_backends()
    if args.json:
        out.write(json.dumps({n: asdict(b) for n, b in backends.items()}, indent=2) + "\n")
        return EXIT_OK
    if not backends:
        out.write('no backends installed: pip install "pgconnector[psycopg]"\n')
        return EXIT_OK
    rows = [
        [
            b.name,
            b.distribution,
            "yes" if b.supports_sync else "no",
            "yes" if b.supports_async else "no",
            "yes" if b.pure_python else "no",
        ]
        for b in backends.values()
    ]
    _print_table(out, "Installed backends", ["backend", "distribution", "sync", "async",
                                               "pure Python"], rows)
    return EXIT_OK


# -- demo ----------------------------------------------------------------------------------


@dataclass
class DemoResult:
    backend: str
    mode: str
    connect_ms: float | None = None
    healthy: bool = False
    health_ms: float | None = None
    queries: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    stats: PoolStats | None = None
    error: str | None = None

    @property
    def qps(self) -> float:
        return self.queries / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float | None:
        if len(self.latencies) < 2:
            return self.latencies[0] if self.latencies else None
        return statistics.quantiles(self.latencies, n=100)[int(q) - 1]


class _Progress:
    """A progress bar per demo run: rich when it is installed, a plain line otherwise."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._rich: Any = None
        try:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self._rich = Progress(
                TextColumn("{task.description:<18}"),
                BarColumn(),
                TextColumn("{task.fields[queries]:>7} queries"),
                TimeRemainingColumn(),
                transient=False,
            )
        except ImportError:
            pass

    def __enter__(self) -> _Progress:
        if self._rich is not None:
            self._rich.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._rich is not None:
            self._rich.__exit__(None, None, None)

    def task(self, label: str, seconds: float) -> Callable[[float, int], None]:
        if self._rich is not None:
            task_id = self._rich.add_task(label, total=seconds, queries=0)

            def update_rich(elapsed: float, queries: int) -> None:
                self._rich.update(task_id, completed=min(elapsed, seconds), queries=queries)

            return update_rich
        self._out.write(f"{label}: running for {seconds:g} s ...\n")
        return lambda elapsed, queries: None


def _demo_sync(
    dsn: str, backend: str, seconds: float, workers: int, tick: Callable[[float, int], None]
) -> DemoResult:
    result = DemoResult(backend, "sync")
    manager = ConnectionManager(PoolConfig.from_dsn(dsn, min_size=2, max_size=workers),
                                backend=backend)
    started = time.perf_counter()
    try:
        manager.connect()
    except PgConnectorError as exc:
        result.error = str(exc)
        return result
    result.connect_ms = (time.perf_counter() - started) * 1000
    try:
        status = manager.health_check()
        result.healthy, result.health_ms = status.connected, status.latency_ms
        lock = threading.Lock()
        deadline = time.perf_counter() + seconds

        def worker() -> None:
            local: list[float] = []
            errors = 0
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                try:
                    with manager.connection() as client:
                        client.fetchval("SELECT $1::int", 1)
                except PgConnectorError:
                    errors += 1
                    continue
                local.append((time.perf_counter() - t0) * 1000)
            with lock:
                result.latencies.extend(local)
                result.errors += errors

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
        load_started = time.perf_counter()
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            tick(time.perf_counter() - load_started, manager.get_pool_stats().acquires)
            time.sleep(0.1)  # only paces the progress bar; the workers end on their deadline
        result.seconds = time.perf_counter() - load_started
        tick(seconds, manager.get_pool_stats().acquires)
        result.queries = len(result.latencies)
        result.stats = manager.get_pool_stats()
    finally:
        manager.disconnect()
    return result


async def _demo_async(
    dsn: str, backend: str, seconds: float, workers: int, tick: Callable[[float, int], None]
) -> DemoResult:
    result = DemoResult(backend, "async")
    manager = AsyncConnectionManager(
        PoolConfig.from_dsn(dsn, min_size=2, max_size=workers), backend=backend
    )
    started = time.perf_counter()
    try:
        await manager.connect()
    except PgConnectorError as exc:
        result.error = str(exc)
        return result
    result.connect_ms = (time.perf_counter() - started) * 1000
    try:
        status = await manager.health_check()
        result.healthy, result.health_ms = status.connected, status.latency_ms
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                try:
                    async with manager.connection() as client:
                        await client.fetchval("SELECT $1::int", 1)
                except PgConnectorError:
                    result.errors += 1
                    continue
                result.latencies.append((time.perf_counter() - t0) * 1000)

        async def ticker() -> None:
            while time.perf_counter() < deadline:
                tick(seconds - (deadline - time.perf_counter()), manager.get_pool_stats().acquires)
                await asyncio.sleep(0.1)  # paces the progress bar only

        load_started = time.perf_counter()
        await asyncio.gather(ticker(), *(worker() for _ in range(workers * 2)))
        result.seconds = time.perf_counter() - load_started
        tick(seconds, manager.get_pool_stats().acquires)
        result.queries = len(result.latencies)
        result.stats = manager.get_pool_stats()
    finally:
        await manager.disconnect()
    return result


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _print_table(out: TextIO, title: str, headers: Sequence[str], rows: list[list[str]]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
        out.write(f"\n{title}\n")
        out.write("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + "\n")
        out.write("  ".join("-" * w for w in widths) + "\n")
        for row in rows:
            out.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + "\n")
        return
    table = Table(title=title)
    for h in headers:
        table.add_column(h, justify="left" if h in ("backend", "mode", "result") else "right")
    for row in rows:
        table.add_row(*row)
    Console(file=out, width=max(120, len(headers) * 12)).print(table)


def cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    backends = available_backends()
    if args.backend:
        unknown = [b for b in args.backend if b not in backends]
        if unknown:
            print(f"pgconnector demo: backend(s) not installed: {', '.join(unknown)} "
                  f"(installed: {', '.join(backends) or 'none'})", file=sys.stderr)
            return EXIT_USAGE
        backends = {k: v for k, v in backends.items() if k in args.backend}
    if not backends:
        print('pgconnector demo: no backend installed; pip install "pgconnector[psycopg]"',
              file=sys.stderr)
        return EXIT_USAGE
    dsn = args.dsn or os.environ.get("DATABASE_URL")
    server_cm: AbstractContextManager[Any]
    if dsn:
        server_cm = nullcontext(None)
        out.write(f"Using {redact(dsn, [])}\n")
    else:
        try:
            from ._embedded import EmbeddedServer
        except ImportError as exc:  # pragma: no cover - the module itself is stdlib only
            print(f"pgconnector demo: {exc}", file=sys.stderr)
            return EXIT_USAGE
        out.write("Starting a throwaway PostgreSQL server (embedded) ...\n")
        server_cm = EmbeddedServer()
    results: list[DemoResult] = []
    with server_cm as server:
        if server is not None:
            dsn = server.dsn()
            out.write(f"Server ready at {redact(dsn, [server.password])}\n")
        assert dsn is not None
        with _Progress(out) as progress:
            for name, info in backends.items():
                if info.supports_sync:
                    tick = progress.task(f"{name} (sync)", args.seconds)
                    results.append(_demo_sync(dsn, name, args.seconds, args.workers, tick))
                if info.supports_async:
                    tick = progress.task(f"{name} (async)", args.seconds)
                    results.append(
                        asyncio.run(_demo_async(dsn, name, args.seconds, args.workers, tick))
                    )
    rows = []
    for r in results:
        s = r.stats
        rows.append([
            r.backend,
            r.mode,
            _fmt(r.connect_ms),
            "healthy" if r.healthy else "UNHEALTHY",
            _fmt(r.health_ms, 2),
            str(r.queries),
            _fmt(r.qps, 0),
            _fmt(r.percentile(50), 2),
            _fmt(r.percentile(99), 2),
            str(r.errors),
            "-" if s is None else f"{s.total}/{s.idle}/{s.in_use}",
            "-" if s is None else str(s.acquires),
            "-" if s is None else str(s.timeouts),
            "ok" if r.error is None and r.healthy and r.errors == 0 else (r.error or "errors"),
        ])
    _print_table(
        out,
        f"pgconnector demo: {args.workers} workers for {args.seconds:g} s per run",
        ["backend", "mode", "connect ms", "health", "SELECT 1 ms", "queries", "q/s",
         "p50 ms", "p99 ms", "errors", "total/idle/used", "acquires", "timeouts", "result"],
        rows,
    )
    ok = all(r.error is None and r.healthy and r.errors == 0 for r in results)
    return EXIT_OK if ok else EXIT_UNHEALTHY


# -- entry point ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pgconnector",
        description="PostgreSQL connection-pool manager: demo, readiness check, backends.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run every installed backend against a server")
    demo.add_argument("--dsn", help="use this server instead of a throwaway embedded one")
    demo.add_argument("--backend", action="append",
                      help="only this backend (repeatable); default: every installed one")
    demo.add_argument("--seconds", type=float, default=2.0, help="load time per run (2)")
    demo.add_argument("--workers", type=int, default=8, help="concurrent workers (8)")

    check = sub.add_parser(
        "check", help="readiness probe: exit 0 healthy, 1 unhealthy, 2 bad usage"
    )
    check.add_argument("--dsn", help="default: DATABASE_URL and the PG* variables")
    check.add_argument("--backend", help="default: PGCONNECTOR_BACKEND, then auto")
    check.add_argument("--json", action="store_true", help="print the ConnectionStatus as JSON")
    check.add_argument("--timeout", type=float, default=5.0, help="seconds (5)")

    backends = sub.add_parser("backends", help="installed backends and their capabilities")
    backends.add_argument("--json", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    args = build_parser().parse_args(argv)
    stream = out if out is not None else sys.stdout
    commands: dict[str, Callable[[argparse.Namespace, TextIO], int]] = {
        "demo": cmd_demo,
        "check": cmd_check,
        "backends": cmd_backends,
    }
    try:
        return commands[args.command](args, stream)
    except ConfigError as exc:
        print(f"pgconnector {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
