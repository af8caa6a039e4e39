"""PoolConfig: validation, DSN parsing, precedence of sources, presets and redaction.

Pure logic: no server. Every test starts from an environment without PG* variables.
"""

from __future__ import annotations

import dataclasses
import ssl
from pathlib import Path
from typing import Any

import pytest

from pgconnector import _config
from pgconnector._config import (
    ConnectParams,
    PoolConfig,
    development_pool_config,
    production_pool_config,
    test_pool_config,
)
from pgconnector._dsn import ParsedDSN, parse_dsn, parse_pg_options
from pgconnector._redact import MASK, redact, redact_dsn
from pgconnector.errors import ConfigError

SECRET = "s3cr3t-Pa55"

ENV_VARS = (
    "DATABASE_URL",
    "PGCONNECTOR_BACKEND",
    "PGHOST",
    "PGPORT",
    "PGUSER",
    "PGPASSWORD",
    "PGDATABASE",
    "PGSSLMODE",
    "PGAPPNAME",
    "PGCONNECT_TIMEOUT",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    # getpass.getuser() reads LOGNAME first: pin the "OS user" so defaults are predictable.
    monkeypatch.setenv("LOGNAME", "osuser")
    # And make the default host independent of this machine's /var/run/postgresql.
    monkeypatch.setattr(_config, "_DEFAULT_SOCKET_DIR", str(tmp_path / "no-such-dir"))


def config_error(field: str | None, **kwargs: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        PoolConfig(**kwargs)
    assert field == info.value.field
    return info.value


# --- validation -------------------------------------------------------------------------------


def test_defaults_match_the_contract() -> None:
    cfg = PoolConfig()
    expected = {
        "dsn": None,
        "host": None,
        "port": None,
        "user": None,
        "password": None,
        "database": None,
        "backend": "auto",
        "min_size": 1,
        "max_size": 10,
        "connect_timeout": 5.0,
        "idle_timeout": 30.0,
        "acquire_timeout": 30.0,
        "max_lifetime": 3600.0,
        "max_uses": 0,
        "allow_exit_on_idle": False,
        "ping_after_idle": 1.0,
        "leak_detection_threshold": None,
        "target_session_attrs": "any",
        "pgbouncer": False,
        "reset_on_release": "transaction",
        "ssl": None,
        "application_name": None,
        "server_settings": None,
    }
    assert expected == dataclasses.asdict(cfg)


def test_config_is_frozen() -> None:
    cfg = PoolConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.max_size = 3  # type: ignore[misc]


def test_min_size_above_max_size_message() -> None:
    error = config_error("min_size", min_size=5, max_size=2)
    assert (
        str(error) == "min_size (5) must not exceed max_size (2): raise max_size or lower min_size"
    )


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"min_size": -1}, "min_size"),
        ({"min_size": 1.0}, "min_size"),
        ({"min_size": True}, "min_size"),
        ({"min_size": "1"}, "min_size"),
        ({"max_size": 0, "min_size": 0}, "max_size"),
        ({"max_size": 2.5}, "max_size"),
        ({"max_size": False}, "max_size"),
        ({"connect_timeout": 0}, "connect_timeout"),
        ({"connect_timeout": -1.0}, "connect_timeout"),
        ({"connect_timeout": float("nan")}, "connect_timeout"),
        ({"connect_timeout": float("inf")}, "connect_timeout"),
        ({"connect_timeout": "5"}, "connect_timeout"),
        ({"connect_timeout": True}, "connect_timeout"),
        ({"connect_timeout": 10**400}, "connect_timeout"),
        ({"idle_timeout": -0.5}, "idle_timeout"),
        ({"idle_timeout": float("nan")}, "idle_timeout"),
        ({"acquire_timeout": -1}, "acquire_timeout"),
        ({"acquire_timeout": float("-inf")}, "acquire_timeout"),
        ({"max_lifetime": -1}, "max_lifetime"),
        ({"max_lifetime": float("inf")}, "max_lifetime"),
        ({"max_lifetime": None}, "max_lifetime"),
        ({"max_uses": -1}, "max_uses"),
        ({"max_uses": 1.5}, "max_uses"),
        ({"allow_exit_on_idle": 1}, "allow_exit_on_idle"),
        ({"allow_exit_on_idle": None}, "allow_exit_on_idle"),
        ({"ping_after_idle": -0.1}, "ping_after_idle"),
        ({"ping_after_idle": float("nan")}, "ping_after_idle"),
        ({"ping_after_idle": "1"}, "ping_after_idle"),
        ({"leak_detection_threshold": 0}, "leak_detection_threshold"),
        ({"leak_detection_threshold": -1.0}, "leak_detection_threshold"),
        ({"target_session_attrs": "master"}, "target_session_attrs"),
        ({"target_session_attrs": None}, "target_session_attrs"),
        ({"reset_on_release": "all"}, "reset_on_release"),
        ({"reset_on_release": None}, "reset_on_release"),
        ({"pgbouncer": "yes"}, "pgbouncer"),
        ({"ssl": "on"}, "ssl"),
        ({"ssl": "REQUIRE"}, "ssl"),
        ({"ssl": True}, "ssl"),
        ({"port": 0}, "port"),
        ({"port": 65536}, "port"),
        ({"port": "5432"}, "port"),
        ({"port": 5432.0}, "port"),
        ({"port": True}, "port"),
        ({"backend": ""}, "backend"),
        ({"backend": "Psycopg"}, "backend"),
        ({"backend": "my-backend"}, "backend"),
        ({"backend": None}, "backend"),
        ({"host": ""}, "host"),
        ({"host": 1}, "host"),
        ({"user": ""}, "user"),
        ({"database": ""}, "database"),
        ({"password": b"pw"}, "password"),
        ({"application_name": 3}, "application_name"),
        ({"server_settings": "search_path=x"}, "server_settings"),
        ({"server_settings": {"search_path": 1}}, "server_settings"),
        ({"server_settings": {1: "x"}}, "server_settings"),
        ({"server_settings": {"": "x"}}, "server_settings"),
        ({"server_settings": {"bad name": "x"}}, "server_settings"),
        ({"dsn": b"postgresql://h/db"}, "dsn"),
        ({"dsn": "postgresql://h:port/db"}, "dsn"),
    ],
)
def test_invalid_values_name_their_field(kwargs: dict[str, Any], field: str) -> None:
    error = config_error(field, **kwargs)
    assert field in str(error)


