"""Helpers shared by the sync and the async psycopg pools.

Building libpq connection keywords from the core's resolved :class:`~pgconnector.ConnectParams`,
telling a broken connection from a failed statement, the messages of the errors we raise, the
constants both pools use, and the one piece of I/O the sync pool needs a deadline for (the
ping).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import os
import re
import select
import socket
from collections.abc import Iterable, Mapping
from datetime import timezone
from time import monotonic
from typing import Any

import psycopg
from psycopg import pq
from psycopg.abc import AdaptContext
from psycopg.adapt import AdaptersMap
from psycopg.types.datetime import TimestamptzBinaryLoader, TimestamptzLoader
from psycopg.types.json import JsonbDumper

from pgconnector import ConfigError, ConnectParams, PoolConfig
from pgconnector._redact import redact
from pgconnector._translate import ServerFields

__all__ = [
    "NEVER",
    "POLL_INTERVAL",
    "RECONNECT_TIMEOUT",
    "REFILL_DELAYS",
    "abandon_workers",
    "aping_within",
    "server_fields",
    "hang_up",
    "ping_within",
    "MIN_WAIT",
    "SESSION_RESET_IDLE",
    "SESSION_RESET_IN_TRANSACTION",
    "check_params",
    "adapters",
    "connect_kwargs",
    "libpq_connect_timeout",
    "escape_option",
    "settings_to_options",
    "driver_message",
    "is_connection_broken",
    "next_pool_name",
    "quiet_discard_warnings",
    "seconds_or_never",
]

#: What psycopg_pool gets for "no limit" (``idle_timeout=0``, ``max_lifetime=0``): ten years.
#: A finite number, because psycopg_pool schedules its shrink task every ``max_idle`` seconds
#: (0 would make it spin) and adds jitter to ``max_lifetime``.
NEVER = 10 * 365 * 24 * 3600.0

#: How often a waiter re-checks the pool's connect failures while the server looks down (and
#: while ``open()`` verifies the first connection). Only these slow paths poll; an ordinary
#: ``acquire()`` is one ``getconn()`` call.
POLL_INTERVAL = 0.05

#: psycopg_pool raises PoolTimeout at once for ``timeout <= 0``, even with an idle connection
#: in the pool; a zero acquire timeout means "do not wait", so it becomes this.
MIN_WAIT = 0.01

#: psycopg_pool's ``reconnect_timeout``. Its own retry delay starts at 1 s and doubles without a
#: cap, so after an outage the first borrower would wait for the next back-off slot. With 0,
#: psycopg_pool retries a failed connect once, at once, then gives up on it and calls
#: ``reconnect_failed``: the retry schedule is ours (``REFILL_DELAYS``), and while the pool is
#: short a new borrower makes psycopg_pool try to grow at once. So the first borrow after the
#: server comes back connects without delay.
RECONNECT_TIMEOUT = 0.0

#: Delays before re-growing to ``min_size`` after consecutive failed connects: short at first,
#: then every 2 s for as long as the outage lasts. A success starts the sequence again.
REFILL_DELAYS = (0.1, 0.2, 0.5, 1.0, 2.0)

#: Session reset of a connection that is idle (not in a transaction): one statement.
SESSION_RESET_IDLE = "DISCARD ALL"

#: Session reset of a connection in an open or aborted transaction, in the same round trip as
#: the rollback. ``DISCARD ALL`` refuses to run in the implicit transaction block that a
#: multi-statement query forms, so this is its documented equivalent, statement by statement.
SESSION_RESET_IN_TRANSACTION = (
    "ROLLBACK; CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; DEALLOCATE ALL; "
    "UNLISTEN *; SELECT pg_advisory_unlock_all(); DISCARD PLANS; DISCARD TEMP; "
    "DISCARD SEQUENCES"
)

_pool_numbers = itertools.count(1)


def next_pool_name() -> str:
    """``pgconnector-psycopg-N``: the name psycopg_pool logs and names its workers with."""
    return f"pgconnector-psycopg-{next(_pool_numbers)}"


def seconds_or_never(value: float) -> float:
    """A duration where 0 means "no limit" (as ``max_uses=0`` does), for psycopg_pool."""
    return value if value > 0 else NEVER


def libpq_connect_timeout(seconds: float) -> int:
    """libpq's ``connect_timeout``: whole seconds, at least 2 (libpq's own floor), rounded up
    so that libpq never gives up before the float timeout we enforce ourselves."""
    return max(2, math.ceil(seconds))


def escape_option(text: str) -> str:
    """Escape a word for libpq's ``options`` keyword: whitespace separates arguments there,
    and a backslash takes the next character literally."""
    out: list[str] = []
    for char in text:
        if char == "\\" or char.isspace():
            out.append("\\")
        out.append(char)
    return "".join(out)


def settings_to_options(settings: Mapping[str, str]) -> str:
    """``{"search_path": "a b"}`` -> ``-c search_path=a\\ b``."""
    return " ".join(
        f"-c {escape_option(str(name))}={escape_option(str(value))}"
        for name, value in settings.items()
    )


def check_params(params: ConnectParams) -> None:
    """Refuse what libpq cannot be given."""
    if params.ssl_context is not None:
        raise ConfigError(
            "ssl: the psycopg backend cannot use an ssl.SSLContext, because libpq takes its "
            "TLS settings as connection keywords only; put them in the DSN instead, e.g. "
            "sslmode=verify-full sslrootcert=/path/to/ca.pem (and sslcert/sslkey for a client "
            "certificate)",
            field="ssl",
        )


def connect_kwargs(config: PoolConfig, params: ConnectParams) -> dict[str, Any]:
    """libpq keywords for ``psycopg.connect()``, from the core's resolved parameters only.

    host, port, user, dbname and connect_timeout are always given explicitly, so that libpq
    never falls back to a ``PG*`` variable for a field the core has already resolved (the core
    applies those variables itself, with the same precedence). Any other keyword the DSN
    carried is passed through unchanged; ``server_settings`` are appended to ``options``.
    """
    check_params(params)
    kwargs: dict[str, Any] = dict(params.options)
    kwargs.update(
        # A multi-host DSN is libpq's (psycopg's) to try: lists in the same order.
        host=",".join(host for host, _ in params.endpoints),
        port=",".join(str(port) for _, port in params.endpoints),
        user=params.user,
        dbname=params.database,
        connect_timeout=libpq_connect_timeout(params.connect_timeout),
    )
    if params.password is not None:
        kwargs["password"] = params.password
    if params.sslmode is not None:
        kwargs["sslmode"] = params.sslmode
    if params.application_name is not None:
        kwargs["application_name"] = params.application_name
    kwargs["target_session_attrs"] = params.target_session_attrs
    kwargs["load_balance_hosts"] = params.load_balance_hosts
    if params.server_settings:
        # Ours go last: when a setting appears twice, the server keeps the last one.
        words = [kwargs.get("options") or "", settings_to_options(params.server_settings)]
        kwargs["options"] = " ".join(word for word in words if word)
    return kwargs


class _UtcTimestamptzLoader(TimestamptzLoader):
    """timestamptz in UTC (``datetime.timezone.utc``) whatever the session's TimeZone, as
    asyncpg and pg8000 return it: the same value *and* the same tzinfo on every backend."""

    def __init__(self, oid: int, context: AdaptContext | None = None) -> None:
        super().__init__(oid, context)
        self._timezone = timezone.utc


class _UtcTimestamptzBinaryLoader(TimestamptzBinaryLoader):
    def __init__(self, oid: int, context: AdaptContext | None = None) -> None:
        super().__init__(oid, context)
        self._timezone = timezone.utc


_adapters: AdaptersMap | None = None


def adapters() -> AdaptersMap:
    """The adaptation context of every pgconnector connection: psycopg's defaults, with
    timestamptz loaded in UTC and dicts dumped as jsonb."""
    global _adapters
    if _adapters is None:
        amap = AdaptersMap(psycopg.adapters)
        amap.register_loader("timestamptz", _UtcTimestamptzLoader)
        amap.register_loader("timestamptz", _UtcTimestamptzBinaryLoader)
        # A dict argument is JSON on every backend (psycopg alone would refuse it).
        amap.register_dumper(dict, JsonbDumper)
        _adapters = amap
    return _adapters


def driver_message(exc: BaseException, secrets: Iterable[str | None]) -> str:
    """The driver error as one redacted line (psycopg messages may span several)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return redact(text, secrets)


