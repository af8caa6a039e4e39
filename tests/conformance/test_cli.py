"""The pgconnector command against real servers."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

import pgconnector
from pgconnector.cli import main as cli_main
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
    assert "healthy" in text
    assert "UNHEALTHY" not in text
    if pg_server.password:
        assert pg_server.password not in text


@pytest.mark.slow
def test_demo_with_embedded_server_as_a_user_runs_it() -> None:
    """What the README's quick start runs: `pgconnector demo` with no DSN."""
    result = subprocess.run(
        [sys.executable, "-m", "pgconnector", "demo", "--seconds", "0.5"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Starting a throwaway PostgreSQL server" in result.stdout
    rows = [line for line in result.stdout.splitlines() if "healthy" in line]
    expected = sum(int(i.supports_sync) + int(i.supports_async)
                   for i in pgconnector.available_backends().values())
    assert len(rows) == expected
    assert "UNHEALTHY" not in result.stdout
