"""Parse libpq connection strings without libpq.

Both spellings libpq accepts are understood:

* URIs: ``postgresql://user:password@host:port,host2:port2/dbname?key=value&…`` (also
  ``postgres://`` and ``postgresql+NAME://``, where NAME picks a pgconnector backend);
* ``key=value`` strings: ``host=db port=5432 password='a b\\'c'``.

Everything is validated here, once, so that a malformed DSN is a :class:`ConfigError` when
the config is built rather than a driver error at connect time. Messages never repeat a
password, nor any fragment of the input that might be part of one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from .errors import ConfigError

__all__ = [
    "SSL_MODES",
    "TARGET_SESSION_ATTRS",
    "LOAD_BALANCE_HOSTS",
    "BACKEND_NAME",
    "ParsedDSN",
    "parse_dsn",
    "scheme_backend",
    "dsn_secrets",
    "check_text",
    "parse_port",
    "parse_seconds",
    "parse_pg_options",
    "show",
]

SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
TARGET_SESSION_ATTRS = ("any", "read-write", "read-only", "primary", "standby", "prefer-standby")
LOAD_BALANCE_HOSTS = ("disable", "random")

BACKEND_NAME = re.compile(r"[a-z0-9_]+")

_POSTGRES_SCHEME = re.compile(r"(?i)(postgres(?:ql)?)(?:\+(?P<backend>[^:/?@]*))?://")
_ANY_SCHEME = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://")
_WHITESPACE = " \t\n\r\f\v"  # libpq splits on ASCII whitespace only
_PORT = re.compile(r"0*[0-9]{1,5}")
_SECONDS = re.compile(r"[0-9]{1,12}(?:\.[0-9]*)?|\.[0-9]+")
_SETTING_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
# libpq's keywords are all of this shape; the redaction patterns rely on it too.
_KEYWORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# libpq's keywords. Only used to decide whether a token may be quoted back in an error
# message: any other token could be the tail of a password that contained a space or "&".
_KNOWN_KEYWORDS = frozenset(
    {
        "host",
        "hostaddr",
        "port",
        "dbname",
        "user",
        "password",
        "passfile",
        "require_auth",
        "channel_binding",
        "connect_timeout",
        "client_encoding",
        "options",
        "application_name",
        "fallback_application_name",
        "keepalives",
        "keepalives_idle",
        "keepalives_interval",
        "keepalives_count",
        "tcp_user_timeout",
        "replication",
        "sslmode",
        "sslnegotiation",
        "sslcompression",
        "sslcert",
        "sslkey",
        "sslcertmode",
        "sslpassword",
        "sslrootcert",
        "sslcrl",
        "sslcrldir",
        "sslsni",
        "requirepeer",
        "ssl_min_protocol_version",
        "ssl_max_protocol_version",
        "gssencmode",
        "krbsrvname",
        "gsslib",
        "gssdelegation",
        "service",
        "target_session_attrs",
        "load_balance_hosts",
        "ssl",
    }
)
# Keywords whose values must not be echoed or shown.
_SECRET_KEYWORDS = frozenset({"password", "sslpassword"})
# Keywords interpreted here; every other one is passed through in ParsedDSN.options.
_MAPPED_KEYWORDS = frozenset(
    {
        "host",
        "port",
        "user",
        "password",
        "dbname",
        "sslmode",
        "connect_timeout",
        "application_name",
        "target_session_attrs",
        "load_balance_hosts",
    }
)


@dataclass(frozen=True)
class ParsedDSN:
    """What a DSN says, validated. ``None`` / empty means "not given": fall back further."""

    # Multi-host DSNs are parsed and kept whole; an empty host means the default for its slot.
    hosts: tuple[str, ...] = ()
    # Empty, one port for every host, or one per host; None means the default port.
    ports: tuple[int | None, ...] = ()
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    database: str | None = None
    sslmode: str | None = None
    connect_timeout: float | None = None
    application_name: str | None = None
    target_session_attrs: str | None = None
    load_balance_hosts: str | None = None
    # "-c name=value" settings found in the libpq ``options`` keyword.
    server_settings: Mapping[str, str] = field(default_factory=dict)
    # Every other keyword, verbatim (including ``options`` when it is not just settings).
    options: Mapping[str, str] = field(default_factory=dict)
    backend: str | None = None

    @property
    def first_host(self) -> str | None:
        return self.hosts[0] if self.hosts and self.hosts[0] else None

    @property
    def first_port(self) -> int | None:
        return self.ports[0] if self.ports else None


def check_text(value: str, what: str, *, field: str | None) -> None:
    """Reject a NUL byte or a lone surrogate, which no server or driver can carry.

    The message never repeats *value*, which may be a password.
    """
    if "\x00" in value:
        raise ConfigError(f"{what} contains a NUL byte: remove it", field=field)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(
            f"{what} is not valid Unicode (it contains a lone surrogate, e.g. from undecodable "
            "bytes): fix its encoding",
            field=field,
        ) from None


def show(value: str, limit: int = 60) -> str:
    """repr() of a user value, shortened so one bad value cannot flood a message."""
    if len(value) > limit:
        return repr(value[:limit]) + "…"
    return repr(value)


def parse_port(
    text: str, what: str, *, field: str | None = "port", echo: bool = True, hint: str = ""
) -> int:
    """Parse a decimal port number 1..65535 (surrounding whitespace allowed, as in libpq)."""
    stripped = text.strip(_WHITESPACE)
    if _PORT.fullmatch(stripped):
        port = int(stripped)
        if 1 <= port <= 65535:
            return port
    shown = f"={show(text)}" if echo else ""
    raise ConfigError(
        f"{what}{shown} is not a port number: use an integer between 1 and 65535{hint}",
        field=field,
    )


def parse_seconds(text: str, what: str, *, field: str | None = "connect_timeout") -> float:
    """Parse a positive number of seconds ("10", "2.5")."""
    stripped = text.strip(_WHITESPACE)
    if _SECONDS.fullmatch(stripped):
        seconds = float(stripped)
        if seconds > 0 and math.isfinite(seconds):
            return seconds
    raise ConfigError(
        f"{what}={show(text)} is not a positive number of seconds: use e.g. 10 "
        "(pgconnector has no 'wait forever' setting)",
        field=field,
    )


def _choice(text: str, what: str, choices: tuple[str, ...], field: str) -> str:
    if text in choices:
        return text
    raise ConfigError(
        f"{what}={show(text)} is not valid: use one of {', '.join(choices)}", field=field
    )


def parse_pg_options(text: str) -> dict[str, str] | None:
    """Read ``-c name=value`` / ``--name=value`` settings from a libpq ``options`` value.

    Returns None when the value holds anything else, so that it can be passed on verbatim.
    """
    tokens: list[str] = []
    current: list[str] = []
    in_token = False
    chars = iter(text)
    for char in chars:
        if char == "\\":
            current.append(next(chars, ""))
            in_token = True
        elif char in _WHITESPACE:
            if in_token:
                tokens.append("".join(current))
                current, in_token = [], False
        else:
            current.append(char)
            in_token = True
    if in_token:
        tokens.append("".join(current))

    settings: dict[str, str] = {}
    position = 0
    while position < len(tokens):
        token = tokens[position]
        if token == "-c":
            if position + 1 == len(tokens):
                return None
            assignment = tokens[position + 1]
            position += 2
        elif token.startswith(("-c", "--")):
            assignment = token[2:]
            position += 1
        else:
            return None
        name, equals, value = assignment.partition("=")
        if not equals or not _SETTING_NAME.fullmatch(name):
            return None
        # The server reads "-" in a setting name given this way as "_".
        settings[name.replace("-", "_")] = value
    return settings


def scheme_backend(dsn: str, source: str = "dsn") -> str | None:
    """The NAME of a ``postgresql+NAME://`` / ``postgres+NAME://`` scheme, lower-cased."""
    match = _POSTGRES_SCHEME.match(dsn.strip(_WHITESPACE))
    if match is None or match.group("backend") is None:
        return None
    name = match.group("backend").lower()
    if not BACKEND_NAME.fullmatch(name):
        raise ConfigError(
            f"{source}: {show(match.group('backend'))} in the scheme is not a backend name: "
            "use postgresql+psycopg://, postgresql+asyncpg://, postgresql+pg8000:// "
            "or plain postgresql://",
            field="dsn",
        )
    return name


