"""PoolConfig, the presets, and resolution of connection parameters (no I/O)."""

from __future__ import annotations

import getpass
import math
import os
import re
import ssl as _ssl
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import quote

from ._dsn import (
    BACKEND_NAME,
    LOAD_BALANCE_HOSTS,
    SSL_MODES,
    TARGET_SESSION_ATTRS,
    ParsedDSN,
    check_text,
    dsn_secrets,
    parse_dsn,
    parse_port,
    parse_seconds,
    scheme_backend,
    show,
)
from ._pgbouncer import check_config as check_pgbouncer_config
from ._pgpass import lookup_password
from ._redact import MASK, mask_secrets, redact, redact_dsn
from .errors import ConfigError

__all__ = [
    "PoolConfig",
    "ConnectParams",
    "production_pool_config",
    "development_pool_config",
    "test_pool_config",
]

RESET_MODES = ("transaction", "session")

# Debian, Ubuntu and their derivatives put the server's Unix socket here; where it does not
# exist, TCP to localhost is the default every driver understands.
_DEFAULT_SOCKET_DIR = "/var/run/postgresql"
_DEFAULT_PORT = 5432
_SETTING_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")


@dataclass(frozen=True)
class ConnectParams:
    """Fully resolved parameters for opening one server connection.

    Resolved by the core with libpq's precedence (explicit fields > DSN > DATABASE_URL >
    PG* variables > libpq defaults) so that every backend connects to the same server
    with the same credentials. Backends translate this into their driver's arguments and
    must not read PG* variables themselves.
    """

    host: str  # a hostname, an IP address, or a Unix-socket directory (starts with "/")
    port: int
    user: str
    password: str | None = field(repr=False)
    database: str
    sslmode: str | None  # one of SSL_MODES; None means libpq's default ("prefer")
    ssl_context: _ssl.SSLContext | None
    connect_timeout: float
    application_name: str | None
    server_settings: Mapping[str, str]
    options: Mapping[str, str]  # any other libpq keyword found in the DSN, passed through
    #: Every server to try, in the DSN's order: ``(host, port)`` pairs, the first being
    #: ``host``/``port``. More than one for a multi-host DSN (``host=a,b`` or ``//a:1,b:2/``).
    endpoints: tuple[tuple[str, int], ...] = ()
    #: libpq's ``target_session_attrs``: which of the servers is acceptable.
    target_session_attrs: str = "any"
    #: libpq's ``load_balance_hosts``: ``"random"`` tries the servers in a random order.
    load_balance_hosts: str = "disable"

    def __post_init__(self) -> None:
        if not self.endpoints:
            object.__setattr__(self, "endpoints", ((self.host, self.port),))


