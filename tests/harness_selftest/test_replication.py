"""Self-tests of the primary + streaming-standby topology (``tests/topology.py``).

Real servers: the standby is a ``pg_basebackup`` copy of the primary streaming WAL over TCP,
both run as an unprivileged user when the suite runs as root. Skipped without PostgreSQL
binaries.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from pgconnector import _embedded
from pgconnector._embedded import EmbeddedServer, EmbeddedServerError, find_bin_dir
from tests.topology import Replication, ReplicationFactory

REPO_ROOT = Path(__file__).resolve().parents[2]

try:
    find_bin_dir()
except EmbeddedServerError as exc:  # pragma: no cover - depends on the machine
    pytest.skip(f"no PostgreSQL binaries: {exc}", allow_module_level=True)


# ------------------------------------------------------------------------------------ helpers


def psql_tcp(
    server: EmbeddedServer, sql: str, *, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run *sql* as a TCP client would (password in PGPASSWORD only), SQLSTATEs in errors."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGPASSWORD"] = server.password
    env["LC_ALL"] = "C"
    conninfo = (
        f"host={server.host} port={server.port} user='{server.user}' "
        f"dbname='{server.database}' connect_timeout=10 sslmode=disable"
    )
    return subprocess.run(
        [
            str(server.bin_dir / "psql"),
            "-X", "-A", "-t", "-q", "-w",
            "-v", "ON_ERROR_STOP=1",
            "-v", "VERBOSITY=verbose",
            "-d", conninfo,
            "-c", sql,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )  # fmt: skip


def psql_background(
    server: EmbeddedServer, sql: str, *, application_name: str = "test"
) -> subprocess.Popen[bytes]:
    """Start psql running *sql* over the Unix socket and leave it running."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGPASSWORD"] = server.password
    conninfo = (
        f"host={server.socket_dir} port={server.port} user='{server.user}' dbname=postgres "
        f"application_name='{application_name}'"
    )
    return subprocess.Popen(
        [str(server.bin_dir / "psql"), "-X", "-q", "-d", conninfo, "-c", sql],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def replication_row(primary: EmbeddedServer, standby: EmbeddedServer) -> list[str]:
    """``state|sync_state`` of *standby*'s walsender on *primary*."""
    name = standby.standby_name
    assert name is not None
    return primary.admin_execute(
        f"SELECT state, sync_state FROM pg_stat_replication WHERE application_name = '{name}'"
    ).split("|")


def settled_row(
    primary: EmbeddedServer, standby: EmbeddedServer, timeout: float = 30.0
) -> list[str]:
    """:func:`replication_row` once it reads ``streaming|sync``, or what it reads when
    ``timeout`` runs out (the server's view is polled: there is no event to wait on)."""
    deadline = time.monotonic() + timeout
    while (row := replication_row(primary, standby)) != ["streaming", "sync"]:
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return row


def all_command_lines() -> list[str]:
    lines = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                raw = (entry / "cmdline").read_bytes()
            except OSError:
                continue  # exited meanwhile
            lines.append(raw.replace(b"\0", b" ").decode(errors="replace"))
    return lines


# ------------------------------------------------------------------------------------ tests


def test_committed_row_is_visible_on_standby_after_wait(
    replication_factory: ReplicationFactory,
) -> None:
    pair = replication_factory(synchronous=False)
    primary, standby = pair.primary, pair.standby
    assert replication_row(primary, standby) == ["streaming", "async"]
    assert standby.is_in_recovery()
    assert not primary.is_in_recovery()
    # The default test configuration commits asynchronously; the wait must cover that too.
    assert primary.admin_execute("SHOW synchronous_commit") == "off"
    primary.admin_execute("CREATE TABLE t (x int); INSERT INTO t SELECT generate_series(1, 100)")
    pair.wait_replayed(timeout=10)
    assert standby.admin_execute("SELECT count(*), sum(x) FROM t") == "100|5050"
    # A transaction left open after writing does not stall the wait: nothing commits its WAL,
    # so the wait must flush it itself.
    holder = psql_background(primary, "BEGIN; INSERT INTO t VALUES (999); SELECT pg_sleep(60);")
    try:
        assert wait_until(
            lambda: (
                primary.admin_execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE backend_xid IS NOT NULL "
                    "AND query LIKE '%pg_sleep(60)%'"
                )
                == "1"
            )
        )
        primary.admin_execute("INSERT INTO t VALUES (101)")
        pair.wait_replayed(timeout=10)
        assert standby.admin_execute("SELECT max(x) FROM t") == "101"
    finally:
        holder.kill()
        holder.wait()


def test_standby_refuses_writes(replication: Replication) -> None:
    standby = replication.standby
    result = psql_tcp(standby, "SELECT pg_is_in_recovery()")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "t"
    result = psql_tcp(standby, "CREATE TABLE nope (x int)")
    assert result.returncode != 0
    assert "25006" in result.stderr, result.stderr  # read_only_sql_transaction
    assert "read-only transaction" in result.stderr


