"""From the core's :class:`~pgconnector.ConnectParams` to ``asyncpg.connect()`` arguments.

Pure functions, no I/O, and no import of asyncpg (so that they can be tested, and errors
raised, without the driver).

asyncpg resolves missing connection values from the ``PG*`` variables itself, as libpq does.
The core has already applied those variables with libpq's precedence, so every value it
resolved is passed explicitly, and asyncpg reads no variable for it:

* ``host``, ``port``, ``user``, ``database``: always given.
* ``password``: given when the core found one. When it found none, asyncpg (like libpq) looks
  for a password file (``PGPASSFILE`` or ``~/.pgpass``), which is what psycopg does too. One
  difference remains: asyncpg reads ``PGPASSWORD`` in that case, and a ``PGPASSWORD`` set to
  the empty string makes it send an empty password where libpq would consult the password
  file.
* ``ssl``: the sslmode, or ``"prefer"`` (libpq's default) when none was given, so that
  ``PGSSLMODE`` is never consulted; an ``ssl.SSLContext`` is passed as it is.
* ``target_session_attrs``: ``any``; the backend applies the resolved value itself, one server
  at a time (see ``pgconnector._hosts``).
* ``application_name`` and ``server_settings``: sent as startup parameters.

What the core does not resolve (certificate files, Kerberos service name, TLS versions) is
left to asyncpg, which reads the same variables and files as libpq (``PGSSLROOTCERT``,
``~/.postgresql/root.crt``, …), unless the DSN names them.

Other libpq keywords found in the DSN (``ConnectParams.options``) are mapped when asyncpg has
an equivalent, ignored when asyncpg's behaviour already is what the value asks for, and
refused with :class:`~pgconnector.ConfigError` otherwise, so that nothing which changes
behaviour is dropped silently. See :data:`KEYWORD_HANDLING`.
"""

from __future__ import annotations

import math
import os
import random
import socket
import ssl
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from pgconnector import ConfigError, ConnectParams, PoolConfig
from pgconnector._redact import redact

__all__ = [
    "KEYWORD_HANDLING",
    "ConnectArgs",
    "SocketOptions",
    "connect_args",
    "driver_message",
    "jittered_lifetime",
]

# libpq keywords that asyncpg understands only inside a DSN, not as connect() arguments.
_DSN_ONLY = (
    "sslcert",
    "sslkey",
    "sslrootcert",
    "sslcrl",
    "sslpassword",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
)
# Values under which a keyword asks for exactly what asyncpg does anyway.
_HARMLESS_VALUES: dict[str, tuple[str, ...] | None] = {
    # Obsolete: ignored by libpq itself since PostgreSQL 14; None means any value.
    "sslcompression": None,
    # asyncpg has no GSSAPI encryption; "prefer" falls back just as libpq does without
    # credentials.
    "gssencmode": ("disable", "prefer"),
    # asyncpg authenticates with SCRAM-SHA-256 without channel binding.
    "channel_binding": ("disable", "prefer"),
    # asyncpg sends a client certificate when one is configured, as libpq's default does.
    "sslcertmode": ("allow",),
    # asyncio sends SNI for a TLS connection to a host name, as libpq's default does.
    "sslsni": ("1",),
}
_UTF8 = ("utf8", "utf-8", "unicode")
_KEEPALIVE_KEYWORDS = (
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
)

#: How each libpq keyword that the core passes through in ``ConnectParams.options`` is
#: handled (for the README and the error messages). Anything not listed is refused.
KEYWORD_HANDLING: dict[str, str] = {
    **{name: "passed to asyncpg in a DSN query string" for name in _DSN_ONLY},
    "passfile": "passed as passfile= (used only when no password was given)",
    "krbsrvname": "passed as krbsrvname=",
    "gsslib": "passed as gsslib= (gssapi or sspi)",
    "sslnegotiation": "passed as direct_tls= (postgres or direct)",
    "options": "sent as the 'options' startup parameter, as libpq sends it",
    "fallback_application_name": "used as application_name when none is given",
    "client_encoding": "accepted for UTF8 only (asyncpg always speaks UTF-8)",
    **{name: "applied to the TCP socket, as libpq does" for name in _KEEPALIVE_KEYWORDS},
    **{
        name: "ignored (asyncpg already behaves so)"
        + ("" if values is None else f" for {', '.join(values)}; refused otherwise")
        for name, values in _HARMLESS_VALUES.items()
    },
}