@dataclass(frozen=True)
class PoolConfig:
    """How to reach PostgreSQL and how to size and maintain the pool. Durations in seconds.

    Every value is checked when the config is built: a bad one raises
    :class:`~pgconnector.ConfigError` naming the field and the fix. The password never
    appears in ``repr()`` or ``str()`` — not even when it is only inside ``dsn``.
    """

    dsn: str | None = None
    host: str | None = None
    port: int | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    database: str | None = None
    backend: str = "auto"
    min_size: int = 1
    max_size: int = 10
    connect_timeout: float = 5.0
    idle_timeout: float = 30.0
    acquire_timeout: float = 30.0
    max_lifetime: float = 3600.0
    max_uses: int = 0
    allow_exit_on_idle: bool = False
    ping_after_idle: float | None = 1.0
    leak_detection_threshold: float | None = None
    target_session_attrs: str = "any"
    pgbouncer: bool = False
    reset_on_release: str = "transaction"
    ssl: str | _ssl.SSLContext | None = None
    application_name: str | None = None
    server_settings: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        try:
            _validate(self)
        except ConfigError as error:
            # Belt and braces: messages are written not to quote secrets, but a password may
            # coincide with any other value that a message does quote.
            raise ConfigError(redact(str(error), self._secrets()), field=error.field) from None

    def __repr__(self) -> str:
        secrets = self._secrets()
        parts = []
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name == "dsn" and isinstance(value, str):
                shown = repr(redact_dsn(value, secrets=secrets))
            elif item.name == "password" and value is not None:
                shown = repr(MASK)
            else:
                shown = repr(value)
            parts.append(f"{item.name}={shown}")
        return mask_secrets(f"{type(self).__name__}({', '.join(parts)})", secrets)

    def _secrets(self) -> list[str]:
        secrets = [self.password] if isinstance(self.password, str) else []
        if isinstance(self.dsn, str):
            secrets += dsn_secrets(self.dsn)
        return secrets

    @classmethod
    def from_dsn(cls, dsn: str, **overrides: Any) -> PoolConfig:
        """Build a config from a libpq URI or ``key=value`` string, plus field overrides.

        A ``postgresql+NAME://`` scheme selects the backend NAME unless ``backend=`` is
        given. Fields given as overrides win over what the DSN says.
        """
        _check_field_names(overrides)
        if not isinstance(dsn, str):
            raise ConfigError(
                f"dsn must be a str, got {type(dsn).__name__}: pass a libpq URI or key=value "
                "string",
                field="dsn",
            )
        values = dict(overrides)
        if "backend" not in values:
            backend = scheme_backend(dsn)
            if backend is not None:
                values["backend"] = backend
        return cls(dsn=dsn, **values)

    @classmethod
    def from_env(cls, **overrides: Any) -> PoolConfig:
        """Build a config from the environment, plus field overrides.

        ``DATABASE_URL`` is the DSN (unless ``dsn=`` is given) and ``PGCONNECTOR_BACKEND``
        the backend (unless ``backend=`` is given or the DSN scheme names one). The libpq
        ``PG*`` variables fill whatever is still missing each time :meth:`connect_params`
        runs; they are checked here already, so a bad ``PGPORT`` fails now.
        """
        _check_field_names(overrides)
        environ = os.environ
        values = dict(overrides)
        dsn_source = "dsn"
        if "dsn" not in values:
            url = environ.get("DATABASE_URL")
            if url:
                values["dsn"] = url
                dsn_source = "DATABASE_URL"
        dsn = values.get("dsn")
        if isinstance(dsn, str):
            # Parsed here so that errors name the variable the DSN came from.
            parse_dsn(dsn, dsn_source)
        if "backend" not in values:
            backend = scheme_backend(dsn, dsn_source) if isinstance(dsn, str) else None
            if backend is None:
                backend = _env_backend(environ)
            if backend is not None:
                values["backend"] = backend
        try:
            _PgEnv.read(environ)
        except ConfigError as error:
            secrets = [environ.get("PGPASSWORD")]
            raise ConfigError(redact(str(error), secrets), field=error.field) from None
        return cls(**values)

    @property
    def dsn_backend(self) -> str | None:
        """The backend named by a ``postgresql+NAME://`` DSN scheme, else None."""
        return None if self.dsn is None else scheme_backend(self.dsn)

    def connect_params(self) -> ConnectParams:
        """Resolve host/port/user/... now (reads PG* variables at call time).

        Each parameter comes from the first source that has it: the explicit field, the
        DSN, the ``PG*`` variable, then libpq's default (the ``/var/run/postgresql`` socket
        directory when it exists, else ``localhost``; port 5432; the OS user name; a
        database named like the user).

        ``connect_timeout`` is the exception: the field always has a value, so a DSN's
        ``connect_timeout`` (or ``PGCONNECT_TIMEOUT``) applies only while the field is left
        at its default of 5.0.

        Raises :class:`~pgconnector.ConfigError` naming the variable when a ``PG*`` value is
        invalid.
        """
        try:
            return self._resolve()
        except ConfigError as error:
            secrets = [*self._secrets(), os.environ.get("PGPASSWORD")]
            raise ConfigError(redact(str(error), secrets), field=error.field) from None

    def _resolve(self) -> ConnectParams:
        parsed = ParsedDSN() if self.dsn is None else parse_dsn(self.dsn)
        env = _PgEnv.read(os.environ)

        # libpq takes the host list and the port list each from the first source that has
        # one, then pairs them: one port for every host, or a single port for all of them.
        hosts = (
            _split(self.host)
            or list(parsed.hosts)
            or _split(env.host)
            or [""]
        )
        ports: list[int | None]
        if self.port is not None:
            ports = [self.port]
        else:
            # A URI whose hosts carry no port gives no port list at all, as in libpq.
            dsn_ports = list(parsed.ports) if any(parsed.ports) else []
            env_ports = list(env.ports) if any(env.ports) else []
            ports = dsn_ports or env_ports or [None]
        if len(ports) not in (1, len(hosts)):
            raise ConfigError(
                f"{len(ports)} ports for {len(hosts)} hosts: give one port for every host, or a "
                "single port for all of them",
                field="port",
            )
        if len(ports) == 1:
            ports = ports * len(hosts)
        default_host = _default_host()
        endpoints = tuple(
            (entry or default_host, number or _DEFAULT_PORT)
            for entry, number in zip(hosts, ports, strict=True)
        )
        host, port = endpoints[0]
        if len(endpoints) > 1 and "hostaddr" in parsed.options:
            raise ConfigError(
                "hostaddr cannot be combined with several hosts: list the addresses in host= "
                "instead",
                field="dsn",
            )
        target_session_attrs = self.target_session_attrs
        if target_session_attrs == _DEFAULTS["target_session_attrs"]:
            target_session_attrs = (
                parsed.target_session_attrs or env.target_session_attrs or target_session_attrs
            )
        load_balance_hosts = parsed.load_balance_hosts or env.load_balance_hosts or "disable"
        user = self.user or parsed.user or env.user or _os_user()
        password = self.password if self.password is not None else parsed.password
        if password is None:
            password = env.password
        database = self.database or parsed.database or env.database or user
        if password is None:
            password = lookup_password(host, port, database, user, parsed.options.get("passfile"))

        sslmode: str | None
        context: _ssl.SSLContext | None = None
        if isinstance(self.ssl, _ssl.SSLContext):
            sslmode, context = None, self.ssl
        else:
            sslmode = self.ssl or parsed.sslmode or env.sslmode

        connect_timeout = self.connect_timeout
        if connect_timeout == _DEFAULTS["connect_timeout"]:
            connect_timeout = parsed.connect_timeout or env.connect_timeout or connect_timeout

        application_name = self.application_name
        if application_name is None:
            application_name = parsed.application_name or env.application_name

        return ConnectParams(
            host=host,
            port=port,
            user=user,
            password=password,
            database=database,
            sslmode=sslmode,
            ssl_context=context,
            connect_timeout=connect_timeout,
            application_name=application_name,
            server_settings={**parsed.server_settings, **(self.server_settings or {})},
            options=dict(parsed.options),
            endpoints=endpoints,
            target_session_attrs=target_session_attrs,
            load_balance_hosts=load_balance_hosts,
        )

    def safe_dsn(self) -> str:
        """The DSN with the password replaced by ``***`` (for logs and messages).

        Without a DSN, a ``postgresql://user@host:port/database`` description of the
        resolved target is returned instead. Never raises.
        """
        secrets = self._secrets()
        if self.dsn is not None:
            return redact_dsn(self.dsn, secrets=secrets)
        user: str | None
        host: str | None
        port: int | None
        database: str | None
        try:
            params = self.connect_params()
            user, host, port, database = params.user, params.host, params.port, params.database
        except ConfigError:
            user, host, port, database = self.user, self.host, self.port, self.database
        text = "postgresql://"
        if user:
            text += quote(user, safe="") + "@"
        if host:
            text += f"[{host}]" if ":" in host else quote(host, safe="")
        if port:
            text += f":{port}"
        if database:
            text += "/" + quote(database, safe="")
        return redact(text, secrets)


