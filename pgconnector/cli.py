"""The ``pgconnector`` command: ``server``, ``demo``, ``check`` and ``backends``.

Exit codes of ``check``: 0 healthy, 1 unhealthy, 2 bad usage (unknown backend, malformed DSN).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import shlex
import shutil
import signal
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from types import FrameType
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


def _quiet_logging() -> None:
    """A command whose output is its verdict: with logging not configured, Python would print
    the manager's log records (its "Failed to connect" line) to stderr as well, saying the same
    thing twice. A handler that drops them stops that; a configured logging is left alone."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.NullHandler())


def cmd_check(args: argparse.Namespace, out: TextIO) -> int:
    _quiet_logging()
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


# -- server --------------------------------------------------------------------------------

#: In a ``--data-dir``: the credentials the cluster was created with (mode 0600).
CREDENTIALS_FILE = "pgconnector-server.json"


def _credentials(args: argparse.Namespace) -> tuple[dict[str, str], Path | None]:
    """User, password and database: those a kept directory was created with, else new ones."""
    fresh = {"user": args.user, "password": secrets.token_urlsafe(12), "database": args.database}
    if args.data_dir is None:
        return fresh, None
    path = Path(args.data_dir).absolute() / CREDENTIALS_FILE
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return fresh, path
    except (OSError, ValueError) as exc:
        raise _UsageError(f"cannot read {path}: {exc}") from None
    if not (isinstance(stored, dict) and all(isinstance(stored.get(k), str) for k in fresh)):
        raise _UsageError(f"{path} does not hold user, password and database")
    return {k: stored[k] for k in fresh}, None


