"""A real PgBouncer in front of a test server, and the fixtures that start one.

:class:`PgBouncer` runs the system's ``pgbouncer`` binary (Debian: ``apt-get install
pgbouncer``) in the foreground, listening on ``127.0.0.1`` on a free port, in ``session`` or
``transaction`` pool mode, with a small ``default_pool_size`` so that server connections are
really shared between clients. Clients authenticate with SCRAM against an ``auth_file`` that
holds the upstream user's password (mode 0600); PgBouncer logs in to the server with it.

PgBouncer refuses to run as root. As root, it runs as the unprivileged account the embedded
PostgreSQL servers use (``pgconnector._embedded._server_account``), which owns its directory.
The password is only ever in the ``auth_file`` and in the DSN handed to the test: never on a
command line, and redacted from every error message (which quotes PgBouncer's log).

Fixtures (registered for the suite by ``pytest_plugins`` in ``tests/conftest.py``):

* ``pgbouncer_binary``: the binary's path. Skips when it is missing, or fails when the
  environment variable ``PGCONNECTOR_REQUIRE_PGBOUNCER=1`` is set (CI installs it).
* ``pgbouncer_factory(pool_mode, default_pool_size=2, **settings)``: a started PgBouncer in
  front of the session's ``pg_server``, stopped at the end of the test.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Literal
from urllib.parse import quote

import pytest

from pgconnector import PoolConfig
from pgconnector._embedded import _Account, _free_port, _server_account
from pgconnector._redact import redact

__all__ = [
    "REQUIRE_VAR",
    "PgBouncer",
    "PgBouncerError",
    "PoolMode",
    "find_pgbouncer",
]

PoolMode = Literal["session", "transaction"]

#: Set to 1 (CI does) to fail instead of skipping when ``pgbouncer`` is not installed.
REQUIRE_VAR = "PGCONNECTOR_REQUIRE_PGBOUNCER"
INSTALL_HINT = "apt-get install pgbouncer"

_HOST = "127.0.0.1"
_START_ATTEMPTS = 3
_START_TIMEOUT = 15.0
_STOP_TIMEOUT = 10.0
_LOG_TAIL_LINES = 30
# Where Debian puts it; a non-root PATH often lacks the sbin directories.
_SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")


class PgBouncerError(RuntimeError):
    """PgBouncer could not be started, stopped or queried."""


def find_pgbouncer() -> str | None:
    """The ``pgbouncer`` binary on ``PATH`` or in the usual sbin directories, or None."""
    found = shutil.which("pgbouncer")
    if found:
        return found
    for directory in _SBIN_DIRS:
        candidate = os.path.join(directory, "pgbouncer")
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def _ini_value(value: str) -> str:
    # pgbouncer.ini has no quoting for plain values: refuse what would end or split a line.
    if any(c in value for c in "\r\n\0"):
        raise ValueError(f"a pgbouncer.ini value must be a single line: {value!r}")
    return value


def _connstr_value(value: str) -> str:
    # libpq-style quoting, which the [databases] connection strings use.
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _auth_line(user: str, password: str) -> str:
    # auth_file: "user" "password", a double quote doubled inside a value.
    def q(text: str) -> str:
        return '"' + text.replace('"', '""') + '"'

    return f"{q(user)} {q(password)}\n"


class PgBouncer:
    """One PgBouncer process in front of one PostgreSQL server.

    :param host, port, user, password, database: the upstream server and the one login that
        clients use (PgBouncer logs in to the server as the same user, with the same password).
    :param pool_mode: ``"session"`` or ``"transaction"``.
    :param default_pool_size: server connections per (database, user) pair.
    :param settings: further ``[pgbouncer]`` settings, applied last.
    :param binary: the ``pgbouncer`` binary; default: :func:`find_pgbouncer`.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        user: str,
        password: str,
        database: str,
        pool_mode: PoolMode = "transaction",
        default_pool_size: int = 2,
        settings: Mapping[str, str] | None = None,
        binary: str | None = None,
    ) -> None:
        if pool_mode not in ("session", "transaction"):
            raise ValueError(f"pool_mode must be session or transaction, not {pool_mode!r}")
        found = binary or find_pgbouncer()
        if found is None:
            raise PgBouncerError(f"pgbouncer is not installed ({INSTALL_HINT})")
        self._binary = found
        self._upstream = (host, port)
        self.user = user
        self._password = password
        self.database = database
        self.pool_mode = pool_mode
        self.default_pool_size = default_pool_size
        self._settings = {k: _ini_value(str(v)) for k, v in (settings or {}).items()}
        self._dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._account: _Account | None = None

    @classmethod
    def in_front_of(cls, dsn: str, **kwargs: Any) -> PgBouncer:
        """A PgBouncer for the server, user, password and database of ``dsn``."""
        params = PoolConfig.from_dsn(dsn).connect_params()
        if params.password is None:
            raise PgBouncerError("the upstream DSN has no password for PgBouncer's auth_file")
        return cls(
            host=params.host,
            port=params.port,
            user=params.user,
            password=params.password,
            database=params.database,
            **kwargs,
        )

    # ---------------------------------------------------------------- properties

    @property
    def port(self) -> int:
        if self._port is None:
            raise PgBouncerError("PgBouncer is not started")
        return self._port

    @property
    def log_file(self) -> Path:
        if self._dir is None:
            raise PgBouncerError("PgBouncer is not started")
        return self._dir / "pgbouncer.log"

    def dsn(self, *, scheme: str = "postgresql") -> str:
        """The upstream user, password and database, at PgBouncer's address."""
        userinfo = quote(self.user, safe="") + ":" + quote(self._password, safe="")
        return f"{scheme}://{userinfo}@{_HOST}:{self.port}/{quote(self.database, safe='')}"

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Write the configuration and start PgBouncer; return once it accepts connections.

        Raises :class:`PgBouncerError` with the end of PgBouncer's log if it does not start,
        leaving nothing running and no files behind.
        """
        if self.is_running():
            return
        try:
            self._prepare_dir()
            for attempt in range(1, _START_ATTEMPTS + 1):
                self._port = _free_port()
                self._write_config()
                if self._spawn():
                    return
                log = self._log_tail()
                if "Address already in use" in log and attempt < _START_ATTEMPTS:
                    continue  # another process took the free port first: pick another
                raise PgBouncerError(
                    f"PgBouncer ({self._binary}) did not start on {_HOST}:{self._port} "
                    f"(exit {self._exit_code()}).\n--- pgbouncer log ---\n{log}"
                )
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop PgBouncer (it closes every client and server connection) and delete its
        files. Idempotent; it may be started again afterwards."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            # SIGTERM: immediate shutdown (SIGINT would wait for clients to leave).
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=_STOP_TIMEOUT)
        directory, self._dir = self._dir, None
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)

    def __enter__(self) -> PgBouncer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __del__(self) -> None:
        # Last resort for a forgotten instance: never leave a pgbouncer process running.
        with contextlib.suppress(Exception):
            self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        port = self._port if self._port is not None else "auto"
        size = self.default_pool_size
        return f"<PgBouncer {state} {self.pool_mode} pool_size={size} port={port}>"

    # ---------------------------------------------------------------- querying

    def show(self, what: str, psql: Path) -> list[dict[str, str]]:
        """``SHOW <what>`` on PgBouncer's admin console (``SERVERS``, ``CLIENTS``, ``POOLS``),
        with ``psql`` (the embedded server's), as rows of column name -> text."""
        conninfo = " ".join(
            f"{k}={_connstr_value(v)}"
            for k, v in (
                ("host", _HOST),
                ("port", str(self.port)),
                ("user", self.user),
                ("dbname", "pgbouncer"),
                ("sslmode", "disable"),
                ("connect_timeout", "10"),
            )
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(PGPASSWORD=self._password, LC_ALL="C")
        result = subprocess.run(
            [str(psql), "-X", "-A", "-F", "\t", "-P", "footer=off", "-d", conninfo,
             "-c", f"SHOW {what}"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if result.returncode != 0:
            raise PgBouncerError(
                f"SHOW {what} failed: {redact(result.stderr.strip(), [self._password])}"
            )
        lines = [line for line in result.stdout.splitlines() if line]
        if not lines:
            return []
        header = lines[0].split("\t")
        return [dict(zip(header, line.split("\t"), strict=False)) for line in lines[1:]]

    # ---------------------------------------------------------------- internals

    def _prepare_dir(self) -> None:
        if self._dir is not None:
            return
        self._account = _server_account()  # None unless we are root
        directory = Path(tempfile.mkdtemp(prefix="pgconnector-pgbouncer-"))
        self._dir = directory
        if self._account is not None:
            # PgBouncer writes its log here, as the account, and reads the 0600 auth_file.
            os.chown(directory, self._account.uid, self._account.gid)
        auth_file = directory / "userlist.txt"
        self._write_private(auth_file, _auth_line(self.user, self._password))

    def _write_private(self, path: Path, text: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        if self._account is not None:
            os.chown(path, self._account.uid, self._account.gid)

    def _write_config(self) -> None:
        assert self._dir is not None
        host, port = self._upstream
        # No password here: PgBouncer takes the one from the auth_file for this user.
        upstream = f"host={_connstr_value(host)} port={port}"
        conf: dict[str, str] = {
            "listen_addr": _HOST,
            "listen_port": str(self._port),
            "unix_socket_dir": "",  # TCP only: nothing to clash with a system PgBouncer
            "auth_type": "scram-sha-256",
            "auth_file": str(self._dir / "userlist.txt"),
            "admin_users": _ini_value(self.user),
            "pool_mode": self.pool_mode,
            "default_pool_size": str(self.default_pool_size),
            "min_pool_size": "0",
            "reserve_pool_size": "0",
            "max_client_conn": "500",
            "logfile": str(self._dir / "pgbouncer.log"),
            "log_connections": "1",
            "log_disconnections": "1",
            "log_pooler_errors": "1",
            "server_login_retry": "1",
            "server_connect_timeout": "10",
        }
        conf.update(self._settings)
        lines = ["[databases]", f"* = {upstream}", "", "[pgbouncer]"]
        lines += [f"{key} = {value}" for key, value in conf.items()]
        self._write_private(self._dir / "pgbouncer.ini", "\n".join(lines) + "\n")

    def _spawn(self) -> bool:
        """Start the process and wait until it accepts TCP connections; False if it died."""
        assert self._dir is not None
        assert self._port is not None
        account = self._account
        with contextlib.suppress(OSError):
            (self._dir / "pgbouncer.log").unlink()
        stderr = (self._dir / "stderr.log").open("ab")
        try:
            self._process = subprocess.Popen(
                [self._binary, str(self._dir / "pgbouncer.ini")],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                cwd=self._dir,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"},
                user=account.uid if account else None,
                group=account.gid if account else None,
                extra_groups=[] if account else None,
                start_new_session=True,  # a Ctrl-C aimed at pytest is ours to handle
            )
        finally:
            stderr.close()
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            try:
                with socket.create_connection((_HOST, self._port), timeout=1.0):
                    return True
            except OSError:
                time.sleep(0.02)  # readiness poll: PgBouncer signals nothing else
        raise PgBouncerError(
            f"PgBouncer did not accept connections on {_HOST}:{self._port} within "
            f"{_START_TIMEOUT:g} s.\n--- pgbouncer log ---\n{self._log_tail()}"
        )

    def _exit_code(self) -> int | None:
        return self._process.poll() if self._process is not None else None

    def _log_tail(self) -> str:
        if self._dir is None:
            return "(no log)"
        parts = []
        for name in ("pgbouncer.log", "stderr.log"):
            with contextlib.suppress(OSError):
                text = (self._dir / name).read_text(encoding="utf-8", errors="replace").strip()
                if text:
                    parts.append("\n".join(text.splitlines()[-_LOG_TAIL_LINES:]))
        return redact("\n".join(parts) or "(the log is empty)", [self._password])


# ------------------------------------------------------------------------------------------
# Fixtures
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pgbouncer_binary() -> str:
    """The ``pgbouncer`` binary; skip (or, with PGCONNECTOR_REQUIRE_PGBOUNCER=1, fail) when
    it is not installed."""
    found = find_pgbouncer()
    if found is None:
        reason = (
            f"pgbouncer is not installed ({INSTALL_HINT}; `python3 dev.py test` installs it "
            "as root)"
        )
        if os.environ.get(REQUIRE_VAR) == "1":
            pytest.fail(f"{reason}, and {REQUIRE_VAR}=1 requires it", pytrace=False)
        pytest.skip(reason)
    return found


PgBouncerFactory = Callable[..., PgBouncer]


@pytest.fixture
def pgbouncer_factory(pgbouncer_binary: str, pg_server: Any) -> Iterator[PgBouncerFactory]:
    """``pgbouncer_factory(pool_mode="transaction", default_pool_size=2, **settings)``: a
    started PgBouncer in front of the session's server, stopped after the test."""
    started: list[PgBouncer] = []

    def factory(
        pool_mode: PoolMode = "transaction", default_pool_size: int = 2, **settings: str
    ) -> PgBouncer:
        bouncer = PgBouncer.in_front_of(
            pg_server.dsn,
            pool_mode=pool_mode,
            default_pool_size=default_pool_size,
            settings=settings,
            binary=pgbouncer_binary,
        )
        started.append(bouncer)
        bouncer.start()
        return bouncer

    try:
        yield factory
    finally:
        for bouncer in started:
            bouncer.stop()