_DEFAULTS: dict[str, Any] = {item.name: item.default for item in fields(PoolConfig)}


@dataclass(frozen=True)
class _PgEnv:
    """The libpq environment variables pgconnector honours, validated."""

    host: str | None = None
    ports: tuple[int | None, ...] = ()
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    database: str | None = None
    sslmode: str | None = None
    application_name: str | None = None
    connect_timeout: float | None = None
    target_session_attrs: str | None = None
    load_balance_hosts: str | None = None

    @classmethod
    def read(cls, environ: Mapping[str, str]) -> _PgEnv:
        def get(name: str, field: str) -> str | None:
            value = environ.get(name)
            if not value:  # set but empty means unset, as for libpq's defaults
                return None
            check_text(value, name, field=field)
            return value

        numbers: tuple[int | None, ...] = ()
        ports = get("PGPORT", "port")
        if ports is not None:
            # PGPORT may list one port per PGHOST entry; all must be valid.
            numbers = tuple(
                parse_port(p, "PGPORT") if p.strip() else None for p in ports.split(",")
            )
        target = get("PGTARGETSESSIONATTRS", "target_session_attrs")
        if target is not None and target not in TARGET_SESSION_ATTRS:
            raise ConfigError(
                f"PGTARGETSESSIONATTRS={show(target)} is not valid: use one of "
                f"{', '.join(TARGET_SESSION_ATTRS)}",
                field="target_session_attrs",
            )
        balance = get("PGLOADBALANCEHOSTS", "dsn")
        if balance is not None and balance not in LOAD_BALANCE_HOSTS:
            raise ConfigError(
                f"PGLOADBALANCEHOSTS={show(balance)} is not valid: use one of "
                f"{', '.join(LOAD_BALANCE_HOSTS)}",
                field="dsn",
            )
        sslmode = get("PGSSLMODE", "ssl")
        if sslmode is not None and sslmode not in SSL_MODES:
            raise ConfigError(
                f"PGSSLMODE={show(sslmode)} is not an sslmode: use one of {', '.join(SSL_MODES)}",
                field="ssl",
            )
        timeout = get("PGCONNECT_TIMEOUT", "connect_timeout")
        return cls(
            host=get("PGHOST", "host"),
            ports=numbers,
            user=get("PGUSER", "user"),
            password=get("PGPASSWORD", "password"),
            database=get("PGDATABASE", "database"),
            sslmode=sslmode,
            application_name=get("PGAPPNAME", "application_name"),
            connect_timeout=(
                None if timeout is None else parse_seconds(timeout, "PGCONNECT_TIMEOUT")
            ),
            target_session_attrs=target,
            load_balance_hosts=balance,
        )