def test_synchronous_commit_reaches_standby_before_returning(replication: Replication) -> None:
    primary, standby = replication.primary, replication.standby
    assert replication_row(primary, standby) == ["streaming", "sync"]
    assert primary.admin_execute("SHOW synchronous_commit") == "on"
    assert primary.admin_execute("SHOW synchronous_standby_names") == f'"{standby.standby_name}"'
    # The standby does not inherit the primary's synchronous setup.
    assert standby.admin_execute("SHOW synchronous_standby_names") == ""

    # Visibility on return needs remote_apply; `on` (the primary's default now) means flushed
    # on the standby, which is what the crash below relies on.
    result = psql_tcp(
        primary,
        "CREATE TABLE t (x int); SET synchronous_commit = remote_apply; INSERT INTO t VALUES (1)",
    )
    assert result.returncode == 0, result.stderr
    assert standby.admin_execute("SELECT count(*) FROM t") == "1"

    # A commit that has returned survives the primary crashing at once.
    result = psql_tcp(primary, "INSERT INTO t VALUES (2)")
    assert result.returncode == 0, result.stderr
    primary.stop("immediate")
    standby.promote()
    assert standby.admin_execute("SELECT array_agg(x ORDER BY x) FROM t") == "{1,2}"


def test_synchronous_commit_waits_for_the_standby(replication: Replication) -> None:
    primary, standby = replication.primary, replication.standby
    primary.admin_execute("CREATE TABLE t (x int)")
    standby.stop("fast")
    waiter = psql_background(primary, "INSERT INTO t VALUES (1)", application_name="sync-waiter")
    try:
        # Committed locally, the transaction waits for the standby that is not there.
        assert wait_until(
            lambda: (
                primary.admin_execute(
                    "SELECT wait_event FROM pg_stat_activity WHERE application_name = 'sync-waiter'"
                )
                == "SyncRep"
            )
        )
        time.sleep(0.5)
        assert waiter.poll() is None
        standby.start()
        assert waiter.wait(timeout=30) == 0
    finally:
        waiter.kill()
        waiter.wait()
    assert replication_row(primary, standby) == ["streaming", "sync"]
    replication.wait_replayed()
    assert standby.admin_execute("SELECT count(*) FROM t") == "1"


@pytest.mark.parametrize("synchronous", [True, False], ids=["sync", "async"])
def test_failover_keeps_committed_rows_and_accepts_writes(
    replication_factory: ReplicationFactory, synchronous: bool
) -> None:
    pair = replication_factory(synchronous=synchronous)
    primary, standby = pair.primary, pair.standby
    primary.admin_execute("CREATE TABLE t (x int)")
    for i in range(1, 21):
        result = psql_tcp(primary, f"INSERT INTO t VALUES ({i})")
        assert result.returncode == 0, result.stderr
    if not synchronous:
        pair.wait_replayed()
    pair.failover()
    assert not primary.is_running()
    assert not standby.is_in_recovery()
    result = psql_tcp(standby, "INSERT INTO t VALUES (21); SELECT count(*), sum(x) FROM t")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "21|231"
    # A promoted server waits for no standby of its own.
    assert standby.admin_execute("SHOW synchronous_standby_names") == ""
    # And it survives a restart as a primary.
    standby.restart()
    assert not standby.is_in_recovery()
    assert psql_tcp(standby, "SELECT count(*) FROM t").stdout.strip() == "21"


def test_standby_lifecycle_and_cleanup(replication_factory: ReplicationFactory) -> None:
    pair = replication_factory(synchronous=False)
    primary, standby = pair.primary, pair.standby
    assert standby.port != primary.port
    assert standby.data_dir.parent != primary.data_dir.parent
    assert standby.dsn() == (
        f"postgresql://{standby.user}:{standby.password}@127.0.0.1:{standby.port}/postgres"
    )
    port = standby.port
    primary.admin_execute("CREATE TABLE t (x int); INSERT INTO t VALUES (1)")
    standby.restart()
    assert standby.port == port
    assert standby.is_in_recovery()
    assert wait_until(lambda: replication_row(primary, standby)[0] == "streaming")
    primary.admin_execute("INSERT INTO t VALUES (2)")
    pair.wait_replayed()
    assert standby.admin_execute("SELECT count(*) FROM t") == "2"
    top = standby.data_dir.parent
    standby.cleanup()
    assert not top.exists()
    assert not standby.is_running()
    assert primary.is_running()  # the standby's cleanup leaves its primary alone


def test_second_synchronous_standby(replication: Replication) -> None:
    primary, first = replication.primary, replication.standby
    second = primary.create_standby(synchronous=True)
    try:
        assert primary.admin_execute("SHOW synchronous_standby_names") == (
            f'FIRST 2 ("{first.standby_name}", "{second.standby_name}")'
        )
        # Read once, the first standby's row was once missing right after the second one
        # joined (a full run found it: its walsender between connections): wait for the
        # server's own view to settle rather than read it once.
        assert settled_row(primary, first) == ["streaming", "sync"]
        assert settled_row(primary, second) == ["streaming", "sync"]
        primary.admin_execute("CREATE TABLE t (x int); INSERT INTO t VALUES (1)")
        primary.wait_for_standby_replay(second)
        assert second.admin_execute("SELECT count(*) FROM t") == "1"
    finally:
        second.cleanup()