def test_errors_are_value_errors_too() -> None:
    with pytest.raises(ValueError, match="max_size"):
        PoolConfig(max_size=0, min_size=0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_size": 0, "max_size": 1},
        {"min_size": 7, "max_size": 7},
        {"idle_timeout": 0, "acquire_timeout": 0.0, "max_lifetime": 0},
        {"max_uses": 0},
        {"max_uses": 10_000},
        {"ping_after_idle": 0},
        {"ping_after_idle": None},
        {"ping_after_idle": 30},
        {"port": 1},
        {"port": 65535},
        {"reset_on_release": "session"},
        {"allow_exit_on_idle": True},
        {"backend": "pg8000"},
        {"backend": "my_backend_2"},
        {"password": ""},
        {"application_name": ""},
        {"server_settings": {"search_path": "app", "myext.option": "on"}},
        {"dsn": ""},
    ],
)
def test_valid_values_are_accepted(kwargs: dict[str, Any]) -> None:
    cfg = PoolConfig(**kwargs)
    assert kwargs == {name: getattr(cfg, name) for name in kwargs}


@pytest.mark.parametrize(
    "mode", ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
)
def test_every_sslmode_is_accepted(mode: str) -> None:
    assert mode == PoolConfig(ssl=mode).ssl


def test_ssl_context_is_accepted() -> None:
    context = ssl.create_default_context()
    assert context is PoolConfig(ssl=context).ssl


def test_integer_seconds_are_stored_as_floats() -> None:
    cfg = PoolConfig(connect_timeout=7, idle_timeout=0, ping_after_idle=2)
    assert (cfg.connect_timeout, cfg.idle_timeout, cfg.ping_after_idle) == (7.0, 0.0, 2.0)
    assert float is type(cfg.connect_timeout)


@pytest.mark.parametrize(
    "field",
    ["dsn", "host", "user", "password", "database", "application_name", "backend", "ssl"],
)
@pytest.mark.parametrize("bad", ["a\x00b", "a\ud800b", "\udcff"])
def test_nul_and_lone_surrogates_are_config_errors(field: str, bad: str) -> None:
    config_error(field, **{field: bad})


@pytest.mark.parametrize("bad", ["a\x00b", "a\ud800b"])
def test_nul_and_surrogates_in_server_settings(bad: str) -> None:
    config_error("server_settings", server_settings={"search_path": bad})
    config_error("server_settings", server_settings={bad: "x"})


def test_unknown_target_session_attrs_in_the_dsn_is_invalid() -> None:
    with pytest.raises(ConfigError, match="target_session_attrs='master' is not valid"):
        PoolConfig(dsn="host=h target_session_attrs=master")


# --- DSN parsing ------------------------------------------------------------------------------


def test_full_uri() -> None:
    parsed = parse_dsn(
        "postgresql://app:pw@db.example.com:6432/appdb"
        "?sslmode=verify-full&application_name=web&connect_timeout=7&sslrootcert=/ca.pem"
    )
    assert (
        ParsedDSN(
            hosts=("db.example.com",),
            ports=(6432,),
            user="app",
            password="pw",
            database="appdb",
            sslmode="verify-full",
            connect_timeout=7.0,
            application_name="web",
            options={"sslrootcert": "/ca.pem"},
        )
        == parsed
    )


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "POSTGRESQL", "Postgres"])
def test_uri_schemes(scheme: str) -> None:
    parsed = parse_dsn(f"{scheme}://u@h/d")
    assert (parsed.hosts, parsed.user, parsed.database, parsed.backend) == (("h",), "u", "d", None)


