"""LISTEN / NOTIFY: ``manager.listen()`` and ``client.notify()``, on every backend x manager."""

from __future__ import annotations

import asyncio
import secrets
import time

import pytest

from pgconnector import ConfigError, ConnectionError
from tests.backends.helpers import wait_until
from tests.conftest import MakeManager, Target
from tests.facade import ClientFacade, ManagerFacade

pytestmark = pytest.mark.integration


async def _sessions(c: ClientFacade, application_name: str) -> int:
    return int(await c.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", application_name
    ))


async def _until_sessions(c: ClientFacade, application_name: str, count: int) -> None:
    """Poll the server (through ``c``) until ``count`` sessions carry ``application_name``:
    the server ends a session a moment after its client hangs up."""
    deadline = time.monotonic() + 10.0
    while (seen := await _sessions(c, application_name)) != count:
        assert time.monotonic() < deadline, f"{seen} sessions, expected {count}"
        await asyncio.sleep(0.02)


async def test_notifications_arrive_in_order(make_manager: MakeManager) -> None:
    m = make_manager()
    await m.connect()
    async with m.connection() as c, m.listen("jobs") as stream:
        assert stream.channels == ("jobs",)
        pid = await c.fetchval("SELECT pg_backend_pid()")
        await c.notify("jobs", "first")
        await c.notify("other", "not listened to")
        await c.notify("jobs", "sécond ✓")
        await c.notify("jobs")
        got = await stream.take(3)
        assert [(n.channel, n.payload, n.pid) for n in got] == [
            ("jobs", "first", pid), ("jobs", "sécond ✓", pid), ("jobs", "", pid)
        ]
        with pytest.raises(TimeoutError):
            await stream.get(timeout=0.2)  # "other" never comes
        assert stream.reconnects == 0


async def test_get_raises_timeout_error(make_manager: MakeManager) -> None:
    m = make_manager()
    await m.connect()
    async with m.listen("quiet") as stream:
        with pytest.raises(TimeoutError, match="quiet"):
            await stream.get(timeout=0.1)
        with pytest.raises(TimeoutError):
            await stream.get(timeout=0)
        with pytest.raises(ConfigError):
            await stream.get(timeout=-1)


async def test_notify_is_delivered_at_commit_never_after_rollback(
    make_manager: MakeManager,
) -> None:
    m = make_manager()
    await m.connect()
    async with m.connection() as c, m.listen("tx") as stream:
        with pytest.raises(ZeroDivisionError):
            async with c.transaction():
                await c.notify("tx", "rolled back")
                raise ZeroDivisionError
        async with c.transaction():
            await c.notify("tx", "committed")
            with pytest.raises(TimeoutError):
                await stream.get(timeout=0.2)  # not before the commit
        await c.notify("tx", "after")
        assert [n.payload for n in await stream.take(2)] == ["committed", "after"]
        with pytest.raises(TimeoutError):
            await stream.get(timeout=0.2)


async def test_channel_names_are_identifiers(make_manager: MakeManager) -> None:
    m = make_manager()
    await m.connect()
    names = ("MyChannel", "with space", 'quo"te', "ünï")
    async with m.connection() as c, m.listen(*names, "MyChannel") as stream:
        assert stream.channels == names  # duplicates dropped, order kept
        await c.notify("mychannel", "case differs: not delivered")
        for name in names:
            await c.notify(name, name)
        got = await stream.take(len(names))
        assert [(n.channel, n.payload) for n in got] == [(name, name) for name in names]


async def test_bad_channels_raise_config_error_before_any_io(make_manager: MakeManager) -> None:
    m = make_manager()
    manager = m.manager
    # Not connected yet: nothing is opened for these.
    for channels in [(), ("",), ("ok", ""), ("x" * 64,), ("nul\x00",)]:
        with pytest.raises(ConfigError) as info:
            manager.listen(*channels)
        assert info.value.field == "channels"
    with pytest.raises(ConnectionError, match="Not connected"):
        manager.listen("jobs")
    await m.connect()
    async with m.connection() as c:
        with pytest.raises(ConfigError) as info:
            await c.notify("", "payload")
        assert info.value.field == "channel"
        assert await c.fetchval("SELECT 1") == 1


async def test_stream_connection_is_outside_the_pool(make_manager: MakeManager) -> None:
    name = "pgc-listen-" + secrets.token_hex(4)
    m = make_manager(min_size=1, max_size=1, application_name=name)
    await m.connect()
    async with m.connection() as c:  # the pool's only connection, borrowed
        before = m.get_pool_stats()
        async with m.listen("outside") as stream:
            stats = m.get_pool_stats()
            assert (stats.total, stats.in_use, stats.max_size) == (1, 1, 1)
            assert stats.connections_opened == before.connections_opened
            # The stream's session runs under the pool's application_name.
            assert await _sessions(c, name) == 2
            await c.notify("outside", "hello")
            assert (await stream.get(timeout=10)).payload == "hello"
        # Leaving the block closes the stream's session.
        await _until_sessions(c, name, 1)
        assert m.get_pool_stats().connections_closed == before.connections_closed


async def test_async_get_cancelled_loses_nothing(make_manager: MakeManager, target: Target) -> None:
    """A ``get`` abandoned by ``wait_for`` returns at once, and the stream keeps working; a
    task iterating the stream can be cancelled promptly."""
    if target.mode == "sync":
        pytest.skip("cancelling a waiting get is an async matter")
    m: ManagerFacade = make_manager()
    await m.connect()
    async with m.connection() as c, m.listen("cancel") as stream:
        for _ in range(3):
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(stream.get(), 0.05)
        await c.notify("cancel", "still here")
        assert (await stream.get(timeout=10)).payload == "still here"

        received: list[str] = []
        started = asyncio.Event()

        async def consume() -> None:
            started.set()
            async for n in stream.stream:  # type: ignore[union-attr]
                received.append(n.payload)

        task = asyncio.create_task(consume())
        await started.wait()
        await c.notify("cancel", "one")
        await wait_until(lambda: bool(received))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert received == ["one"]
        await c.notify("cancel", "two")
        assert (await stream.get(timeout=10)).payload == "two"
