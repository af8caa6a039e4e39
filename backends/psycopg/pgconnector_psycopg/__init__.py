"""The psycopg 3 backend for pgconnector: adapts ``psycopg_pool.ConnectionPool`` (sync) and
``psycopg_pool.AsyncConnectionPool`` (async).

Registered under the ``pgconnector.backends`` entry-point group as ``psycopg``. Importing this
module imports neither psycopg nor psycopg_pool: the core lists backends without loading any
driver, so the pool modules are imported only when a pool is created.

How the pieces fit (details in ``_pool_async.py``, the source of ``_pool.py``):

* psycopg_pool does the pooling: sizing, growing on demand, shrinking idle connections down to
  ``min_size``, ``max_lifetime`` with jitter, background reconnection, and the ``check``
  callback that pings a connection idle longer than ``ping_after_idle`` before handing it out.
* A per-pool subclass of psycopg's connection reports every server connection to the core's
  :class:`~pgconnector.PoolHooks` exactly once when it is ready and exactly once when it is
  closed, whichever path closes it, and records connect failures (so that ``open()`` can fail
  with the real driver error).
* Each server connection gets one adapter object (a ``DriverConnection``) for its whole life:
  it runs ``$1``-style statements through a ``RawCursor`` in autocommit mode and translates
  connection-level failures into :class:`pgconnector.ConnectionError`.
* The adapter pool implements what psycopg_pool does not: ``max_uses``, the release reset
  without a round trip for a clean connection, the session reset, and failing fast while the
  server is unreachable.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pgconnector import PoolConfig, PoolHooks

    from ._listen import PsycopgListener
    from ._listen_async import AsyncPsycopgListener
    from ._pool import PsycopgPool
    from ._pool_async import AsyncPsycopgPool

__all__ = ["PsycopgBackend", "backend"]


class PsycopgBackend:
    """The :class:`pgconnector.Backend` for psycopg 3 (sync and async)."""

    name = "psycopg"
    distribution = "pgconnector-psycopg"
    supports_sync = True
    supports_async = True
    # psycopg needs libpq: bundled by psycopg[binary], or the system's.
    pure_python = False

    def check_driver(self) -> None:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401

    def create_pool(self, config: PoolConfig, hooks: PoolHooks) -> PsycopgPool:
        from ._pool import PsycopgPool

        return PsycopgPool(config, hooks)

    def create_async_pool(self, config: PoolConfig, hooks: PoolHooks) -> AsyncPsycopgPool:
        from ._pool_async import AsyncPsycopgPool

        return AsyncPsycopgPool(config, hooks)

    def open_listener(self, config: PoolConfig, timeout: float) -> PsycopgListener:
        from ._listen import PsycopgListener

        return PsycopgListener.open(config, timeout)

    async def open_async_listener(
        self, config: PoolConfig, timeout: float
    ) -> AsyncPsycopgListener:
        from ._listen_async import AsyncPsycopgListener

        return await AsyncPsycopgListener.open(config, timeout)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


#: The object the entry point ``psycopg = "pgconnector_psycopg:backend"`` names.
backend = PsycopgBackend()