@dataclass(frozen=True)
class SocketOptions:
    """TCP keepalive settings, libpq's ``keepalives*`` and ``tcp_user_timeout``.

    libpq turns keepalives on for every TCP connection by default and asyncpg does not, so
    the pool applies these to each new connection's socket (defaults: on, the OS's timings).
    """

    keepalives: bool = True
    idle: int | None = None
    interval: int | None = None
    count: int | None = None
    user_timeout_ms: int | None = None

    def apply(self, sock: Any) -> None:
        """Set the options on ``sock`` (a TCP socket; do nothing for a Unix socket).

        Best effort: a platform without one of the options keeps its default.
        """
        if getattr(sock, "family", None) not in (socket.AF_INET, socket.AF_INET6):
            return
        values: list[tuple[int, int, int]] = [
            (socket.SOL_SOCKET, socket.SO_KEEPALIVE, int(self.keepalives))
        ]
        if self.keepalives:
            for name, value in (
                ("TCP_KEEPIDLE", self.idle),
                ("TCP_KEEPINTVL", self.interval),
                ("TCP_KEEPCNT", self.count),
            ):
                if value is not None and hasattr(socket, name):
                    values.append((socket.IPPROTO_TCP, getattr(socket, name), value))
        if self.user_timeout_ms is not None and hasattr(socket, "TCP_USER_TIMEOUT"):
            values.append((socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, self.user_timeout_ms))
        for level, option, value in values:
            with suppress(OSError):
                sock.setsockopt(level, option, value)


@dataclass(frozen=True)
class ConnectArgs:
    """What the pool passes to ``asyncpg.connect()`` for every new connection."""

    #: A ``postgresql://?key=value`` DSN carrying only the keywords asyncpg takes nowhere
    #: else (certificate files, TLS versions), or None. Explicit arguments override a DSN.
    #: It may hold ``sslpassword``: kept out of ``repr()``.
    dsn: str | None = field(repr=False)
    kwargs: dict[str, Any] = field(repr=False)
    socket_options: SocketOptions
    #: Secrets found among the options (sslpassword), for redaction.
    secrets: tuple[str, ...] = field(default=(), repr=False)


def _refuse(keyword: str, why: str) -> ConfigError:
    return ConfigError(
        f"dsn: the asyncpg backend cannot honour the libpq keyword {keyword!r}: {why}; "
        "remove it from the DSN or use the psycopg backend",
        field="dsn",
    )


def _non_negative_int(keyword: str, value: str) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        number = -1
    if number < 0:
        raise ConfigError(
            f"dsn: {keyword} must be a whole number of 0 or more", field="dsn"
        ) from None
    return number


