"""Backend selection and errors (pure logic, no server)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

import pytest

import pgconnector
from pgconnector import (
    AsyncConnectionManager,
    BackendNotFoundError,
    ConnectionManager,
    PoolConfig,
    UnsupportedBackendError,
)
from pgconnector._registry import resolve_backend


class FakeBackend:
    """Only what selection looks at; these tests never open a pool."""

    def __init__(self, name: str, *, sync: bool = True, async_: bool = True,
                 driver_missing: bool = False) -> None:
        self.name = name
        self.distribution = f"pgconnector-{name}"
        self.supports_sync = sync
        self.supports_async = async_
        self.pure_python = True
        self.driver_missing = driver_missing

    def check_driver(self) -> None:
        if self.driver_missing:
            raise ImportError(f"No module named '{self.name}driver'")

    def create_pool(self, config: Any, hooks: Any) -> Any:
        raise AssertionError("not used")

    def create_async_pool(self, config: Any, hooks: Any) -> Any:
        raise AssertionError("not used")


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.delenv("PGCONNECTOR_BACKEND", raising=False)
    registered = [
        FakeBackend("fakesync", async_=False),
        FakeBackend("fakeasync", sync=False),
        FakeBackend("fakebroken", driver_missing=True),
    ]
    for b in registered:
        pgconnector.register_backend(b)  # type: ignore[arg-type]
    yield {b.name: b for b in registered}
    for b in registered:
        pgconnector.unregister_backend(b.name)


def test_precedence_of_backend_choices(fakes: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = PoolConfig.from_dsn("postgresql+fakeasync://u@h/d")
    assert resolve_backend(cfg, None, "async").name == "fakeasync"  # DSN scheme
    monkeypatch.setenv("PGCONNECTOR_BACKEND", "fakesync")
    assert resolve_backend(cfg, None, "async").name == "fakeasync"  # DSN beats the env
    plain = PoolConfig.from_dsn("postgresql://u@h/d")
    assert resolve_backend(plain, None, "sync").name == "fakesync"  # env
    explicit = PoolConfig.from_dsn("postgresql+fakeasync://u@h/d", backend="fakesync")
    assert resolve_backend(explicit, None, "sync").name == "fakesync"  # field beats DSN
    assert resolve_backend(plain, "fakeasync", "async").name == "fakeasync"  # argument first


def test_unknown_backend_message(fakes: Any) -> None:
    with pytest.raises(BackendNotFoundError) as info:
        ConnectionManager(PoolConfig(host="h"), backend="nosuch")
    message = str(info.value)
    assert message.startswith("unknown backend 'nosuch'. Known: psycopg, asyncpg, pg8000; ")
    assert "installed: " + ", ".join(pgconnector._registry._installed_names()) in message
    assert "pip install" not in message  # no extra installs a name nobody ships
    assert isinstance(info.value, pgconnector.ConfigError)


def test_misspelt_backend_gets_a_suggestion(fakes: Any) -> None:
    with pytest.raises(BackendNotFoundError) as info:
        ConnectionManager(PoolConfig(host="h"), backend="psycpg")
    assert str(info.value).startswith(
        "unknown backend 'psycpg'; did you mean 'psycopg'? Known: psycopg, asyncpg, pg8000; "
        "installed: "
    )


def _hide(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """As if pgconnector-NAME were not installed."""
    from pgconnector import _registry

    entry_points = {n: ep for n, ep in _registry._entry_points().items() if n != name}
    monkeypatch.setattr(_registry, "_entry_points", lambda: entry_points)
    monkeypatch.setattr(_registry, "_loaded", {})
    assert name not in pgconnector.available_backends()


def test_known_backend_not_installed_names_its_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    _hide(monkeypatch, "pg8000")
    with pytest.raises(BackendNotFoundError) as info:
        ConnectionManager(PoolConfig(host="h"), backend="pg8000")
    message = str(info.value)
    assert message.startswith("backend 'pg8000' is not installed (installed: ")
    assert message.endswith('Install it with: pip install "pgconnector[pg8000]"')
    assert "NAME" not in message


def test_uninstalled_async_only_backend_is_refused_by_the_sync_manager(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _hide(monkeypatch, "asyncpg")
    with pytest.raises(UnsupportedBackendError) as info:
        ConnectionManager(PoolConfig(host="h"), backend="asyncpg")
    message = str(info.value)
    assert "'asyncpg' cannot serve the sync manager at all" in message
    assert "pip install" not in message  # installing it would only lead to the next error
    sync_ones = [b.name for b in pgconnector.available_backends().values() if b.supports_sync]
    assert f"(installed: {', '.join(sync_ones) or 'none'})" in message
    # the async manager still says how to install it
    with pytest.raises(BackendNotFoundError, match=r'pip install "pgconnector\[asyncpg\]"'):
        AsyncConnectionManager(PoolConfig(host="h"), backend="asyncpg")


def test_missing_driver_names_the_extra(fakes: Any) -> None:
    with pytest.raises(BackendNotFoundError, match=r'pgconnector\[fakebroken\]'):
        ConnectionManager(PoolConfig(host="h"), backend="fakebroken")


def test_unsupported_mode_is_refused_at_construction(fakes: Any) -> None:
    with pytest.raises(UnsupportedBackendError) as info:
        ConnectionManager(PoolConfig(host="h"), backend="fakeasync")
    assert "fakesync" in str(info.value)  # names a backend that does support sync
    with pytest.raises(UnsupportedBackendError):
        AsyncConnectionManager(PoolConfig(host="h"), backend="fakesync")


def test_manager_backend_argument_overrides_config(fakes: Any) -> None:
    m = ConnectionManager(PoolConfig(host="h", backend="fakebroken"), backend="fakesync")
    assert m.backend_name == "fakesync"
    assert m.config.backend == "fakesync"


def test_available_backends_lists_capabilities(fakes: Any) -> None:
    infos = pgconnector.available_backends()
    assert infos["fakeasync"] == pgconnector.BackendInfo(
        name="fakeasync", distribution="pgconnector-fakeasync", supports_sync=False,
        supports_async=True, pure_python=True,
    )
    if "psycopg" in infos:
        assert infos["psycopg"].supports_sync and infos["psycopg"].supports_async
        assert infos["psycopg"].pure_python is False


def test_construction_does_no_io(fakes: Any) -> None:
    m = ConnectionManager("postgresql://u@203.0.113.1:1/d", backend="fakesync")
    assert m.is_initialized() is False
    assert m.get_pool_stats().total == 0


def test_importing_pgconnector_imports_no_driver() -> None:
    code = textwrap.dedent(
        """
        import sys
        import pgconnector
        pgconnector.available_backends()
        loaded = sorted(m for m in ("psycopg", "psycopg_pool", "asyncpg", "pg8000")
                        if m in sys.modules)
        print(",".join(loaded))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == ""