def _split(hosts: str | None) -> list[str]:
    """A libpq comma-separated host list (an empty entry means the default host); [] when
    not given."""
    if not hosts:
        return []
    return hosts.split(",")


def _default_host() -> str:
    return _DEFAULT_SOCKET_DIR if os.path.isdir(_DEFAULT_SOCKET_DIR) else "localhost"


def _os_user() -> str:
    try:
        name = getpass.getuser()
    except Exception:  # KeyError or OSError: e.g. a container uid without a passwd entry
        raise ConfigError(
            "no user name given and the OS user name could not be determined: set user=, "
            "put a user in the DSN, or set PGUSER",
            field="user",
        ) from None
    check_text(name, "the OS user name (from LOGNAME, USER or the password database)", field="user")
    return name


def _env_backend(environ: Mapping[str, str]) -> str | None:
    raw = environ.get("PGCONNECTOR_BACKEND", "")
    name = raw.strip().lower()
    if not name:
        return None
    check_text(name, "PGCONNECTOR_BACKEND", field="backend")
    if not BACKEND_NAME.fullmatch(name):
        raise ConfigError(
            f"PGCONNECTOR_BACKEND={show(raw)} is not a backend name: use e.g. psycopg, "
            "asyncpg, pg8000 or auto",
            field="backend",
        )
    return name


def _check_field_names(overrides: Mapping[str, Any]) -> None:
    unknown = sorted(set(overrides) - _DEFAULTS.keys())
    if unknown:
        raise ConfigError(
            f"unknown PoolConfig field{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(show(name) for name in unknown)}: valid fields are "
            f"{', '.join(_DEFAULTS)}",
            field=unknown[0],
        )


