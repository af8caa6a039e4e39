"""Failover on real servers, on every backend and manager.

* A primary with a synchronous streaming standby; the pool's DSN lists both, with
  ``target_session_attrs=read-write``. A writer keeps inserting while the primary is stopped and
  the standby promoted. The pool reports the outage, reconnects to the new primary by itself,
  and every write it acknowledged is on the new primary.
* Two primaries, the first of which is fenced (``default_transaction_read_only`` turned on by a
  configuration reload, as failover managers do to an old primary): connections to it are
  retired, the health check says why, and the pool moves to the second by itself.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import pytest

from pgconnector import ConnectionError, PoolConfig, PoolTimeoutError
from pgconnector._embedded import EmbeddedServer
from tests.backends.helpers import wait_until
from tests.conftest import Target, _embedded_or_skip
from tests.facade import ManagerFacade, wrap_manager
from tests.topology import Replication

pytestmark = pytest.mark.integration
GROUP = "Failover and multi-host"


def pair_dsn(first: EmbeddedServer, second: EmbeddedServer, **params: str) -> str:
    words = [
        "host=127.0.0.1,127.0.0.1",
        f"port={first.port},{second.port}",
        f"user={first.user} dbname={first.database} password={first.password}",
    ]
    words += [f"{key}={value}" for key, value in params.items()]
    return " ".join(words)


class Writer:
    """Inserts 1, 2, 3, … one statement each, until stopped; keeps what was acknowledged."""

    def __init__(self, manager: ManagerFacade) -> None:
        self.manager = manager
        self.acknowledged: list[int] = []
        self.in_doubt: list[int] = []
        self.errors: list[str] = []
        self.stopped = False

    async def run(self) -> None:
        n = 0
        while not self.stopped:
            n += 1
            try:
                async with self.manager.connection(timeout=2.0) as client:
                    await client.execute("INSERT INTO acks (id) VALUES ($1)", n)
            except (ConnectionError, PoolTimeoutError) as exc:
                # The caller was told it failed: the row may or may not be there.
                self.in_doubt.append(n)
                self.errors.append(str(exc))
                # An application's retry pause; the pool fails fast during the outage.
                await asyncio.sleep(0.02)
            else:
                self.acknowledged.append(n)
            await asyncio.sleep(0)  # let the test (and, for the sync manager, nothing else) run


def server_ids(server: EmbeddedServer) -> set[int]:
    out = server.admin_execute("SELECT id FROM acks")
    return {int(line) for line in str(out).split()}


@pytest.mark.fault(GROUP, "Primary stopped, synchronous standby promoted")
async def test_failover_to_a_promoted_standby_loses_no_acknowledged_write(
    supported_target: Target, replication: Replication, record_property: Any
) -> None:
    """A read-write pool over ``host=primary,standby`` with a writer running: the outage is
    reported by the health check, the same manager writes to the promoted standby by itself, and
    every acknowledged write is there (0 lost).
    """
    primary, standby = replication.primary, replication.standby
    primary.admin_execute("CREATE TABLE acks (id int PRIMARY KEY)")
    replication.wait_replayed()
    config = PoolConfig.from_dsn(
        pair_dsn(primary, standby, target_session_attrs="read-write"),
        min_size=2,
        max_size=4,
        connect_timeout=2.0,
        ping_after_idle=0.0,
    )
    manager = wrap_manager(config, supported_target.backend, supported_target.mode)
    await manager.connect()
    writer = Writer(manager)
    task = asyncio.create_task(writer.run())
    try:
        await wait_until(lambda: len(writer.acknowledged) >= 30, timeout=20)

        await asyncio.to_thread(primary.stop, "fast")
        # No read-write server now: the standby is still in recovery.
        status = await manager.health_check(timeout=5.0)
        assert not status.connected
        assert status.error is not None
        before_promotion = len(writer.acknowledged)

        started = time.monotonic()
        await asyncio.to_thread(standby.promote)
        # The same manager reconnects to the new primary by itself.
        await wait_until(lambda: len(writer.acknowledged) >= before_promotion + 30, timeout=30)
        recovery = time.monotonic() - started
    finally:
        writer.stopped = True
        await task

    status = await manager.health_check(timeout=5.0)
    assert status.connected, status.error
    async with manager.connection() as client:
        assert await client.fetchval("SELECT pg_is_in_recovery()") is False
        assert await client.fetchval("SELECT current_setting('port')::int") == standby.port
    assert manager.get_pool_stats().total >= 1
    await manager.disconnect()

    on_new_primary = server_ids(standby)
    lost = set(writer.acknowledged) - on_new_primary
    assert not lost, f"acknowledged writes missing after failover: {sorted(lost)[:10]}"
    assert writer.in_doubt, "the outage was never noticed"
    assert config.password is None or all(config.password not in e for e in writer.errors)
    record_property("acknowledged_writes", len(writer.acknowledged))
    record_property("failed_during_outage", len(writer.in_doubt))
    record_property("lost_writes", len(lost))
    record_property("resumed_after_promotion_s", round(recovery, 3))


@pytest.mark.fault(GROUP, "Primary fenced read-only by a configuration reload")
async def test_a_fenced_primary_is_retired_and_the_pool_moves_on(
    supported_target: Target, record_property: Any
) -> None:
    """Over ``host=a,b`` with read-write: once ``a`` turns ``default_transaction_read_only`` on,
    the health check reports it, its connections are retired, and borrows reach ``b``; no
    session is left on either server.
    """
    password = "fence-" + secrets.token_urlsafe(12)
    first = _embedded_or_skip(password=password)
    second = EmbeddedServer(password=password)
    with first, second:
        config = PoolConfig.from_dsn(
            pair_dsn(first, second, target_session_attrs="read-write"),
            min_size=2,
            max_size=4,
            connect_timeout=2.0,
        )
        manager = wrap_manager(config, supported_target.backend, supported_target.mode)
        await manager.connect()
        try:
            async with manager.connection() as client:
                assert await client.fetchval("SELECT current_setting('port')::int") == first.port

            first.admin_execute(
                "ALTER SYSTEM SET default_transaction_read_only = on; SELECT pg_reload_conf()"
            )
            # The server tells each session of the change when it next talks to it; until the
            # reload has reached a session, the check still passes: poll the health check.
            reports: list[Any] = []

            async def fenced_reported() -> bool:
                status = await manager.health_check(timeout=5.0)
                reports.append(status)
                return not status.connected

            deadline = time.monotonic() + 15
            while not await fenced_reported():
                assert time.monotonic() < deadline, "the fence was never noticed"
                await asyncio.sleep(0.05)
            error = reports[-1].error
            assert "read-only primary" in error and "read-write" in error, error

            # The next borrows reach the second server, without a new manager.
            async def port_now() -> int:
                async with manager.connection() as client:
                    return int(await client.fetchval("SELECT current_setting('port')::int"))

            moving = time.monotonic()
            deadline = moving + 15
            while await port_now() != second.port:
                assert time.monotonic() < deadline, "the pool never moved to the second server"
            record_property("moved_s", round(time.monotonic() - moving, 3))
            for _ in range(8):
                assert await port_now() == second.port
            status = await manager.health_check(timeout=5.0)
            assert status.connected, status.error
        finally:
            await manager.disconnect()
        assert first.pg_stat_activity_count() == 0
        assert second.pg_stat_activity_count() == 0