def dsn_secrets(dsn: str) -> list[str]:
    """Passwords held by *dsn*, for redaction; empty when it does not parse."""
    try:
        parsed = parse_dsn(dsn)
    except ConfigError:
        return []
    secrets = [parsed.password, parsed.options.get("sslpassword")]
    return [secret for secret in secrets if secret]


def parse_dsn(dsn: str, source: str = "dsn") -> ParsedDSN:
    """Parse and validate a DSN. *source* names it in error messages ("dsn", "DATABASE_URL")."""
    if not isinstance(dsn, str):
        raise ConfigError(
            f"{source} must be a str, got {type(dsn).__name__}: pass a libpq URI or "
            "key=value string",
            field="dsn",
        )
    check_text(dsn, source, field="dsn")
    # Surrounding whitespace (a newline at the end of a secret file, say) is never part of a
    # URI; key=value parsing skips it anyway.
    stripped = dsn.strip(_WHITESPACE)
    if _POSTGRES_SCHEME.match(stripped):
        return _Uri(stripped, source).parse()
    other = _ANY_SCHEME.match(stripped)
    if other is not None:
        raise ConfigError(
            f"{source}: unsupported URI scheme {show(other.group('scheme'))}: use postgresql:// "
            "or postgres:// (optionally postgresql+BACKEND://), or a key=value string",
            field="dsn",
        )
    return _interpret(_parse_key_value(dsn, source), None, None, None, source, echo_ports=True)