# --- validation -------------------------------------------------------------------------------


def _validate(cfg: PoolConfig) -> None:
    _text(cfg, "dsn", empty_ok=True)
    _text(cfg, "host")
    if cfg.port is not None:
        _integer(cfg, "port", 1, "use a port number between 1 and 65535 or None")
        if cfg.port > 65535:
            raise ConfigError(
                f"port ({_number(cfg.port)}) must not exceed 65535: use a port number between 1 "
                "and 65535",
                field="port",
            )
    _text(cfg, "user")
    _text(cfg, "password", empty_ok=True)
    _text(cfg, "database")
    _backend(cfg.backend)
    _integer(cfg, "min_size", 0, "use 0 or more")
    _integer(cfg, "max_size", 1, "use 1 or more")
    if cfg.min_size > cfg.max_size:
        raise ConfigError(
            f"min_size ({_number(cfg.min_size)}) must not exceed max_size "
            f"({_number(cfg.max_size)}): "
            "raise max_size or lower min_size",
            field="min_size",
        )
    _seconds(cfg, "connect_timeout", positive=True)
    _seconds(cfg, "idle_timeout")
    _seconds(cfg, "acquire_timeout")
    _seconds(cfg, "max_lifetime")
    _integer(cfg, "max_uses", 0, "use 0 for no limit")
    _boolean(cfg, "allow_exit_on_idle")
    _seconds(cfg, "ping_after_idle", optional=True)
    _seconds(cfg, "leak_detection_threshold", positive=True, optional=True)
    _choice(cfg, "target_session_attrs", TARGET_SESSION_ATTRS)
    _boolean(cfg, "pgbouncer")
    _choice(cfg, "reset_on_release", RESET_MODES)
    if not isinstance(cfg.ssl, _ssl.SSLContext):
        _choice(cfg, "ssl", SSL_MODES, optional=True, extra="an ssl.SSLContext or None")
    _text(cfg, "application_name", empty_ok=True)
    _server_settings(cfg.server_settings)

    if cfg.dsn is not None:
        parse_dsn(cfg.dsn)
    if cfg.pgbouncer:
        parsed = ParsedDSN() if cfg.dsn is None else parse_dsn(cfg.dsn)
        check_pgbouncer_config(
            reset_on_release=cfg.reset_on_release,
            server_settings={**parsed.server_settings, **(cfg.server_settings or {})},
            options=parsed.options,
        )


def _type_error(name: str, value: object, expected: str) -> ConfigError:
    return ConfigError(f"{name} must be {expected}, got {type(value).__name__}", field=name)


def _number(value: object) -> str:
    """repr() of a number, shortened; for a huge int repr() itself raises (Python 3.11+)."""
    try:
        text = repr(value)
    except ValueError:
        return "a number too large to print"
    return text if len(text) <= 30 else text[:30] + "…"


def _text(cfg: PoolConfig, name: str, *, empty_ok: bool = False) -> None:
    value = getattr(cfg, name)
    if value is None:
        return
    if not isinstance(value, str):
        raise _type_error(name, value, "a str or None")
    check_text(value, name, field=name)
    if not value and not empty_ok:
        raise ConfigError(
            f"{name} must not be empty: pass None to fall back to the DSN, the PG* variables "
            "or the default",
            field=name,
        )


def _integer(cfg: PoolConfig, name: str, minimum: int, fix: str) -> None:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _type_error(name, value, "an int")
    if value < minimum:
        raise ConfigError(
            f"{name} ({_number(value)}) must be at least {minimum}: {fix}", field=name
        )