def _save_credentials(path: Path, credentials: dict[str, str]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(credentials, fh)


def cmd_server(args: argparse.Namespace, out: TextIO) -> int:
    """Run a throwaway PostgreSQL until Ctrl-C or SIGTERM, then stop and remove it."""
    from ._embedded import EmbeddedServer, EmbeddedServerError

    try:
        credentials, new_file = _credentials(args)
        server = EmbeddedServer(
            user=credentials["user"],
            password=credentials["password"],
            database=credentials["database"],
            port=args.port,
            keep_dir=args.data_dir,
        )
    except (_UsageError, ValueError, EmbeddedServerError) as exc:
        print(f"pgconnector server: {exc}", file=sys.stderr)
        return EXIT_USAGE
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # Set before the (slow) start: a Ctrl-C meanwhile stops the server as soon as it is up,
    # through the same cleanup, instead of interrupting initdb half-way.
    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        kept = Path(args.data_dir).absolute() if args.data_dir else None
        out.write(f"Starting PostgreSQL ({f'in {kept}' if kept else 'throwaway'}) ...\n")
        out.flush()
        try:
            if new_file is not None:
                # Before initdb: a cluster must never exist without the password it was made
                # with (the next run would then have none that works).
                new_file.parent.mkdir(parents=True, exist_ok=True)
                _save_credentials(new_file, credentials)
            server.start()
        except (OSError, EmbeddedServerError) as exc:
            print(f"pgconnector server: {exc}", file=sys.stderr)
            return EXIT_UNHEALTHY
        dsn = server.dsn()
        fate = f"the data stays in {kept}" if kept else "its data is removed"
        out.write(
            f"PostgreSQL is ready at {dsn}\n"
            f"export DATABASE_URL={shlex.quote(dsn)}\n"
            f"Ctrl-C stops it; {fate}.\n"
        )
        out.flush()
        while not stop.wait(1.0):  # a timeout, so that signals are seen on every platform
            pass
        out.write("Stopping PostgreSQL ...\n")
        out.flush()
    finally:
        server.cleanup()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    out.write("Stopped.\n")
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
    #: Borrows during the load alone (the health check before it borrows one too).
    acquires: int = 0
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
        before = manager.get_pool_stats().acquires
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
            tick(time.perf_counter() - load_started, manager.get_pool_stats().acquires - before)
            time.sleep(0.1)  # only paces the progress bar; the workers end on their deadline
        result.seconds = time.perf_counter() - load_started
        tick(seconds, manager.get_pool_stats().acquires - before)
        result.queries = len(result.latencies)
        result.stats = manager.get_pool_stats()
        result.acquires = result.stats.acquires - before
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
        before = manager.get_pool_stats().acquires
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
                borrowed = manager.get_pool_stats().acquires - before
                tick(seconds - (deadline - time.perf_counter()), borrowed)
                await asyncio.sleep(0.1)  # paces the progress bar only

        load_started = time.perf_counter()
        await asyncio.gather(ticker(), *(worker() for _ in range(workers * 2)))
        result.seconds = time.perf_counter() - load_started
        tick(seconds, manager.get_pool_stats().acquires - before)
        result.queries = len(result.latencies)
        result.stats = manager.get_pool_stats()
        result.acquires = result.stats.acquires - before
    finally:
        await manager.disconnect()
    return result


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _print_table(
    out: TextIO,
    title: str,
    headers: Sequence[str],
    rows: list[list[str]],
    width: int | None = None,
    caption: str | None = None,
) -> None:
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
        if caption:
            out.write(caption + "\n")
        return
    table = Table(title=title, caption=caption)
    for h in headers:
        table.add_column(h, justify="left" if h in ("backend", "mode", "result") else "right")
    for row in rows:
        table.add_row(*row)
    Console(file=out, width=width or max(120, len(headers) * 12)).print(table)


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
    _print_demo_table(out, results, args, shutil.get_terminal_size().columns)
    ok = all(r.error is None and r.healthy and r.errors == 0 for r in results)
    return EXIT_OK if ok else EXIT_UNHEALTHY


def _outcome(r: DemoResult) -> str:
    if r.error is not None:
        return r.error
    if not r.healthy:
        return "UNHEALTHY"
    return "ok" if r.errors == 0 else f"{r.errors} errors"


#: The full table is this wide; a narrower terminal gets the narrow one (80 columns).
WIDE_TABLE_COLUMNS = 150


def _print_demo_table(
    out: TextIO, results: list[DemoResult], args: argparse.Namespace, columns: int
) -> None:
    title = f"pgconnector demo: {args.workers} workers for {args.seconds:g} s per run"
    if columns >= WIDE_TABLE_COLUMNS:
        headers = ["backend", "mode", "connect ms", "health", "SELECT 1 ms", "queries", "q/s",
                   "p50 ms", "p99 ms", "errors", "total/idle/used", "acquires", "timeouts",
                   "result"]
        rows = [
            [r.backend, r.mode, _fmt(r.connect_ms),
             "healthy" if r.healthy else "UNHEALTHY", _fmt(r.health_ms, 2), str(r.queries),
             _fmt(r.qps, 0), _fmt(r.percentile(50), 2), _fmt(r.percentile(99), 2),
             str(r.errors),
             "-" if r.stats is None else f"{r.stats.total}/{r.stats.idle}/{r.stats.in_use}",
             str(r.acquires), "-" if r.stats is None else str(r.stats.timeouts), _outcome(r)]
            for r in results
        ]
        _print_table(out, title, headers, rows, width=columns)
        return
    # Narrow: what a reader compares between backends; health, errors and timeouts show in
    # "result" when they are not what they should be.
    headers = ["backend", "mode", "connect", "queries", "q/s", "p50", "p99", "pool", "result"]
    rows = [
        [r.backend, r.mode, _fmt(r.connect_ms), str(r.queries), _fmt(r.qps, 0),
         _fmt(r.percentile(50), 2), _fmt(r.percentile(99), 2),
         "-" if r.stats is None else str(r.stats.total), _outcome(r)]
        for r in results
    ]
    _print_table(out, title, headers, rows, width=min(columns, 80),
                 caption="times in ms; pool: connections open at the end")


# -- entry point ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pgconnector",
        description="PostgreSQL connection-pool manager: a throwaway server, demo, readiness "
        "check, backends.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    server = sub.add_parser(
        "server",
        help="run a throwaway PostgreSQL (the embedded extra) until Ctrl-C; prints its DSN",
    )
    server.add_argument("--port", type=int, help="TCP port on 127.0.0.1 (default: a free one)")
    server.add_argument(
        "--data-dir",
        help="keep the cluster in this directory between runs (reused, never removed)",
    )
    server.add_argument("--user", default="app", help="superuser to create (app)")
    server.add_argument("--database", default="app", help="database to create (app)")

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
        "server": cmd_server,
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