def connect_args(config: PoolConfig, params: ConnectParams) -> ConnectArgs:
    """asyncpg connect arguments for ``params``; raises :class:`~pgconnector.ConfigError`
    for a DSN keyword that asyncpg cannot honour."""
    kwargs: dict[str, Any] = {
        "host": params.host,
        "port": params.port,
        "user": params.user,
        "database": params.database,
        "timeout": params.connect_timeout,
        "ssl": params.ssl_context if params.ssl_context is not None else params.sslmode or "prefer",
        # The backend tries the servers of a multi-host DSN itself (libpq's rules).
        "target_session_attrs": "any",
    }
    if params.password is not None:
        kwargs["password"] = params.password
    if config.pgbouncer:
        # No named (cached) prepared statements: behind transaction pooling the next
        # statement may run on a server session that never saw them. Uncached statements are
        # unnamed, and asyncpg sends their Parse/Describe with Flush, not Sync, so the Bind
        # that follows stays on the same server session (PgBouncer switches sessions only
        # at a ReadyForQuery outside a transaction).
        kwargs["statement_cache_size"] = 0

    settings = dict(params.server_settings)
    application_name = params.application_name
    dsn_query: dict[str, str] = {}
    keepalive: dict[str, int] = {}
    secrets: list[str] = []
    for keyword, value in params.options.items():
        if keyword in _DSN_ONLY:
            if params.ssl_context is not None:
                raise ConfigError(
                    f"dsn: {keyword} has no effect together with an ssl.SSLContext, which "
                    "alone decides how TLS is verified: configure the context instead "
                    "(load_verify_locations, load_cert_chain)",
                    field="dsn",
                )
            dsn_query[keyword] = value
            if keyword == "sslpassword" and value:
                secrets.append(value)
        elif keyword == "passfile":
            kwargs["passfile"] = value
        elif keyword == "krbsrvname":
            kwargs["krbsrvname"] = value
        elif keyword == "gsslib":
            if value not in ("gssapi", "sspi"):
                raise ConfigError("dsn: gsslib must be gssapi or sspi", field="dsn")
            kwargs["gsslib"] = value
        elif keyword == "sslnegotiation":
            if value not in ("postgres", "direct"):
                raise ConfigError("dsn: sslnegotiation must be postgres or direct", field="dsn")
            kwargs["direct_tls"] = value == "direct"
        elif keyword == "options":
            settings["options"] = value
        elif keyword == "fallback_application_name":
            if application_name is None:
                application_name = value
        elif keyword == "client_encoding":
            if value.strip().lower() not in _UTF8:
                raise _refuse(keyword, "asyncpg only speaks UTF8")
        elif keyword in _KEEPALIVE_KEYWORDS:
            keepalive[keyword] = _non_negative_int(keyword, value)
        elif keyword in _HARMLESS_VALUES:
            allowed = _HARMLESS_VALUES[keyword]
            if allowed is not None and value.strip().lower() not in allowed:
                raise _refuse(
                    keyword, f"asyncpg only supports {' or '.join(repr(v) for v in allowed)}"
                )
        else:
            raise _refuse(keyword, "asyncpg has no equivalent")

    if application_name is not None:
        # The explicit application_name wins over one in server_settings, as the keyword wins
        # over "-c application_name=…" in libpq's options.
        settings["application_name"] = application_name
    if settings:
        kwargs["server_settings"] = settings
    socket_options = SocketOptions(
        keepalives=keepalive.get("keepalives", 1) != 0,
        idle=keepalive.get("keepalives_idle") or None,
        interval=keepalive.get("keepalives_interval") or None,
        count=keepalive.get("keepalives_count") or None,
        user_timeout_ms=keepalive.get("tcp_user_timeout") or None,
    )
    dsn = "postgresql://?" + urlencode(dsn_query) if dsn_query else None
    return ConnectArgs(dsn, kwargs, socket_options, tuple(secrets))


def driver_message(exc: BaseException, secrets: Iterable[str | None]) -> str:
    """The driver error as one redacted line (named by its type when it has no message),
    with the server's SQLSTATE when it sent one (as the other backends' messages have it)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if (
        isinstance(exc, OSError)
        and not isinstance(exc, ssl.SSLError)  # its errno is OpenSSL's, its text the reason
        and exc.errno is not None
        and exc.errno > 0
    ):
        # asyncpg's "[Errno 111] Connect call failed ('127.0.0.1', 5432)" repeats the address
        # the message names already: the reason is "Connection refused".
        text = os.strerror(exc.errno)
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate and sqlstate not in text:
        text = f"{text} (SQLSTATE {sqlstate})"
    return redact(text, secrets)


def jittered_lifetime(max_lifetime: float, rng: random.Random | None = None) -> float:
    """How long one connection may live: ``max_lifetime`` less up to 10 %, so that a pool
    whose connections opened together does not retire them all at once (and never later
    than the configured maximum). 0 means no limit: infinity."""
    if max_lifetime <= 0:
        return math.inf
    return max_lifetime * (rng or random).uniform(0.9, 1.0)
