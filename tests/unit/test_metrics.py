"""The metrics integrations without a server: optional imports, names, the timing sinks."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import pytest

from pgconnector import AsyncConnectionManager, ConnectionManager, PoolConfig
from pgconnector._stats import PoolMonitor
from pgconnector.metrics import default_pool_name


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60
    )


def test_importing_pgconnector_imports_no_metrics_library() -> None:
    result = run_python(
        """
        import sys
        import pgconnector, pgconnector.metrics
        loaded = sorted(m for m in sys.modules
                        if m.split(".")[0] in ("opentelemetry", "prometheus_client"))
        print(loaded)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("module", "blocked", "extra"),
    [
        ("pgconnector.metrics.otel", "opentelemetry", "otel"),
        ("pgconnector.metrics.prometheus", "prometheus_client", "prometheus"),
    ],
)
def test_missing_library_names_the_extra(module: str, blocked: str, extra: str) -> None:
    result = run_python(
        f"""
        import sys
        sys.modules[{blocked!r}] = None  # as if it were not installed
        try:
            import {module}
        except ImportError as exc:
            print(exc)
        """
    )
    assert result.returncode == 0, result.stderr
    assert f'pip install "pgconnector[{extra}]"' in result.stdout


def test_default_pool_name_is_target_without_secrets() -> None:
    dsn = "postgresql://alice:s3cret@db.example.com:6543/app"
    first = ConnectionManager(PoolConfig.from_dsn(dsn, backend="pg8000"))
    second = AsyncConnectionManager(PoolConfig.from_dsn(dsn, backend="pg8000"))
    other = ConnectionManager(PoolConfig.from_dsn(dsn.replace("/app", "/other"), backend="pg8000"))
    name1 = default_pool_name(first)
    assert name1.startswith("db.example.com:6543/app")
    assert default_pool_name(first) == name1  # stable for one manager
    name2 = default_pool_name(second)
    assert name2 != name1 and name2.startswith("db.example.com:6543/app#")
    assert default_pool_name(other).startswith("db.example.com:6543/other")
    for name in (name1, name2):
        assert "s3cret" not in name and "alice" not in name
    multi = ConnectionManager(
        PoolConfig.from_dsn("postgresql://u@h1:5001,h2:5002/d", backend="pg8000")
    )
    assert default_pool_name(multi).startswith("h1:5001,h2:5002/d")


def test_default_pool_name_rejects_other_objects() -> None:
    with pytest.raises(TypeError, match="ConnectionManager"):
        default_pool_name(object())  # type: ignore[arg-type]


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, float]] = []

    def wait_time(self, seconds: float) -> None:
        self.seen.append(("wait", seconds))

    def use_time(self, seconds: float) -> None:
        self.seen.append(("use", seconds))

    def create_time(self, seconds: float) -> None:
        self.seen.append(("create", seconds))


class Broken(Recorder):
    def wait_time(self, seconds: float) -> None:
        raise RuntimeError("sink failure")


def test_monitor_feeds_sinks_and_survives_a_broken_one(caplog: pytest.LogCaptureFixture) -> None:
    monitor = PoolMonitor("fake", 0, 2, logging.getLogger("pgconnector.test"))
    hooks = monitor.generation()
    recorder, broken = Recorder(), Broken()
    hooks.connection_opened(0.5)  # nobody listens: nothing to record
    monitor.add_sink(broken)
    monitor.add_sink(recorder)
    hooks.connection_opened(0.25)
    hooks.connection_opened()  # a backend that cannot tell
    with caplog.at_level(logging.ERROR, logger="pgconnector.test"):
        monitor.waited(0.125)
    monitor.used(1.0)
    assert recorder.seen == [("create", 0.25), ("wait", 0.125), ("use", 1.0)]
    assert "sink failure" in caplog.text
    monitor.remove_sink(recorder)
    monitor.remove_sink(broken)
    assert monitor.sinks == ()
    assert monitor.snapshot().connections_opened == 3