@pytest.mark.parametrize(
    ("dsn", "backend"),
    [
        ("postgresql+asyncpg://h/db", "asyncpg"),
        ("postgres+pg8000://h/db", "pg8000"),
        ("postgresql+Psycopg://h/db", "psycopg"),
        ("postgresql://h/db", None),
        ("host=h", None),
    ],
)
def test_dsn_backend(dsn: str, backend: str | None) -> None:
    assert backend == PoolConfig(dsn=dsn).dsn_backend
    assert backend == parse_dsn(dsn).backend


@pytest.mark.parametrize("dsn", ["postgresql+://h", "postgresql+a-b://h", "postgresql+x+y://h"])
def test_invalid_backend_in_scheme(dsn: str) -> None:
    with pytest.raises(ConfigError, match="not a backend name"):
        PoolConfig(dsn=dsn)


def test_ipv6_hosts() -> None:
    parsed = parse_dsn("postgresql://[::1]:5433,[2001:db8::2]/db")
    assert (parsed.hosts, parsed.ports) == (("::1", "2001:db8::2"), (5433, None))
    zoned = parse_dsn("postgresql://[fe80::1%25eth0]/db")
    assert zoned.hosts == ("fe80::1%eth0",)


def test_multi_host_uri_and_first_host_is_used() -> None:
    parsed = parse_dsn("postgresql://h1:5432,h2:5433,h3:5434/db")
    assert (parsed.hosts, parsed.ports) == (("h1", "h2", "h3"), (5432, 5433, 5434))
    params = PoolConfig(dsn="postgresql://h1:5432,h2:5433/db").connect_params()
    assert (params.host, params.port) == ("h1", 5432)


def test_multi_host_key_value_with_one_port_for_all() -> None:
    parsed = parse_dsn("host=h1,h2 port=6000")
    assert (parsed.hosts, parsed.ports) == (("h1", "h2"), (6000,))
    params = PoolConfig(dsn="host=h1,h2 port=6000").connect_params()
    assert (params.host, params.port) == ("h1", 6000)


@pytest.mark.parametrize(
    ("dsn", "host"),
    [
        ("postgresql:///db?host=/tmp", "/tmp"),
        ("postgresql://%2Ftmp/db", "/tmp"),
        ("postgresql://%2Fvar%2Frun%2Fpostgresql:5433/db", "/var/run/postgresql"),
        ("postgresql://ignored/db?host=%2Frun%2Fpg", "/run/pg"),
        ("host=/var/run/postgresql dbname=db", "/var/run/postgresql"),
    ],
)
def test_unix_socket_directories(dsn: str, host: str) -> None:
    assert host == PoolConfig(dsn=dsn).connect_params().host


def test_percent_decoding() -> None:
    parsed = parse_dsn("postgresql://us%20er:p%40ss%2Fw%3Ard@h/d%C3%A9b?application_name=a%26b")
    assert (
        parsed.user,
        parsed.password,
        parsed.database,
        parsed.application_name,
    ) == ("us er", "p@ss/w:rd", "déb", "a&b")


def test_unencoded_at_sign_in_password() -> None:
    parsed = parse_dsn("postgresql://u:p@ss@h/db")
    assert (parsed.user, parsed.password, parsed.hosts) == ("u", "p@ss", ("h",))


def test_query_overrides_authority_as_in_libpq() -> None:
    parsed = parse_dsn("postgresql://u@h:1/d?user=v&port=2&dbname=e")
    assert (parsed.user, parsed.ports, parsed.database) == ("v", (2,), "e")


def test_uri_ssl_true_means_require() -> None:
    assert parse_dsn("postgresql://h/db?ssl=true").sslmode == "require"
    with pytest.raises(ConfigError, match="ssl='1' is not valid"):
        parse_dsn("postgresql://h/db?ssl=1")


def test_empty_uri_and_empty_key_value_string() -> None:
    assert ParsedDSN() == parse_dsn("postgresql://")
    assert ParsedDSN() == parse_dsn("")
    assert ParsedDSN() == parse_dsn("   ")


def test_surrounding_whitespace_around_a_uri_is_ignored() -> None:
    assert parse_dsn("  postgresql://h/db\n").database == "db"


def test_key_value_quoting_and_escapes() -> None:
    parsed = parse_dsn(
        "host=localhost port = 5432 dbname=x user=u password='a b\\'c' "
        "application_name=we\\ b fallback_application_name=''"
    )
    assert (
        ParsedDSN(
            hosts=("localhost",),
            ports=(5432,),
            user="u",
            password="a b'c",
            database="x",
            application_name="we b",
            options={"fallback_application_name": ""},
        )
        == parsed
    )