def server_fields(exc: psycopg.Error) -> ServerFields:
    """What the server said about ``exc`` (psycopg's ``diag``), for the core's translation."""
    diag = exc.diag
    return ServerFields(
        sqlstate=exc.sqlstate,
        message=diag.message_primary,
        detail=diag.message_detail,
        hint=diag.message_hint,
        severity=diag.severity_nonlocalized or diag.severity,
        schema_name=diag.schema_name,
        table_name=diag.table_name,
        column_name=diag.column_name,
        constraint_name=diag.constraint_name,
    )


_ADDRESS_PREFIX = re.compile(
    r'^(?:connection failed: )?connection to server (?:at "[^"]*"(?: \([^)]*\))?, port \d+|'
    r'on socket "[^"]*") failed: (?:FATAL: )?'
)


def connect_failure(exc: BaseException, secrets: Iterable[str | None]) -> str:
    """Why a connect failed, as one redacted line: the server's reason without libpq's
    ``connection to server at "H", port P failed: FATAL:`` (the message names the target
    already). libpq reports no SQLSTATE for a failed connect; its whole text is kept when it
    tells of more than one server."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if text.count("connection to server ") == 1:
        text = _ADDRESS_PREFIX.sub("", text)
    return redact(text, secrets)  # last: a short password may match inside the prefix


def is_connection_broken(conn: psycopg.BaseConnection[Any], exc: BaseException) -> bool:
    """True when ``exc`` left ``conn`` unusable: the socket is gone, or the server ended the
    session (FATAL / PANIC severity: terminated backend, admin or crash shutdown, idle-session
    timeouts). A statement error on a healthy connection (syntax, constraint, division by zero,
    statement timeout) is False."""
    if conn.closed or conn.pgconn.status != pq.ConnStatus.OK:
        return True
    if isinstance(exc, (psycopg.errors.AdminShutdown, psycopg.errors.CrashShutdown)):
        return True
    if isinstance(exc, psycopg.Error):
        severity = exc.diag.severity_nonlocalized or exc.diag.severity
        if severity in ("FATAL", "PANIC"):
            return True
    return False


class _QuietDiscards(logging.Filter):
    """Drops psycopg_pool's ``discarding closed connection`` warning for connections that we
    closed on purpose before returning them (``max_uses``, ``discard=True``, failed reset).

    psycopg_pool has no "discard" call: the way to retire a borrowed connection is to close it
    and give it back, which it then reports as a warning. We have already reported those
    closes through the pool events, and a ``max_uses`` retirement is routine, so the warning is
    noise. Only records about connections carrying our ``_pgc_quiet`` mark are dropped.

    Also dropped: ``couldn't stop thread`` for the workers of a pool that never opened (see
    :func:`abandon_workers`), and the failed-connect warnings of a pool that is opening (see
    :func:`opening`).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if not isinstance(args, tuple):
            return True
        if args and isinstance(args[0], str) and args[0].startswith(_abandoned):
            return False
        if (
            args
            and args[0] in _opening
            and isinstance(record.msg, str)
            and record.msg.startswith(_CONNECT_WARNINGS)
        ):
            return False
        return not any(getattr(arg, "_pgc_quiet", False) is True for arg in args)