def _parse_key_value(dsn: str, source: str) -> dict[str, str]:
    params: dict[str, str] = {}
    position, end = 0, len(dsn)
    while True:
        while position < end and dsn[position] in _WHITESPACE:
            position += 1
        if position == end:
            return params
        start = position
        while position < end and dsn[position] != "=" and dsn[position] not in _WHITESPACE:
            position += 1
        keyword = dsn[start:position]
        while position < end and dsn[position] in _WHITESPACE:
            position += 1
        if position == end or dsn[position] != "=":
            if keyword in _KNOWN_KEYWORDS:
                where = f"after {keyword!r}"
            else:  # possibly the tail of an unquoted password with a space in it
                where = f"after the word at character {start + 1}"
            raise ConfigError(
                f"{source}: missing '=' {where}: write key=value pairs, and quote values "
                "that contain spaces: application_name='my app'",
                field="dsn",
            )
        if not keyword:
            raise ConfigError(
                f"{source}: '=' without a keyword at character {position + 1}: write "
                "key=value pairs",
                field="dsn",
            )
        position += 1
        while position < end and dsn[position] in _WHITESPACE:
            position += 1
        value: list[str] = []
        if position < end and dsn[position] == "'":
            position += 1
            while True:
                if position >= end:
                    raise ConfigError(
                        f"{source}: unterminated quoted value for {_name(keyword)}: close the "
                        "quote, and write a quote inside a value as \\'",
                        field="dsn",
                    )
                char = dsn[position]
                if char == "\\" and position + 1 < end:
                    value.append(dsn[position + 1])
                    position += 2
                elif char == "'":
                    position += 1
                    break
                else:
                    value.append(char)
                    position += 1
        else:
            while position < end and dsn[position] not in _WHITESPACE:
                if dsn[position] == "\\" and position + 1 < end:
                    position += 1
                value.append(dsn[position])
                position += 1
        params[keyword] = "".join(value)


def _name(keyword: str) -> str:
    return repr(keyword) if keyword in _KNOWN_KEYWORDS else "a keyword"