def test_key_value_last_duplicate_wins_and_unknown_keywords_pass_through() -> None:
    parsed = parse_dsn("host=a host=b keepalives=1 sslcert=/c.pem")
    assert (parsed.hosts, parsed.options) == (("b",), {"keepalives": "1", "sslcert": "/c.pem"})


def test_empty_values_mean_not_given() -> None:
    parsed = parse_dsn("host='' port='' user='' dbname='' sslmode=''")
    assert ParsedDSN() == parsed
    assert ParsedDSN() == parse_dsn("postgresql://?host=&port=&user=&dbname=&sslmode=")


def test_whitespace_after_equals_is_skipped_as_in_libpq() -> None:
    # So "host= port=5" sets host to "port=5": empty values must be quoted.
    assert parse_dsn("host= port=5").hosts == ("port=5",)


@pytest.mark.parametrize(
    ("dsn", "fragment"),
    [
        ("host=h dbname", "missing '=' after 'dbname'"),
        ("host=h password='abc", "unterminated quoted value for 'password'"),
        ("=x", "'=' without a keyword"),
        ("mysql://u@h/db", "unsupported URI scheme 'mysql'"),
        ("postgresql://h:abc/db", "port='abc' is not a port number"),
        ("postgresql://h:0/db", "port='0' is not a port number"),
        ("postgresql://h:65536/db", "port='65536' is not a port number"),
        ("postgresql://h:-1/db", "port='-1' is not a port number"),
        ("postgresql://h:\uff15\uff14/db", "is not a port number"),
        ("postgresql://::1/db", "put IPv6 addresses in brackets"),
        ("postgresql://[::1/db", "unterminated '['"),
        ("postgresql://[::1]x/db", "unexpected text after ']'"),
        ("postgresql://h1,h2/db?port=1,2,3", "3 ports for 2 hosts"),
        ("postgresql://h/db%zz", "invalid percent-encoding in the database name"),
        ("postgresql://h/db%4", "invalid percent-encoding"),
        ("postgresql://h/db%00", "%00 (a NUL byte)"),
        ("postgresql://h/db%ff", "not valid UTF-8"),
        ("postgresql://h/db?sslmode", "'sslmode' has no value"),
        ("postgresql://h/db?sslmode=required", "sslmode='required' is not valid"),
        ("host=h sslmode=on", "sslmode='on' is not valid"),
        ("host=h connect_timeout=soon", "connect_timeout='soon' is not a positive number"),
        ("host=h connect_timeout=0", "connect_timeout='0' is not a positive number"),
        ("host=h connect_timeout=1e999", "is not a positive number"),
        ("host=h port=70000", "port='70000' is not a port number"),
        ("host=h 0x=1", "a keyword is not letters, digits and '_'"),
        ("postgresql://h/db?a-b=1", "a keyword is not letters, digits and '_'"),
        ("postgresql://h/db?=1", "a query parameter has an empty name"),
    ],
)
def test_malformed_dsns(dsn: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        PoolConfig(dsn=dsn)
    assert info.value.field == "dsn"
    assert str(info.value).startswith("dsn: ")
    assert fragment in str(info.value)


def test_malformed_key_value_message_in_full() -> None:
    with pytest.raises(ConfigError) as info:
        PoolConfig(dsn="host=h dbname")
    assert str(info.value) == (
        "dsn: missing '=' after 'dbname': write key=value pairs, and quote values that "
        "contain spaces: application_name='my app'"
    )


def test_libpq_options_become_server_settings() -> None:
    cfg = PoolConfig(
        dsn="postgresql://h/db?options=-c%20search_path%3Dapp%20-cstatement_timeout%3D5s"
    )
    params = cfg.connect_params()
    assert params.server_settings == {"search_path": "app", "statement_timeout": "5s"}
    assert params.options == {}


def test_parse_pg_options() -> None:
    assert parse_pg_options("-c a=1 --b-c=x\\ y -cd=") == {"a": "1", "b_c": "x y", "d": ""}
    assert parse_pg_options("   ") == {}
    assert parse_pg_options("-B 100") is None
    assert parse_pg_options("-c") is None
    assert parse_pg_options("-c noequals") is None


def test_unparseable_libpq_options_pass_through_verbatim() -> None:
    params = PoolConfig(dsn="host=h options='-B 100'").connect_params()
    assert (params.server_settings, params.options) == ({}, {"options": "-B 100"})


def test_explicit_server_settings_override_dsn_options_per_key() -> None:
    cfg = PoolConfig(
        dsn="host=h options='-c search_path=dsn -c work_mem=4MB'",
        server_settings={"search_path": "explicit"},
    )
    assert cfg.connect_params().server_settings == {"search_path": "explicit", "work_mem": "4MB"}


# --- precedence -------------------------------------------------------------------------------


def test_libpq_defaults() -> None:
    assert (
        ConnectParams(
            host="localhost",
            port=5432,
            user="osuser",
            password=None,
            database="osuser",
            sslmode=None,
            ssl_context=None,
            connect_timeout=5.0,
            application_name=None,
            server_settings={},
            options={},
        )
        == PoolConfig().connect_params()
    )


def test_default_host_is_the_socket_directory_when_it_exists(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(_config, "_DEFAULT_SOCKET_DIR", str(tmp_path))
    assert str(tmp_path) == PoolConfig().connect_params().host


def test_database_defaults_to_the_resolved_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGUSER", "envuser")
    assert (
        PoolConfig().connect_params().user,
        PoolConfig().connect_params().database,
    ) == ("envuser", "envuser")
    assert PoolConfig(dsn="user=dsnuser").connect_params().database == "dsnuser"


def set_pg_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "PGHOST": "envhost",
        "PGPORT": "7000",
        "PGUSER": "envuser",
        "PGPASSWORD": "envpw",
        "PGDATABASE": "envdb",
        "PGSSLMODE": "disable",
        "PGAPPNAME": "envapp",
        "PGCONNECT_TIMEOUT": "11",
    }.items():
        monkeypatch.setenv(name, value)


DSN_ALL = (
    "postgresql://dsnuser:dsnpw@dsnhost:6000/dsndb"
    "?sslmode=require&application_name=dsnapp&connect_timeout=9"
)


def test_pg_variables_fill_in_when_nothing_else_does(monkeypatch: pytest.MonkeyPatch) -> None:
    set_pg_env(monkeypatch)
    params = PoolConfig().connect_params()
    assert (
        params.host,
        params.port,
        params.user,
        params.password,
        params.database,
        params.sslmode,
        params.application_name,
        params.connect_timeout,
    ) == ("envhost", 7000, "envuser", "envpw", "envdb", "disable", "envapp", 11.0)


def test_dsn_beats_pg_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    set_pg_env(monkeypatch)
    params = PoolConfig(dsn=DSN_ALL).connect_params()
    assert (
        params.host,
        params.port,
        params.user,
        params.password,
        params.database,
        params.sslmode,
        params.application_name,
        params.connect_timeout,
    ) == ("dsnhost", 6000, "dsnuser", "dsnpw", "dsndb", "require", "dsnapp", 9.0)


def test_explicit_fields_beat_the_dsn(monkeypatch: pytest.MonkeyPatch) -> None:
    set_pg_env(monkeypatch)
    cfg = PoolConfig(
        dsn=DSN_ALL,
        host="fieldhost",
        port=5000,
        user="fielduser",
        password="fieldpw",
        database="fielddb",
        ssl="verify-ca",
        application_name="fieldapp",
        connect_timeout=3,
    )
    params = cfg.connect_params()
    assert (
        params.host,
        params.port,
        params.user,
        params.password,
        params.database,
        params.sslmode,
        params.application_name,
        params.connect_timeout,
    ) == ("fieldhost", 5000, "fielduser", "fieldpw", "fielddb", "verify-ca", "fieldapp", 3.0)


def test_precedence_is_per_parameter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPORT", "7000")
    monkeypatch.setenv("PGUSER", "envuser")
    params = PoolConfig(dsn="postgresql://dsnhost/db", user="fielduser").connect_params()
    assert (
        params.host,
        params.port,
        params.user,
        params.database,
    ) == ("dsnhost", 7000, "fielduser", "db")


def test_empty_password_field_is_explicit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPASSWORD", "envpw")
    assert PoolConfig(dsn="password=dsnpw", password="").connect_params().password == ""


def test_connect_timeout_from_dsn_only_while_the_field_is_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert PoolConfig(dsn="host=h connect_timeout=9").connect_params().connect_timeout == 9.0
    assert (
        PoolConfig(dsn="connect_timeout=9", connect_timeout=2.5).connect_params().connect_timeout
        == 2.5
    )
    monkeypatch.setenv("PGCONNECT_TIMEOUT", "12")
    assert PoolConfig().connect_params().connect_timeout == 12.0
    assert PoolConfig(dsn="connect_timeout=9").connect_params().connect_timeout == 9.0
    assert PoolConfig(connect_timeout=4).connect_params().connect_timeout == 4.0


def test_ssl_context_goes_to_ssl_context(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGSSLMODE", "disable")
    context = ssl.create_default_context()
    params = PoolConfig(dsn="host=h sslmode=allow", ssl=context).connect_params()
    assert (None, context) == (params.sslmode, params.ssl_context)


def test_sslmode_string_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGSSLMODE", "disable")
    params = PoolConfig(ssl="require").connect_params()
    assert (params.sslmode, params.ssl_context) == ("require", None)


def test_pg_variables_are_read_at_call_time(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = PoolConfig()
    assert cfg.connect_params().host == "localhost"
    monkeypatch.setenv("PGHOST", "later,other")
    assert cfg.connect_params().host == "later"


def test_empty_pg_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PGHOST", "PGPORT", "PGUSER", "PGSSLMODE", "PGCONNECT_TIMEOUT"):
        monkeypatch.setenv(name, "")
    params = PoolConfig().connect_params()
    assert (
        params.host,
        params.port,
        params.user,
        params.sslmode,
        params.connect_timeout,
    ) == ("localhost", 5432, "osuser", None, 5.0)


@pytest.mark.parametrize(
    ("name", "value", "field", "message"),
    [
        ("PGPORT", "abc", "port", "PGPORT='abc' is not a port number"),
        ("PGPORT", "5432,x", "port", "PGPORT='x' is not a port number"),
        ("PGPORT", "99999", "port", "PGPORT='99999' is not a port number"),
        ("PGSSLMODE", "yes", "ssl", "PGSSLMODE='yes' is not an sslmode"),
        ("PGCONNECT_TIMEOUT", "-3", "connect_timeout", "PGCONNECT_TIMEOUT='-3' is not a positive"),
        ("PGUSER", "a\udcffb", "user", "PGUSER is not valid Unicode"),
    ],
)
def test_invalid_pg_variables_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, field: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    cfg = PoolConfig()
    with pytest.raises(ConfigError) as info:
        cfg.connect_params()
    assert field == info.value.field
    assert str(info.value).startswith(message)
    with pytest.raises(ConfigError) as from_env:
        PoolConfig.from_env()
    assert str(info.value) == str(from_env.value)


def test_unknown_os_user_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_user() -> str:
        raise KeyError("getpwuid(): uid not found: 12345")

    monkeypatch.setattr("getpass.getuser", no_user)
    with pytest.raises(ConfigError, match="OS user name could not be determined") as info:
        PoolConfig().connect_params()
    assert info.value.field == "user"
    assert PoolConfig(user="app").connect_params().user == "app"


# --- from_dsn / from_env ----------------------------------------------------------------------


def test_from_dsn_applies_overrides_and_scheme_backend() -> None:
    cfg = PoolConfig.from_dsn("postgresql+asyncpg://u@h/db", max_size=3)
    assert (cfg.dsn, cfg.backend, cfg.max_size) == ("postgresql+asyncpg://u@h/db", "asyncpg", 3)
    assert PoolConfig.from_dsn("postgresql+asyncpg://h", backend="psycopg").backend == "psycopg"
    assert PoolConfig.from_dsn("postgresql://h").backend == "auto"


def test_from_dsn_validates() -> None:
    with pytest.raises(ConfigError, match="min_size"):
        PoolConfig.from_dsn("postgresql://h", min_size=3, max_size=2)
    with pytest.raises(ConfigError, match="dsn must be a str") as info:
        PoolConfig.from_dsn(None)  # type: ignore[arg-type]
    assert info.value.field == "dsn"


@pytest.mark.parametrize(
    "factory",
    [
        lambda **kw: PoolConfig.from_dsn("postgresql://h", **kw),
        PoolConfig.from_env,
        production_pool_config,
        development_pool_config,
        test_pool_config,
    ],
)
def test_unknown_override_names_list_the_valid_fields(factory: Any) -> None:
    with pytest.raises(ConfigError) as info:
        factory(max_sise=3)
    message = str(info.value)
    assert message.startswith("unknown PoolConfig field 'max_sise': valid fields are dsn, host,")
    assert all(item.name in message for item in dataclasses.fields(PoolConfig))
    assert info.value.field == "max_sise"


def test_from_env_reads_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@urlhost/urldb")
    monkeypatch.setenv("PGHOST", "envhost")
    monkeypatch.setenv("PGPORT", "7000")
    cfg = PoolConfig.from_env(min_size=0)
    params = cfg.connect_params()
    assert (cfg.dsn, cfg.min_size) == ("postgresql://u@urlhost/urldb", 0)
    assert (params.host, params.port, params.database) == ("urlhost", 7000, "urldb")


def test_from_env_explicit_dsn_beats_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://urlhost/urldb")
    assert PoolConfig.from_env(dsn="host=mine").dsn == "host=mine"
    assert PoolConfig.from_env(dsn=None).dsn is None


def test_from_env_without_anything() -> None:
    assert PoolConfig() == PoolConfig.from_env()


def test_from_env_backend_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGCONNECTOR_BACKEND", " PG8000 ")
    assert PoolConfig.from_env().backend == "pg8000"
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://h/db")
    assert PoolConfig.from_env().backend == "asyncpg"
    assert PoolConfig.from_env(backend="psycopg").backend == "psycopg"


def test_from_env_invalid_backend_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGCONNECTOR_BACKEND", "not a name")
    with pytest.raises(ConfigError, match="PGCONNECTOR_BACKEND='not a name'") as info:
        PoolConfig.from_env()
    assert info.value.field == "backend"


def test_from_env_names_database_url_in_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://h:notaport/db")
    with pytest.raises(ConfigError) as info:
        PoolConfig.from_env()
    assert info.value.field == "dsn"
    assert str(info.value).startswith("DATABASE_URL: port='notaport' is not a port number")
    monkeypatch.setenv("DATABASE_URL", "postgresql://h/db?target_session_attrs=primaryy")
    with pytest.raises(ConfigError, match=r"^DATABASE_URL: target_session_attrs='primaryy'"):
        PoolConfig.from_env()


# --- presets ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        (production_pool_config, (2, 20, 5.0, 30.0, False)),
        (development_pool_config, (1, 5, 5.0, 10.0, False)),
        (test_pool_config, (0, 2, 2.0, 1.0, False)),
    ],
)
def test_preset_values(preset: Any, expected: tuple[Any, ...]) -> None:
    cfg = preset()
    assert expected == (
        cfg.min_size,
        cfg.max_size,
        cfg.connect_timeout,
        cfg.idle_timeout,
        cfg.allow_exit_on_idle,
    )
    # Everything else keeps the PoolConfig default.
    assert PoolConfig().acquire_timeout == cfg.acquire_timeout


@pytest.mark.parametrize(
    "preset", [production_pool_config, development_pool_config, test_pool_config]
)
def test_preset_overrides_apply_last(preset: Any) -> None:
    cfg = preset(min_size=1, max_size=1, idle_timeout=99, dsn="postgresql://h/db")
    assert (
        cfg.min_size,
        cfg.max_size,
        cfg.idle_timeout,
        cfg.dsn,
    ) == (1, 1, 99.0, "postgresql://h/db")
    production = production_pool_config(allow_exit_on_idle=True)
    assert production.allow_exit_on_idle is True


def test_preset_overrides_are_validated() -> None:
    with pytest.raises(ConfigError, match="min_size \\(5\\) must not exceed max_size \\(2\\)"):
        test_pool_config(min_size=5)


def test_test_pool_config_is_not_collected_by_pytest() -> None:
    assert test_pool_config.__test__ is False  # type: ignore[attr-defined]


# --- redaction --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"password": SECRET},
        {"dsn": f"postgresql://app:{SECRET}@db/x"},
        {"dsn": "postgresql://app:s3cr3t%2DPa55@db/x"},
        {"dsn": f"postgresql://app@db/x?password={SECRET}"},
        {"dsn": f"host=db user=app password={SECRET}"},
        {"dsn": f"host=db user=app password = '{SECRET}' dbname=x"},
        {"dsn": f"postgresql://app:{SECRET}@db/x", "password": SECRET},
    ],
)
def test_password_never_in_repr_or_str(kwargs: dict[str, Any]) -> None:
    cfg = PoolConfig(**kwargs)
    for text in (repr(cfg), str(cfg), cfg.safe_dsn()):
        assert SECRET not in text
        assert "s3cr3t" not in text
    assert MASK in repr(cfg)