#: Thread-name prefixes of pools whose workers are left to finish a connect attempt alone.
_abandoned: tuple[str, ...] = ()


def abandon_workers(pool_name: str) -> None:
    """A pool failed to open while a worker may still be inside a connect attempt to a silent
    server (which a sync worker cannot interrupt): it is closed without waiting for its
    workers, so that ``connect()`` fails within ``connect_timeout``. The worker finishes on its
    own (a daemon thread; it closes what it opens, the pool being closed); psycopg_pool's
    warning that it could not stop it is dropped."""
    global _abandoned
    _abandoned = (*_abandoned[-63:], f"{pool_name}-")


#: psycopg_pool's warnings about a failed connect attempt (two or three per attempt).
_CONNECT_WARNINGS = ("error connecting in ", "reconnection attempt in pool ")
#: Names of pools inside open(), or whose open() failed.
_opening: frozenset[str] = frozenset()


def opening(pool_name: str, quiet: bool) -> None:
    """While a pool opens, a failed connect raises to the caller of ``connect()``, which logs
    it once ("Failed to connect to PostgreSQL"): psycopg_pool's own warnings about the same
    attempts would repeat the reason several times. ``quiet=False`` once the pool is open;
    a pool whose open failed stays quiet (it is closed; a late attempt may still report)."""
    global _opening
    names = set(_opening)
    if quiet:
        names.add(pool_name)
    else:
        names.discard(pool_name)
    # Bounded like _abandoned: the names of failed pools are kept, the oldest dropped.
    _opening = frozenset(sorted(names, key=_pool_number)[-64:])