class _Uri:
    """One URI parse; holds the input so errors can tell safe fragments from suspect ones."""

    def __init__(self, dsn: str, source: str) -> None:
        self.dsn = dsn
        self.source = source

    def fail(self, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {message}", field="dsn")

    def decode(self, text: str, what: str, *, secret: bool = False) -> str:
        """Percent-decode; the decoded bytes must be UTF-8 and must not include NUL."""
        if "%" not in text:
            return text
        shown = "" if secret else f" ({show(text)})"
        raw = bytearray()
        position = 0
        while position < len(text):
            char = text[position]
            if char == "%":
                digits = text[position + 1 : position + 3]
                if len(digits) != 2 or not all(d in "0123456789abcdefABCDEF" for d in digits):
                    raise self.fail(
                        f"invalid percent-encoding in the {what}{shown}: write a literal '%' as %25"
                    )
                if digits == "00":
                    raise self.fail(f"the {what} contains %00 (a NUL byte): remove it")
                raw.append(int(digits, 16))
                position += 3
            else:
                raw += char.encode("utf-8")
                position += 1
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(
                f"the {what}{shown} is not valid UTF-8 once percent-decoded: "
                "percent-encode the UTF-8 bytes of each character"
            ) from None

    def parse(self) -> ParsedDSN:
        dsn = self.dsn
        scheme = _POSTGRES_SCHEME.match(dsn)
        assert scheme is not None
        backend = scheme_backend(dsn, self.source)
        rest = dsn[scheme.end() :]

        # RFC 3986: the authority ends at the first "/" or "?", so a password holding either
        # must be percent-encoded. An unencoded "@" is tolerated (the last "@" ends userinfo).
        authority_end = len(rest)
        for delimiter in "/?":
            found = rest.find(delimiter)
            if found != -1:
                authority_end = min(authority_end, found)
        authority, tail = rest[:authority_end], rest[authority_end:]
        # An "@" further on suggests a password with an unencoded "/" or "?": the host and
        # port parsed below may then be pieces of that password, so they are never echoed.
        suspect = "@" in tail

        params: dict[str, str] = {}
        userinfo, at, hostspec = authority.rpartition("@")
        if at:
            user, colon, password = userinfo.partition(":")
            params["user"] = self.decode(user, "user name")
            if colon:
                params["password"] = self.decode(password, "password", secret=True)

        hosts, ports = self.parse_hosts(hostspec, suspect)

        if tail.startswith("/"):
            path, _, query = tail[1:].partition("?")
            params["dbname"] = self.decode(path, "database name", secret=suspect)
        else:
            query = tail[1:]  # tail is empty or starts with "?"

        for pair in query.split("&"):
            if not pair:
                continue
            raw_key, equals, raw_value = pair.partition("=")
            key = self.decode(raw_key, "query parameter name", secret=True)
            if not key:
                raise self.fail("a query parameter has an empty name: write key=value")
            if not equals:
                which = repr(key) if key in _KNOWN_KEYWORDS else "a query parameter"
                raise self.fail(
                    f"{which} has no value: write key=value, and percent-encode '&' inside "
                    "values as %26"
                )
            params[key] = self.decode(
                raw_value, f"value of {_name(key)}", secret=key in _SECRET_KEYWORDS
            )
        if "ssl" in params:
            # libpq accepts the JDBC spelling ssl=true in URIs as sslmode=require.
            if params["ssl"] != "true":
                raise self.fail(
                    f"ssl={show(params['ssl'])} is not valid: use ssl=true or sslmode=MODE"
                )
            del params["ssl"]
            params.setdefault("sslmode", "require")

        return _interpret(params, hosts, ports, backend, self.source, echo_ports=not suspect)

    def parse_hosts(self, hostspec: str, suspect: bool) -> tuple[list[str], list[str]]:
        hosts: list[str] = []
        ports: list[str] = []
        if not hostspec:
            return hosts, ports
        for entry in hostspec.split(","):
            if entry.startswith("["):
                close = entry.find("]")
                if close == -1:
                    raise self.fail("unterminated '[' in an IPv6 host: write [::1]:5432")
                host, after = entry[1:close], entry[close + 1 :]
                if after and not after.startswith(":"):
                    raise self.fail(
                        "unexpected text after ']' in an IPv6 host: write [::1] or [::1]:5432"
                    )
                port = after[1:]
            else:
                if entry.count(":") > 1:
                    raise self.fail(
                        "a host contains several ':': put IPv6 addresses in brackets, "
                        "e.g. postgresql://[::1]:5432/db, and percent-encode '/' and '?' in "
                        "a password"
                    )
                host, _, port = entry.partition(":")
            hosts.append(self.decode(host, "host", secret=suspect))
            ports.append(self.decode(port, "port", secret=suspect))
        return hosts, ports


def _interpret(
    params: dict[str, str],
    hosts: list[str] | None,
    ports: list[str] | None,
    backend: str | None,
    source: str,
    *,
    echo_ports: bool,
) -> ParsedDSN:
    """Validate the keyword values and sort them into a ParsedDSN."""
    for key, value in params.items():
        if not _KEYWORD.fullmatch(key):
            # Not quoted back: it may be the tail of a value that held an unencoded "&" or an
            # unquoted space, such as a password.
            raise ConfigError(
                f"{source}: a keyword is not letters, digits and '_': percent-encode '&' in URI "
                "values (%26) and quote key=value values that contain spaces",
                field="dsn",
            )
        check_text(value, f"{source}: the value of {_name(key)}", field="dsn")

    # Keywords given in a URI query override the authority part, as in libpq.
    if "host" in params:
        hosts = params["host"].split(",") if params["host"] else []
    if "port" in params:
        ports = params["port"].split(",") if params["port"] else []
    hosts, ports = hosts or [], ports or []
    # Checked here when the DSN lists hosts; a port list meant for hosts given elsewhere (the
    # host field, PGHOST) is checked once they are known.
    n_hosts = len(hosts)
    if hosts and len(ports) not in (0, 1, n_hosts):
        raise ConfigError(
            f"{source}: {len(ports)} ports for {n_hosts} hosts: give one port for every "
            "host, or a single port for all of them",
            field="dsn",
        )
    parsed_ports: list[int | None] = []
    for port in ports:
        if port.strip(_WHITESPACE):
            parsed_ports.append(
                parse_port(
                    port,
                    f"{source}: port",
                    field="dsn",
                    echo=echo_ports,
                    hint="" if echo_ports else " (and percent-encode '/' and '?' in a password)",
                )
            )
        else:
            parsed_ports.append(None)

    def get(key: str) -> str | None:
        return params.get(key) or None  # an empty value means "not given", as in libpq

    sslmode = get("sslmode")
    if sslmode is not None:
        _choice(sslmode, f"{source}: sslmode", SSL_MODES, "dsn")
    target = get("target_session_attrs")
    if target is not None:
        _choice(target, f"{source}: target_session_attrs", TARGET_SESSION_ATTRS, "dsn")
    balance = get("load_balance_hosts")
    if balance is not None:
        _choice(balance, f"{source}: load_balance_hosts", LOAD_BALANCE_HOSTS, "dsn")
    timeout = get("connect_timeout")

    options = {key: value for key, value in params.items() if key not in _MAPPED_KEYWORDS}
    settings: dict[str, str] = {}
    if "options" in options:
        found = parse_pg_options(options["options"])
        if found is not None:
            settings = found
            del options["options"]

    return ParsedDSN(
        hosts=tuple(hosts),
        ports=tuple(parsed_ports),
        user=get("user"),
        password=get("password"),
        database=get("dbname"),
        sslmode=sslmode,
        connect_timeout=(
            None
            if timeout is None
            else parse_seconds(timeout, f"{source}: connect_timeout", field="dsn")
        ),
        application_name=get("application_name"),
        target_session_attrs=target,
        load_balance_hosts=balance,
        server_settings=settings,
        options=options,
        backend=backend,
    )
