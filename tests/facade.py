"""One async face for both managers, so that a conformance test is written once.

For the async manager the facade passes calls through. For the sync manager it calls the sync
method directly (blocking the test's event loop, which has nothing else to do) and hands back
the result as an awaitable. Tests that are about concurrency itself (threads vs tasks) branch
on ``facade.mode`` and use the real manager (``facade.manager``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from pgconnector import (
    AsyncClient,
    AsyncConnectionManager,
    AsyncCopyOut,
    AsyncCursor,
    AsyncNotificationStream,
    Client,
    ConnectionManager,
    ConnectionStatus,
    CopyOut,
    Cursor,
    Notification,
    NotificationStream,
    PoolConfig,
    PoolStats,
    Row,
)


class ClientFacade:
    def __init__(self, client: Client | AsyncClient) -> None:
        self.client = client
        self.is_async = isinstance(client, AsyncClient)

    async def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        result = getattr(self.client, name)(*args, **kwargs)
        if self.is_async:
            result = await result
        return result

    async def execute(self, sql: str, *args: Any, timeout: Any = None) -> str:
        return await self._call("execute", sql, *args, timeout=timeout)  # type: ignore[no-any-return]

    async def fetch(self, sql: str, *args: Any, timeout: Any = None) -> list[Row]:
        return await self._call("fetch", sql, *args, timeout=timeout)  # type: ignore[no-any-return]

    async def fetchrow(self, sql: str, *args: Any, timeout: Any = None) -> Row | None:
        return await self._call("fetchrow", sql, *args, timeout=timeout)  # type: ignore[no-any-return]

    async def fetchval(self, sql: str, *args: Any, column: int = 0, timeout: Any = None) -> Any:
        return await self._call("fetchval", sql, *args, column=column, timeout=timeout)

    async def release(self) -> None:
        await self._call("release")

    async def notify(self, channel: str, payload: str = "") -> None:
        await self._call("notify", channel, payload)

    def cursor(
        self, sql: str, *args: Any, prefetch: int = 100, timeout: float | None = None
    ) -> CursorFacade:
        return CursorFacade(self.client.cursor(sql, *args, prefetch=prefetch, timeout=timeout))
    async def copy_records_to_table(self, table: str, records: Any, **kwargs: Any) -> int:
        return await self._call("copy_records_to_table", table, records, **kwargs)  # type: ignore[no-any-return]

    async def copy_in(self, sql: str, source: Any, **kwargs: Any) -> int:
        return await self._call("copy_in", sql, source, **kwargs)  # type: ignore[no-any-return]

    def copy_out(self, sql: str, **kwargs: Any) -> CopyOutFacade:
        return CopyOutFacade(self.client.copy_out(sql, **kwargs))

    async def executemany(self, sql: str, rows: Any, *, timeout: float | None = None) -> None:
        await self._call("executemany", sql, rows, timeout=timeout)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[ClientFacade]:
        if isinstance(self.client, AsyncClient):
            async with self.client.transaction():
                yield self
        else:
            with self.client.transaction():
                yield self

    @property
    def raw(self) -> Any:
        return self.client.raw

    @property
    def connection_id(self) -> int:
        return self.client.connection_id

    @property
    def released(self) -> bool:
        return self.client.released


class CursorFacade:
    """A Cursor with the async face: iteration, ``async with`` and ``aclose()``.

    It holds nothing but the cursor, so dropping the facade drops the cursor (the tests of
    finalization rely on that)."""

    __slots__ = ("cursor",)

    def __init__(self, cursor: Cursor | AsyncCursor) -> None:
        self.cursor = cursor

    def __aiter__(self) -> CursorFacade:
        return self

    async def __anext__(self) -> Row:
        if isinstance(self.cursor, AsyncCursor):
            return await self.cursor.__anext__()
        try:
            return next(self.cursor)
        except StopIteration:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> CursorFacade:
        if isinstance(self.cursor, AsyncCursor):
            await self.cursor.__aenter__()
        else:
            self.cursor.__enter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        if isinstance(self.cursor, AsyncCursor):
            await self.cursor.__aexit__(*exc_info)
        else:
            self.cursor.__exit__(*exc_info)

    async def aclose(self) -> None:
        if isinstance(self.cursor, AsyncCursor):
            await self.cursor.aclose()
        else:
            self.cursor.close()

    @property
    def closed(self) -> bool:
        return self.cursor.closed

    @property
    def buffered(self) -> int:
        """How many rows the cursor object holds right now."""
        return len(self.cursor._buffer)
class CopyOutFacade:
    """A copy_out() iterator with the async face (a sync ``next`` blocks the test's loop)."""

    def __init__(self, chunks: CopyOut | AsyncCopyOut) -> None:
        self.chunks = chunks

    def __aiter__(self) -> CopyOutFacade:
        return self

    async def __anext__(self) -> bytes:
        if isinstance(self.chunks, AsyncCopyOut):
            return await self.chunks.__anext__()
        try:
            return next(self.chunks)
        except StopIteration:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        if isinstance(self.chunks, AsyncCopyOut):
            await self.chunks.aclose()
        else:
            self.chunks.close()

    async def read_all(self) -> bytes:
        return b"".join([chunk async for chunk in self])


class StreamFacade:
    """A NotificationStream with the async face (a sync ``get`` blocks the test's loop)."""

    def __init__(self, stream: NotificationStream | AsyncNotificationStream) -> None:
        self.stream = stream

    async def get(self, timeout: float | None = None) -> Notification:
        if isinstance(self.stream, AsyncNotificationStream):
            return await self.stream.get(timeout)
        return self.stream.get(timeout)

    async def take(self, n: int, timeout: float = 10.0) -> list[Notification]:
        """The next ``n`` notifications, each within ``timeout``."""
        return [await self.get(timeout) for _ in range(n)]

    @property
    def reconnects(self) -> int:
        return self.stream.reconnects

    @property
    def channels(self) -> tuple[str, ...]:
        return self.stream.channels


class ManagerFacade:
    def __init__(self, manager: ConnectionManager | AsyncConnectionManager) -> None:
        self.manager = manager
        self.mode = "async" if isinstance(manager, AsyncConnectionManager) else "sync"

    async def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        result = getattr(self.manager, name)(*args, **kwargs)
        if self.mode == "async":
            result = await result
        return result

    async def connect(self) -> Any:
        return await self._call("connect")

    async def disconnect(self, timeout: float = 10.0) -> None:
        await self._call("disconnect", timeout=timeout)

    async def health_check(self, timeout: float | None = None) -> ConnectionStatus:
        return await self._call("health_check", timeout)  # type: ignore[no-any-return]

    async def get_client(self, timeout: float | None = None) -> ClientFacade:
        return ClientFacade(await self._call("get_client", timeout))

    @asynccontextmanager
    async def connection(self, timeout: float | None = None) -> AsyncIterator[ClientFacade]:
        client = await self.get_client(timeout)
        try:
            yield client
        finally:
            await client.release()

    @asynccontextmanager
    async def listen(self, *channels: str, on_reconnect: Any = None) -> AsyncIterator[StreamFacade]:
        if isinstance(self.manager, AsyncConnectionManager):
            async with self.manager.listen(*channels, on_reconnect=on_reconnect) as stream:
                yield StreamFacade(stream)
        else:
            with self.manager.listen(*channels, on_reconnect=on_reconnect) as sync_stream:
                yield StreamFacade(sync_stream)

    def get_pool(self) -> Any:
        return self.manager.get_pool()

    def get_pool_stats(self) -> PoolStats:
        return self.manager.get_pool_stats()

    def is_initialized(self) -> bool:
        return self.manager.is_initialized()

    def add_listener(self, event: str, callback: Any) -> None:
        self.manager.add_listener(event, callback)

    @property
    def backend_name(self) -> str:
        return self.manager.backend_name

    @property
    def config(self) -> PoolConfig:
        return self.manager.config


def wrap_manager(config: PoolConfig, backend: str, mode: str) -> ManagerFacade:
    cls = ConnectionManager if mode == "sync" else AsyncConnectionManager
    return ManagerFacade(cls(config, backend=backend))