def _pool_number(name: str) -> int:
    tail = name.rpartition("-")[2]
    return int(tail) if tail.isdigit() else 0


_quiet_filter = _QuietDiscards()


def quiet_discard_warnings() -> None:
    """Install the filter on psycopg_pool's logger (once per process)."""
    logger = logging.getLogger("psycopg.pool")
    if _quiet_filter not in logger.filters:
        logger.addFilter(_quiet_filter)


def ping_within(conn: psycopg.Connection[Any], timeout: float) -> None:
    """One empty query on a sync connection, answered within ``timeout`` seconds or
    ``psycopg.OperationalError``. psycopg's own wait has no deadline, and a peer that went
    silent (a stalled network, a frozen server) never closes the socket; so this drives libpq
    directly, waiting on the socket with a deadline."""
    pgconn = conn.pgconn
    deadline = monotonic() + timeout

    def wait(readable: bool) -> None:
        remaining = deadline - monotonic()
        fd = pgconn.socket
        ready = select.select([fd] if readable else [], [] if readable else [fd], [], remaining)
        if remaining <= 0 or not any(ready):
            raise psycopg.OperationalError(f"no answer to a ping within {timeout:g} s")

    with conn.lock:
        pgconn.send_query(b"")
        while pgconn.flush():
            wait(readable=False)
        while True:
            pgconn.consume_input()
            while not pgconn.is_busy():
                result = pgconn.get_result()
                if result is None:
                    return
                if result.status == pq.ExecStatus.FATAL_ERROR:
                    message = (result.error_message or b"").decode(errors="replace").strip()
                    raise psycopg.OperationalError(message or "the ping failed")
            wait(readable=True)


def hang_up(conn: psycopg.BaseConnection[Any]) -> None:
    """Shut the connection's socket down under libpq, so that whatever waits on it fails at
    once. For a peer that went silent: cancelling a psycopg statement would first send the
    server a cancel request and then wait for the statement to end, through the same silent
    network (seconds each); after this, closing the connection is immediate."""
    with contextlib.suppress(Exception):
        sock = socket.socket(fileno=os.dup(conn.pgconn.socket))
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.close()


async def aping_within(conn: psycopg.AsyncConnection[Any], timeout: float) -> None:
    """The async twin of :func:`ping_within`. On timeout or cancellation the socket is shut
    down (:func:`hang_up`) rather than the statement cancelled, which against a silent peer
    would take seconds more."""
    ping = asyncio.ensure_future(conn.execute("", prepare=False))
    try:
        done, _ = await asyncio.wait({ping}, timeout=timeout)
    except BaseException:
        hang_up(conn)
        await asyncio.wait({ping})
        raise
    if not done:
        hang_up(conn)
        await asyncio.wait({ping})  # it fails at once now: its socket is gone
        with contextlib.suppress(BaseException):
            ping.result()
        raise psycopg.OperationalError(f"no answer to a ping within {timeout:g} s")
    ping.result()
