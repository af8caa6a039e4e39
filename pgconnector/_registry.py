"""Finding backends: in-process registrations first, then the ``pgconnector.backends``
entry-point group. Listing them never imports a driver."""

from __future__ import annotations

import difflib
import os
import threading
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Literal

from ._config import PoolConfig
from ._protocols import Backend
from .errors import BackendNotFoundError, PgConnectorError, UnsupportedBackendError

__all__ = [
    "ENTRY_POINT_GROUP",
    "AUTO_ORDER",
    "BackendInfo",
    "available_backends",
    "get_backend",
    "register_backend",
    "unregister_backend",
    "resolve_backend",
]

ENTRY_POINT_GROUP = "pgconnector.backends"
#: The order "auto" tries installed backends in.
AUTO_ORDER = ("psycopg", "asyncpg", "pg8000")
#: The backends this project ships, so that a missing one can be named with its extra.
KNOWN_BACKENDS = {
    "psycopg": "pgconnector-psycopg",
    "asyncpg": "pgconnector-asyncpg",
    "pg8000": "pgconnector-pg8000",
}
#: What the shipped backends can serve, so that a missing one is not suggested for a manager
#: it could never serve (installing asyncpg does not make the sync manager work).
_KNOWN_SYNC = {"psycopg": True, "asyncpg": False, "pg8000": True}

Mode = Literal["sync", "async"]


@dataclass(frozen=True)
class BackendInfo:
    """What ``available_backends()`` reports about one installed backend."""

    name: str
    distribution: str
    supports_sync: bool
    supports_async: bool
    pure_python: bool


_lock = threading.Lock()
_registered: dict[str, Backend] = {}
_loaded: dict[str, Backend] = {}


def register_backend(backend: Backend) -> None:
    """Register a backend object in this process (takes precedence over entry points).

    Meant for tests and for applications that ship a private backend.
    """
    if not isinstance(backend, Backend):
        raise TypeError(f"{backend!r} does not implement the pgconnector Backend protocol")
    with _lock:
        _registered[backend.name] = backend


def unregister_backend(name: str) -> None:
    with _lock:
        _registered.pop(name, None)


def _entry_points() -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep)
    return found


def _installed_names() -> list[str]:
    names = set(_registered) | set(_entry_points())
    ordered = [n for n in AUTO_ORDER if n in names]
    return ordered + sorted(names - set(AUTO_ORDER))


def _not_found(name: str, mode: Mode | None = None) -> PgConnectorError:
    installed = _installed_names()
    listed = ", ".join(installed) if installed else "none"
    if name not in KNOWN_BACKENDS:
        candidates = list(dict.fromkeys([*KNOWN_BACKENDS, *installed]))
        close = difflib.get_close_matches(name, candidates, n=1)
        guess = f"; did you mean {close[0]!r}?" if close else "."
        return BackendNotFoundError(
            f"unknown backend {name!r}{guess} Known: {', '.join(KNOWN_BACKENDS)}; "
            f"installed: {listed}",
            field="backend",
        )
    if mode == "sync" and not _KNOWN_SYNC[name]:
        return _unsupported(name, mode)
    return BackendNotFoundError(
        f"backend {name!r} is not installed (installed: {listed}). "
        f'Install it with: pip install "pgconnector[{name}]"',
        field="backend",
    )


def _unsupported(name: str, mode: Mode) -> UnsupportedBackendError:
    supporting = [
        info.name
        for info in available_backends().values()
        if (info.supports_sync if mode == "sync" else info.supports_async)
    ]
    other = "AsyncConnectionManager" if mode == "sync" else "ConnectionManager"
    return UnsupportedBackendError(
        f"backend {name!r} cannot serve the {mode} manager at all; use {other} with it, "
        f"or a backend that supports {mode} (installed: "
        + (", ".join(supporting) if supporting else "none")
        + ")"
    )


def _load(name: str, mode: Mode | None = None) -> Backend:
    with _lock:
        if name in _registered:
            return _registered[name]
        if name in _loaded:
            return _loaded[name]
    ep = _entry_points().get(name)
    if ep is None:
        raise _not_found(name, mode)
    try:
        obj = ep.load()
    except Exception as exc:
        # A broken plugin must not break the others (nor available_backends()): report it
        # as not found, with the reason.
        raise BackendNotFoundError(
            f"pgconnector backend {name!r} is registered by {ep.value!r} but cannot be "
            f"loaded ({type(exc).__name__}: {exc}). Reinstall it with: "
            f'pip install "pgconnector[{name}]"',
            field="backend",
        ) from exc
    if isinstance(obj, type):
        obj = obj()
    if not isinstance(obj, Backend):
        raise BackendNotFoundError(
            f"entry point {name!r} in group {ENTRY_POINT_GROUP!r} ({ep.value}) does not "
            "provide a pgconnector Backend object",
            field="backend",
        )
    with _lock:
        _loaded.setdefault(name, obj)
        return _loaded[name]


def get_backend(name: str) -> Backend:
    """The backend object called ``name``, its driver checked importable.

    Raises :class:`BackendNotFoundError` for an unknown name (listing the installed ones and
    the ``pip install`` line) or for a known backend whose driver is missing.
    """
    return _checked(_load(name))


def _checked(backend: Backend) -> Backend:
    try:
        backend.check_driver()
    except ImportError as exc:
        raise BackendNotFoundError(
            f"backend {backend.name!r} is installed but its driver is missing ({exc}). "
            f'Install it with: pip install "pgconnector[{backend.name}]"',
            field="backend",
        ) from exc
    return backend


def available_backends() -> dict[str, BackendInfo]:
    """The installed backends, keyed by name, in the order ``"auto"`` tries them.

    Does not import any driver: a backend listed here may still report a missing driver
    when a manager is built with it.
    """
    result: dict[str, BackendInfo] = {}
    for name in _installed_names():
        try:
            b = _load(name)
        except BackendNotFoundError:
            continue
        result[name] = BackendInfo(
            name=b.name,
            distribution=b.distribution,
            supports_sync=b.supports_sync,
            supports_async=b.supports_async,
            pure_python=b.pure_python,
        )
    return result


def _supports(backend: Backend, mode: Mode) -> bool:
    return backend.supports_sync if mode == "sync" else backend.supports_async


def resolve_backend(config: PoolConfig, override: str | None, mode: Mode) -> Backend:
    """Pick the backend for a manager, in the contract's order of precedence:
    the manager's ``backend=`` argument, ``PoolConfig.backend``, the DSN's ``+scheme``,
    ``PGCONNECTOR_BACKEND``, then the first installed of psycopg, asyncpg, pg8000 that
    supports ``mode``."""
    name = override
    if name is None and config.backend != "auto":
        name = config.backend
    if name is None:
        name = config.dsn_backend
    if name is None:
        env = os.environ.get("PGCONNECTOR_BACKEND", "").strip()
        name = env or None
    if name is not None and name != "auto":
        # The mode first: a backend that cannot serve this manager is refused as such, not
        # sent to fetch a driver that would not help.
        backend = _load(name, mode)
        if not _supports(backend, mode):
            raise _unsupported(name, mode)
        return _checked(backend)
    for candidate in _installed_names():
        try:
            backend = get_backend(candidate)
        except BackendNotFoundError:
            continue
        if _supports(backend, mode):
            return backend
    raise BackendNotFoundError(
        f"no pgconnector backend supporting the {mode} manager is installed "
        f"(installed: {', '.join(_installed_names()) or 'none'}). Install one with: "
        'pip install "pgconnector[psycopg]" (or [asyncpg], [pg8000])',
        field="backend",
    )
