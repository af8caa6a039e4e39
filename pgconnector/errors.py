"""The exceptions pgconnector raises.

::

    PgConnectorError(Exception)
    ├── ConfigError(PgConnectorError, ValueError)
    │   └── BackendNotFoundError
    ├── UnsupportedBackendError(PgConnectorError)
    ├── ClientReleasedError(PgConnectorError, RuntimeError)
    └── ConnectionError(PgConnectorError, builtins.ConnectionError)   # .cause
        └── PoolTimeoutError(ConnectionError, TimeoutError)

SQL errors (syntax, constraints, division by zero) are *not* wrapped: they reach the caller as
the driver's own exception types. Connection-level failures are translated at the backend
boundary into :class:`ConnectionError`, with the driver's exception chained as ``__cause__``
and kept on ``.cause``.
"""

from __future__ import annotations

import builtins

__all__ = [
    "PgConnectorError",
    "ConfigError",
    "BackendNotFoundError",
    "UnsupportedBackendError",
    "ClientReleasedError",
    "ConnectionError",
    "PoolTimeoutError",
]


class PgConnectorError(Exception):
    """Root of every exception raised by pgconnector itself."""


class ConfigError(PgConnectorError, ValueError):
    """Invalid configuration: the message names the field and how to fix it."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class BackendNotFoundError(ConfigError):
    """The requested backend is not installed, or its driver cannot be imported."""


class UnsupportedBackendError(PgConnectorError):
    """The backend exists but does not support this manager (e.g. asyncpg under the sync one)."""


class ClientReleasedError(PgConnectorError, RuntimeError):
    """A :class:`~pgconnector.Client` was used after ``release()``."""


class ConnectionError(PgConnectorError, builtins.ConnectionError):
    """Connecting to the server, or a connection, failed.

    The driver's exception, when there is one, is ``.cause`` (and ``__cause__``).
    """

    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.cause = cause
        if cause is not None:
            self.__cause__ = cause

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (str(self), self.cause))


class PoolTimeoutError(ConnectionError, TimeoutError):
    """No connection became free within the acquire timeout."""


for _cls in (
    PgConnectorError,
    ConfigError,
    BackendNotFoundError,
    UnsupportedBackendError,
    ClientReleasedError,
    ConnectionError,
    PoolTimeoutError,
):
    _cls.__module__ = "pgconnector"
del _cls