def test_repr_shows_the_redacted_dsn() -> None:
    cfg = PoolConfig(dsn=f"postgresql://app:{SECRET}@db/x", password="other-Secret")
    text = repr(cfg)
    assert text.startswith("PoolConfig(dsn='postgresql://app:***@db/x', host=None, port=None,")
    assert "password='***'" in text
    assert "password=None" in repr(PoolConfig())


def test_connect_params_repr_hides_the_password() -> None:
    params = PoolConfig(dsn=f"postgresql://app:{SECRET}@db/x").connect_params()
    assert params.password == SECRET
    assert SECRET not in repr(params)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_size": 5, "max_size": 2},
        {"connect_timeout": -1},
        {"ssl": "bogus"},
        {"port": 0},
        {"backend": "Bad"},
        {"leak_detection_threshold": -5},
        {"dsn": f"postgresql://app:{SECRET}@db:notaport/x"},
        {"dsn": f"postgresql://app:{SECRET}@db/x?sslmode=bogus"},
        {"dsn": f"postgresql://app:{SECRET}@db/x%zz"},
        {"dsn": f"postgresql://app:{SECRET}@db/x?target_session_attrs=standbyy"},
        {"dsn": f"host=db password={SECRET} sslmode=bogus"},
        {"dsn": f"host=db password='{SECRET}"},
        {"dsn": "host=db password=s3cr3t Pa55"},
        {"dsn": "postgresql://app:s3cr3t/Pa55@db/x"},
        {"dsn": "postgresql://app:s3cr3t?Pa55@db/x"},
        {"dsn": "postgresql://app:s3cr3t%zzPa55@db/x"},
        {"dsn": "postgresql://app@db/x?password=s3cr3t%zzPa55"},
        {"dsn": "postgresql://app@db/x?password=s3cr3t&Pa55"},
        {"password": f"{SECRET}\x00"},
        {"password": f"{SECRET}\ud800"},
    ],
)
def test_password_never_in_config_error_messages(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as info:
        PoolConfig(password=kwargs.pop("password", SECRET), **kwargs)
    message = str(info.value)
    assert "s3cr3t" not in message
    assert "Pa55" not in message
    assert "Pa55" not in repr(info.value)


def test_password_not_in_connect_params_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPASSWORD", SECRET)
    monkeypatch.setenv("PGPORT", SECRET)
    with pytest.raises(ConfigError) as info:
        PoolConfig().connect_params()
    assert "PGPORT='***' is not a port number" in str(info.value)
    assert SECRET not in str(info.value)


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        ("postgresql://app:pw@db/x", "postgresql://app:***@db/x"),
        ("postgres+asyncpg://app:p%40w@db:5432/x", "postgres+asyncpg://app:***@db:5432/x"),
        ("postgresql://app@db/x", "postgresql://app@db/x"),
        ("postgresql://db:5432/x", "postgresql://db:5432/x"),
        ("postgresql://:pw@db/x", "postgresql://:***@db/x"),
        ("postgresql://app:p/w@db/x", "postgresql://app:***@db/x"),
        ("postgresql://app:p@w@db/x", "postgresql://app:***@db/x"),
        (
            "postgresql://db/x?password=pw&sslmode=require",
            "postgresql://db/x?password=***&sslmode=require",
        ),
        ("postgresql://db/x?sslpassword=pw", "postgresql://db/x?sslpassword=***"),
        ("host=db password=pw dbname=x", "host=db password=*** dbname=x"),
        ("host=db password = 'p w\\'x' dbname=x", "host=db password = '***' dbname=x"),
        ("host=db password='unterminated dbname=x", "host=db password='***'"),
        ("host=db password=p\\ w dbname=x", "host=db password=*** dbname=x"),
        ("host=db password=p w dbname=x", "host=db password=*** dbname=x"),
        ("host=db sslpassword=pw", "host=db sslpassword=***"),
        ("PGPASSWORD=pw psql", "PGPASSWORD=***"),
        ("postgresql://app:p w@db:bad/x", "postgresql://app:***@db:bad/x"),
        (
            "postgresql://db/x?password=p&w&sslmode=require",
            "postgresql://db/x?password=***&sslmode=require",
        ),
        ("postgresql://db/x?password=p w\nz", "postgresql://db/x?password=***"),
        ("host=db password=p\nw dbname=x", "host=db password=*** dbname=x"),
        ("host=db password='p'w' dbname=x", "host=db password='***'"),
        ("", ""),
    ],
)
def test_redact_dsn(dsn: str, expected: str) -> None:
    assert expected == redact_dsn(dsn)


