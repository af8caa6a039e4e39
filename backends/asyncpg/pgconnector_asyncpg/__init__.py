"""The asyncpg backend for pgconnector: adapts ``asyncpg.Pool`` for ``AsyncConnectionManager``.

Registered under the ``pgconnector.backends`` entry-point group as ``asyncpg``. asyncpg is
asyncio-only, so this backend supports the async manager only; the sync manager refuses it
when it is built (``UnsupportedBackendError``). Importing this module does not import
asyncpg: the core lists backends without loading any driver, so the pool module is imported
only when a pool is created.

How the pieces fit (details in ``_pool.py``):

* asyncpg's pool does the pooling: a LIFO queue, cancellation-safe acquire and release, the
  inactivity timer (``idle_timeout``), and restoring ``min_size`` in the background after
  connections close (asyncpg 0.32 and later).
* A ``connection_class`` reports every server connection to the core's
  :class:`~pgconnector.PoolHooks` exactly once when it closes, whichever path closes it; a
  ``connect=`` callable reports it open (and every failed attempt), and installs the
  json/jsonb and uuid codecs that make values decode as on the other backends.
* The adapter pool releases a clean connection with no round trip (asyncpg's own reset
  query is replaced by a no-op), rolls back an open transaction in one, and adds
  ``max_uses``, ``max_lifetime``, ``ping_after_idle`` and failing fast while the server is
  unreachable.
* Connection parameters come only from :meth:`pgconnector.PoolConfig.connect_params`
  (``_params.py`` says how each libpq keyword maps onto asyncpg).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from pgconnector import PoolConfig, PoolHooks

    from ._listen import AsyncpgListener
    from ._pool import AsyncpgPool

__all__ = ["AsyncpgBackend", "backend", "MIN_ASYNCPG"]

#: The oldest asyncpg this backend works with: 0.32 made ``min_size`` a floor that the pool
#: restores by itself.
MIN_ASYNCPG = (0, 32)


class AsyncpgBackend:
    """The :class:`pgconnector.Backend` for asyncpg (async only)."""

    name = "asyncpg"
    distribution = "pgconnector-asyncpg"
    supports_sync = False
    supports_async = True
    # asyncpg's protocol and codecs are compiled (Cython) extension modules.
    pure_python = False

    def check_driver(self) -> None:
        import asyncpg

        version = _version_tuple(asyncpg.__version__)
        if version < MIN_ASYNCPG:
            raise ImportError(
                f"pgconnector-asyncpg needs asyncpg>={'.'.join(map(str, MIN_ASYNCPG))}, "
                f"found {asyncpg.__version__}"
            )

    def create_pool(self, config: PoolConfig, hooks: PoolHooks) -> NoReturn:
        from pgconnector import UnsupportedBackendError

        raise UnsupportedBackendError(
            "the asyncpg backend is async-only: use AsyncConnectionManager, or a backend "
            "that supports the sync ConnectionManager (psycopg, pg8000)"
        )

    def create_async_pool(self, config: PoolConfig, hooks: PoolHooks) -> AsyncpgPool:
        from ._pool import AsyncpgPool

        return AsyncpgPool(config, hooks)

    async def open_async_listener(self, config: PoolConfig, timeout: float) -> AsyncpgListener:
        from ._listen import AsyncpgListener

        return await AsyncpgListener.open(config, timeout)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def _version_tuple(text: str) -> tuple[int, ...]:
    """``"0.32.0"`` -> ``(0, 32, 0)``; ``"0.33.0rc1"`` -> ``(0, 33, 0)``."""
    import re

    parts: list[int] = []
    for part in text.split("."):
        match = re.match(r"[0-9]+", part)
        if match is None:
            break
        parts.append(int(match.group()))
        if match.end() != len(part):
            break
    return tuple(parts)


#: The object the entry point ``asyncpg = "pgconnector_asyncpg:backend"`` names.
backend = AsyncpgBackend()
