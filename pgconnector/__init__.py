"""pgconnector: one PostgreSQL connection-pool lifecycle over psycopg, asyncpg or pg8000.

::

    from pgconnector import ConnectionManager, production_pool_config

    manager = ConnectionManager(production_pool_config(dsn="postgresql://app@db/app"))
    manager.connect()
    with manager.connection() as client:
        client.fetchval("SELECT $1::int + 1", 41)
    manager.disconnect()

Importing this package imports no database driver.
"""

from __future__ import annotations

from ._client import Client, CopyOut, Transaction
from ._client_async import AsyncClient, AsyncCopyOut, AsyncTransaction
from ._config import (
    ConnectParams,
    PoolConfig,
    development_pool_config,
    production_pool_config,
    test_pool_config,
)
from ._cursor import Cursor
from ._cursor_async import AsyncCursor
from ._events import EVENT_NAMES, LoggerLike, PoolEvent, setup_pool_listeners
from ._health import fetch_pool_stats, perform_health_check
from ._listen import NotificationStream
from ._listen_async import AsyncNotificationStream
from ._listen_base import Notification
from ._pool import ConnectionManager, ManagedPool
from ._pool_async import AsyncConnectionManager, AsyncManagedPool
from ._protocols import (
    AsyncDriverConnection,
    AsyncListener,
    AsyncPoolBackend,
    Backend,
    DriverConnection,
    Listener,
    ListenerBackend,
    PoolBackend,
    PoolHooks,
)
from ._registry import (
    BackendInfo,
    available_backends,
    get_backend,
    register_backend,
    unregister_backend,
)
from ._router import ReadWriteRouter
from ._router_async import AsyncReadWriteRouter
from ._router_base import RouterStats, RouterStatus
from ._row import Row
from ._stats import ConnectionStatus, PoolStats
from ._version import __version__ as __version__
from .errors import (
    BackendNotFoundError,
    ClientReleasedError,
    ConfigError,
    ConnectionError,
    DatabaseError,
    DataError,
    DeadlockDetected,
    ForeignKeyViolation,
    IntegrityError,
    InternalError,
    NotSupportedError,
    OperationalError,
    PgConnectorError,
    PoolTimeoutError,
    ProgrammingError,
    QueryCanceled,
    SerializationFailure,
    StatementTimeoutError,
    UniqueViolation,
    UnsupportedBackendError,
)

__all__ = [
    # managers
    "ConnectionManager",
    "AsyncConnectionManager",
    "ManagedPool",
    "AsyncManagedPool",
    "ReadWriteRouter",
    "AsyncReadWriteRouter",
    "Client",
    "AsyncClient",
    "Transaction",
    "AsyncTransaction",
    "CopyOut",
    "AsyncCopyOut",
    "Row",
    "Cursor",
    "AsyncCursor",
    # LISTEN / NOTIFY
    "Notification",
    "NotificationStream",
    "AsyncNotificationStream",
    # config
    "PoolConfig",
    "ConnectParams",
    "production_pool_config",
    "development_pool_config",
    "test_pool_config",
    # stats, health, events
    "PoolStats",
    "ConnectionStatus",
    "RouterStats",
    "RouterStatus",
    "PoolEvent",
    "EVENT_NAMES",
    "LoggerLike",
    "setup_pool_listeners",
    "perform_health_check",
    "fetch_pool_stats",
    # backends
    "Backend",
    "BackendInfo",
    "PoolBackend",
    "AsyncPoolBackend",
    "DriverConnection",
    "AsyncDriverConnection",
    "PoolHooks",
    "Listener",
    "AsyncListener",
    "ListenerBackend",
    "available_backends",
    "get_backend",
    "register_backend",
    "unregister_backend",
    # errors
    "PgConnectorError",
    "ConfigError",
    "BackendNotFoundError",
    "UnsupportedBackendError",
    "ClientReleasedError",
    "ConnectionError",
    "PoolTimeoutError",
    "DatabaseError",
    "DataError",
    "OperationalError",
    "IntegrityError",
    "InternalError",
    "ProgrammingError",
    "NotSupportedError",
    "UniqueViolation",
    "ForeignKeyViolation",
    "SerializationFailure",
    "DeadlockDetected",
    "QueryCanceled",
    "StatementTimeoutError",
]

for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) and _obj.__module__.startswith("pgconnector."):
        _obj.__module__ = "pgconnector"
del _name, _obj
