"""The pg8000 backend for pgconnector: pgconnector's own pool over the pure-Python pg8000.

Registered under the ``pgconnector.backends`` entry-point group as ``pg8000``. Importing this
module does not import pg8000: the core lists backends without loading any driver, so the
driver module is imported only when a pool is created.

pg8000 has no pool of its own; the pool is :mod:`pgconnector._generic_pool`, written once in the
core for any blocking driver (its state machine is in :mod:`pgconnector._generic_state`). This
distribution adapts pg8000 to that pool's small driver protocol (``_driver.py``): opening a
connection (TCP or Unix socket, TLS negotiated as libpq's ``sslmode`` says, with one
``ssl.SSLContext`` per pool), running ``$1``-style statements in one round trip, decoding the
same Python types as the other backends, and telling a broken connection from a failed
statement. The same pool serves the sync manager directly and the async manager from worker
threads, so pg8000's blocking calls never run on the event loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pgconnector import PoolConfig, PoolHooks
    from pgconnector._generic_pool import AsyncGenericPool, GenericPool
    from pgconnector._listen_base import AsyncThreadListener

    from ._listen import Pg8000Listener

__all__ = ["Pg8000Backend", "backend"]

#: The oldest pg8000 whose internals the driver module was written against (1.31 added the
#: ``startup_params`` that carry ``server_settings``).
MIN_PG8000 = (1, 31)


class Pg8000Backend:
    """The :class:`pgconnector.Backend` for pg8000 (sync and async, pure Python)."""

    name = "pg8000"
    distribution = "pgconnector-pg8000"
    supports_sync = True
    supports_async = True
    pure_python = True

    def check_driver(self) -> None:
        import pg8000.native  # type: ignore[import-untyped]

        version = tuple(int(part) for part in pg8000.native.__version__.split(".")[:2])
        if version < MIN_PG8000:
            raise ImportError(
                f"pgconnector-pg8000 needs pg8000>={'.'.join(map(str, MIN_PG8000))}, found "
                f"{pg8000.native.__version__}"
            )

    def create_pool(self, config: PoolConfig, hooks: PoolHooks) -> GenericPool:
        from pgconnector._generic_pool import GenericPool

        from ._driver import Pg8000Driver

        return GenericPool(config, hooks, Pg8000Driver(config), name="pgconnector-pg8000")

    def create_async_pool(self, config: PoolConfig, hooks: PoolHooks) -> AsyncGenericPool:
        from pgconnector._generic_pool import AsyncGenericPool

        from ._driver import Pg8000Driver

        return AsyncGenericPool(config, hooks, Pg8000Driver(config), name="pgconnector-pg8000")

    def open_listener(self, config: PoolConfig, timeout: float) -> Pg8000Listener:
        from ._listen import Pg8000Listener

        return Pg8000Listener.open(config, timeout)

    async def open_async_listener(
        self, config: PoolConfig, timeout: float
    ) -> AsyncThreadListener:
        # pg8000 blocks: its listener runs in a thread, interrupted when its caller is
        # cancelled (the core's async face for blocking listeners).
        from pgconnector._listen_base import AsyncThreadListener

        from ._listen import Pg8000Listener

        return await AsyncThreadListener.open(lambda: Pg8000Listener.open(config, timeout))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


#: The object the entry point ``pg8000 = "pgconnector_pg8000:backend"`` names.
backend = Pg8000Backend()