def test_redact_dsn_masks_the_parsed_password_everywhere() -> None:
    assert (
        redact_dsn("postgresql://app:longpassword@db/x?application_name=longpassword")
        == "postgresql://app:***@db/x?application_name=***"
    )


def test_redact_literal_secrets_in_all_spellings() -> None:
    text = "a s3cr3t/Pa55 b s3cr3t%2FPa55 c"
    assert redact(text, ["s3cr3t/Pa55"]) == "a *** b *** c"
    assert redact("x it\\'s", ["it's"]) == "x ***"
    assert redact("unchanged", [None, ""]) == "unchanged"
    assert redact("a \ud800x b", ["\ud800x"]) == "a *** b"


def test_redact_leaves_ordinary_text_alone() -> None:
    text = "min_size (5) must not exceed max_size (2) at postgresql://db:5432/x"
    assert text == redact(text)


def test_safe_dsn_synthesized_without_a_dsn(monkeypatch: pytest.MonkeyPatch) -> None:
    assert PoolConfig().safe_dsn() == "postgresql://osuser@localhost:5432/osuser"
    cfg = PoolConfig(host="::1", port=6000, user="a b", password=SECRET, database="d/b")
    assert cfg.safe_dsn() == "postgresql://a%20b@[::1]:6000/d%2Fb"
    socket = PoolConfig(host="/var/run/postgresql", user="u", database="d")
    assert socket.safe_dsn() == "postgresql://u@%2Fvar%2Frun%2Fpostgresql:5432/d"
    monkeypatch.setenv("PGPORT", "bad")
    assert PoolConfig(host="h", user="u", database="d").safe_dsn() == "postgresql://u@h/d"


def test_safe_dsn_round_trips_through_the_parser() -> None:
    cfg = PoolConfig(host="/tmp", port=6000, user="u@x", database="d?b")
    parsed = parse_dsn(cfg.safe_dsn())
    assert (
        parsed.hosts,
        parsed.ports,
        parsed.user,
        parsed.database,
    ) == (("/tmp",), (6000,), "u@x", "d?b")