def test_wait_for_replay_times_out_clearly(replication_factory: ReplicationFactory) -> None:
    pair = replication_factory(synchronous=False)
    primary, standby = pair.primary, pair.standby
    standby.admin_execute("SELECT pg_wal_replay_pause()")
    primary.admin_execute("CREATE TABLE t (x int)")
    started = time.monotonic()
    with pytest.raises(EmbeddedServerError, match=r"replayed WAL up to .* within 0\.5 s"):
        primary.wait_for_standby_replay(standby, timeout=0.5)
    assert time.monotonic() - started < 5
    standby.admin_execute("SELECT pg_wal_replay_resume()")
    pair.wait_replayed()
    pair.failover()
    with pytest.raises(EmbeddedServerError, match="not a standby"):
        standby.wait_for_standby_replay(standby)


def test_promote_refuses_a_primary(replication_factory: ReplicationFactory) -> None:
    pair = replication_factory(synchronous=False)
    with pytest.raises(EmbeddedServerError, match="not in standby mode"):
        pair.primary.promote(timeout=5)
    assert pair.primary.standby_name is None
    pair.primary.stop()
    with pytest.raises(EmbeddedServerError, match="needs a running server"):
        pair.primary.create_standby()


def test_password_stays_off_command_lines(
    replication_factory: ReplicationFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    argvs: list[Sequence[str]] = []
    real_run = _embedded._run

    def recording_run(argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        argvs.append(list(argv))
        return real_run(argv, **kwargs)

    monkeypatch.setattr(_embedded, "_run", recording_run)
    pair = replication_factory(synchronous=True)
    password = pair.primary.password
    assert pair.standby.password == password
    programs = {Path(argv[0]).name for argv in argvs}
    assert {"initdb", "pg_basebackup", "pg_ctl", "psql"} <= programs
    assert not [argv for argv in argvs if password in " ".join(argv)]
    lines = all_command_lines()
    assert any(str(pair.standby.data_dir) in line for line in lines)  # we do see the standby
    assert not [line for line in lines if password in line]
    assert password not in repr(pair.standby)
    # The standby keeps its primary_conninfo (password included) where only its owner can read.
    auto_conf = pair.standby.data_dir / "postgresql.auto.conf"
    assert auto_conf.stat().st_mode & 0o077 == 0
    assert (
        pair.standby.admin_execute("SELECT conninfo !~ 'password=[^*]' FROM pg_stat_wal_receiver")
        == "t"
    )


def test_failed_standby_reports_without_password_and_cleans_up(
    replication_factory: ReplicationFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    pair = replication_factory(synchronous=False)
    primary = pair.primary
    live_before = len(_embedded._live_states)

    # Too few connections for a hot standby of this primary: the start fails.
    with pytest.raises(EmbeddedServerError, match="failed to start") as info:
        primary.create_standby(settings={"max_connections": "20"})
    assert primary.password not in str(info.value)
    assert len(_embedded._live_states) == live_before

    # A wrong password: pg_basebackup itself fails.
    wrong = "wrong-" + primary.password
    monkeypatch.setattr(primary, "_password", wrong)
    with pytest.raises(EmbeddedServerError, match=r"pg_basebackup from .* failed") as info:
        primary.create_standby()
    assert "password authentication failed" in str(info.value)
    assert wrong not in str(info.value)
    assert len(_embedded._live_states) == live_before
    monkeypatch.undo()
    # Only the pair's own standby streams from the primary.
    assert primary.admin_execute("SELECT application_name FROM pg_stat_replication") == (
        pair.standby.standby_name
    )


@pytest.mark.parametrize("ending", ["exit", "kill"])
def test_standby_is_cleaned_up_when_the_process_ends(ending: str) -> None:
    """Normal exit without cleanup (finalizers/atexit) and os._exit (the watchdog)."""
    code = textwrap.dedent(
        f"""
        import os
        from pgconnector._embedded import EmbeddedServer
        primary = EmbeddedServer()
        primary.start()
        standby = primary.create_standby(synchronous=True)
        for srv in (primary, standby):
            pid = (srv.data_dir / "postmaster.pid").read_text().split()[0]
            print(srv.data_dir.parent, pid, flush=True)
        if {ending!r} == "kill":
            os._exit(1)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    servers = [line.split() for line in result.stdout.splitlines()]
    assert len(servers) == 2, result.stderr

    def gone() -> bool:
        return all(
            not _embedded._pid_alive(int(pid)) and not Path(top).exists() for top, pid in servers
        )

    assert wait_until(gone, timeout=30)
