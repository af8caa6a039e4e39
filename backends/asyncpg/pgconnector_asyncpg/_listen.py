"""The asyncpg listener connection for ``manager.listen()``.

One asyncpg connection, opened as the pool opens its connections (the same connect arguments,
libpq's multi-host rules through ``aconnect_first``, TCP keepalives) but outside the pool.
asyncpg reads the socket all the time and hands each notification to the callbacks of
``add_listener`` (which also sends the ``LISTEN``, quoting the name as an identifier, as the
core does); they land in a list that ``wait`` drains. A lost connection is seen through
``add_termination_listener``. The stream around it is the core's
(:mod:`pgconnector._listen_async`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from contextlib import suppress
from typing import Any

import asyncpg

from pgconnector import ConnectionError, PoolConfig
from pgconnector._hosts import Attempt, connect_plan, describe_target
from pgconnector._listen_base import Notification
from pgconnector._multihost_async import aconnect_first

from ._params import connect_args, driver_message
from ._pool import _read_state, _terminate

__all__ = ["AsyncpgListener"]


class AsyncpgListener:
    """An :class:`~pgconnector._protocols.AsyncListener` over one asyncpg connection."""

    def __init__(self, con: Any, target: str, secrets: tuple[str | None, ...]) -> None:
        self._con = con
        self._target = target
        self._secrets = secrets
        self._received: list[Notification] = []
        self._arrived = asyncio.Event()
        self._lost = False
        con.add_termination_listener(self._terminated)

    @classmethod
    async def open(cls, config: PoolConfig, timeout: float) -> AsyncpgListener:
        params = config.connect_params()
        args = connect_args(config, params)
        secrets = (params.password, config.password, *args.secrets)
        target = describe_target(params)

        async def open_one(attempt: Attempt) -> Any:
            options = {**args.kwargs, "host": attempt.host, "port": attempt.port}
            return await asyncpg.connect(args.dsn, **options)

        try:
            con = await asyncio.wait_for(
                aconnect_first(
                    connect_plan(params),
                    open_one,
                    _read_state,
                    _terminate,
                    lambda exc: driver_message(exc, secrets),
                    params.target_session_attrs,
                ),
                timeout,
            )
        except Exception as exc:
            message = driver_message(exc, secrets)
            if isinstance(exc, asyncio.TimeoutError):
                message = f"connection timeout expired after {timeout:g} s"
            raise ConnectionError(
                f"could not connect to PostgreSQL at {target}: {message}", exc
            ) from exc
        transport = getattr(con, "_transport", None)
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is not None:
            args.socket_options.apply(sock)
        return cls(con, target, secrets)

    def _notified(self, con: Any, pid: int, channel: str, payload: str) -> None:
        self._received.append(Notification(channel, payload, pid))
        self._arrived.set()

    def _terminated(self, con: Any) -> None:
        self._lost = True
        self._arrived.set()

    def _broken(self, exc: BaseException | None) -> ConnectionError:
        detail = driver_message(exc, self._secrets) if exc is not None else "connection closed"
        return ConnectionError(
            f"LISTEN connection to PostgreSQL at {self._target} is broken: {detail}", exc
        )

    async def listen(self, channels: Sequence[str]) -> None:
        try:
            for channel in channels:
                await self._con.add_listener(channel, self._notified)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            raise self._broken(exc) from exc

    async def wait(self, timeout: float | None) -> list[Notification]:
        if not self._received and not self._lost:
            self._arrived.clear()
            with suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), timeout)
        received, self._received = self._received, []
        if not received and (self._lost or self._con.is_closed()):
            raise self._broken(None)
        return received

    async def close(self) -> None:
        con = self._con
        con.remove_termination_listener(self._terminated)
        with suppress(Exception):
            await asyncio.wait_for(con.close(), 1.0)
        if not con.is_closed():
            con.terminate()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._target}>"