def _seconds(cfg: PoolConfig, name: str, *, positive: bool = False, optional: bool = False) -> None:
    value = getattr(cfg, name)
    if value is None and optional:
        return
    expected = "a number of seconds" + (" or None" if optional else "")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _type_error(name, value, expected)
    try:
        seconds = float(value)
    except OverflowError:
        seconds = math.inf
    if not math.isfinite(seconds):
        raise ConfigError(
            f"{name} ({_number(value)}) must be a finite number of seconds", field=name
        )
    if seconds < 0 or (positive and seconds == 0):
        bound = "greater than 0" if positive else "at least 0"
        raise ConfigError(
            f"{name} ({_number(value)}) must be {bound}: use a number of seconds", field=name
        )
    # Store a float, so that 5 and 5.0 behave (and repr) the same.
    object.__setattr__(cfg, name, seconds)


def _boolean(cfg: PoolConfig, name: str) -> None:
    value = getattr(cfg, name)
    if not isinstance(value, bool):
        raise _type_error(name, value, "True or False")


def _choice(
    cfg: PoolConfig,
    name: str,
    choices: tuple[str, ...],
    *,
    optional: bool = False,
    extra: str | None = None,
) -> None:
    value = getattr(cfg, name)
    if value is None and optional:
        return
    allowed = ", ".join(choices) + (f", or {extra}" if extra else "")
    if not isinstance(value, str):
        raise _type_error(name, value, f"one of {allowed}")
    check_text(value, name, field=name)
    if value not in choices:
        raise ConfigError(f"{name}={show(value)} is not valid: use one of {allowed}", field=name)


def _backend(value: object) -> None:
    if not isinstance(value, str):
        raise _type_error("backend", value, "a str")
    check_text(value, "backend", field="backend")
    if not BACKEND_NAME.fullmatch(value):
        raise ConfigError(
            f"backend={show(value)} is not a backend name: use lower-case letters, digits and "
            "'_', e.g. 'psycopg', 'asyncpg', 'pg8000' or 'auto'",
            field="backend",
        )


def _server_settings(value: object) -> None:
    if value is None:
        return
    if not isinstance(value, Mapping):
        raise _type_error("server_settings", value, "a mapping of str to str, or None")
    for key, setting in value.items():
        if not isinstance(key, str) or not isinstance(setting, str):
            raise ConfigError(
                f"server_settings must map str to str, got {type(key).__name__} -> "
                f"{type(setting).__name__}: convert values with str()",
                field="server_settings",
            )
        check_text(key, "a server_settings name", field="server_settings")
        check_text(setting, f"server_settings[{key!r}]", field="server_settings")
        if not _SETTING_NAME.fullmatch(key):
            raise ConfigError(
                f"server_settings: {show(key)} is not a setting name: use names like "
                "'search_path' or 'myext.option'",
                field="server_settings",
            )


# --- presets ----------------------------------------------------------------------------------


def _preset(defaults: dict[str, Any], overrides: dict[str, Any]) -> PoolConfig:
    _check_field_names(overrides)
    return PoolConfig(**{**defaults, **overrides})


def production_pool_config(**overrides: Any) -> PoolConfig:
    """A config for production: 2..20 connections, 5 s to connect, 30 s idle timeout.

    Keyword arguments override any field, the preset's own values included.
    """
    return _preset(
        {
            "min_size": 2,
            "max_size": 20,
            "connect_timeout": 5.0,
            "idle_timeout": 30.0,
            "allow_exit_on_idle": False,
        },
        overrides,
    )


def development_pool_config(**overrides: Any) -> PoolConfig:
    """A config for local development: 1..5 connections, 5 s to connect, 10 s idle timeout.

    Keyword arguments override any field, the preset's own values included.
    """
    return _preset(
        {"min_size": 1, "max_size": 5, "connect_timeout": 5.0, "idle_timeout": 10.0}, overrides
    )


def test_pool_config(**overrides: Any) -> PoolConfig:
    """A config for test suites: 0..2 connections, 2 s to connect, 1 s idle timeout.

    Keyword arguments override any field, the preset's own values included.
    """
    return _preset(
        {"min_size": 0, "max_size": 2, "connect_timeout": 2.0, "idle_timeout": 1.0}, overrides
    )


# Its name starts with "test_", and pytest would otherwise collect it wherever it is imported.
test_pool_config.__test__ = False  # type: ignore[attr-defined]
