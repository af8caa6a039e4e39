"""The fault suite: what pgconnector does when things go wrong, on every backend and manager.

Every test here is marked ``@pytest.mark.fault(group, fault)`` with the row it stands for in
RELIABILITY.md, and builds its managers through the ``faults`` fixture (a :class:`FaultKit`),
which gives each test's connections an application name of their own so that, after the test,
it can check the books on both sides:

* **lost**: connections the pool opened but never reported closed (``connections_opened -
  connections_closed`` after ``disconnect()``) — must be 0;
* **leaked**: server sessions still open under the test's application name once every manager
  is disconnected (counted with ``psql`` on the server itself, not through the library under
  test) — must be 0.

Both are asserted at teardown and recorded, with whatever the test measured
(:meth:`FaultKit.record`), in the test's ``user_properties``, which ``tests/reliability.py``
collects for RELIABILITY.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from pgconnector import PoolConfig
from tests.backends.helpers import wait_until
from tests.conftest import ServerInfo, Target
from tests.facade import ManagerFacade, wrap_manager


@dataclass
class FaultKit:
    """Managers for one fault test, on the shared server or on servers of the test's own
    (:meth:`start_server`)."""

    target: Target
    pg_server: ServerInfo
    node: pytest.Item
    application_name: str = field(
        default_factory=lambda: "pgc-fault-" + secrets.token_hex(4)
    )
    managers: list[ManagerFacade] = field(default_factory=list)
    servers: list[Any] = field(default_factory=list)
    own: list[Any] = field(default_factory=list)

    @property
    def backend(self) -> str:
        return self.target.backend

    @property
    def mode(self) -> str:
        return self.target.mode

    def config(self, server: Any = None, dsn: str | None = None, **overrides: Any) -> PoolConfig:
        """The config a manager of this test gets: on ``dsn``, else ``server`` (an
        EmbeddedServer; default the shared test server), under the test's application name,
        with a connect timeout of 2 s unless told otherwise."""
        if dsn is None:
            dsn = server.dsn() if server is not None else self.pg_server.dsn
        overrides.setdefault("connect_timeout", 2.0)
        overrides.setdefault("application_name", self.application_name)
        return PoolConfig.from_dsn(dsn, **overrides)

    def manager(
        self, server: Any = None, dsn: str | None = None, **overrides: Any
    ) -> ManagerFacade:
        """A manager for the target, disconnected and audited at the end of the test."""
        facade = wrap_manager(self.config(server, dsn, **overrides), self.backend, self.mode)
        self.managers.append(facade)
        # Audit the server the sessions end up on (by default the shared one, also when a
        # DSN leads there another way: a proxy, other credentials).
        embedded = server if server is not None else self.pg_server.server
        if embedded is not None and embedded not in self.servers:
            self.servers.append(embedded)
        return facade

    def start_server(self, **kwargs: Any) -> Any:
        """A server of the test's own (an EmbeddedServer, which the test may stop, restart or
        break), stopped only after the audit has counted its sessions."""
        from tests.conftest import _embedded_or_skip

        server = _embedded_or_skip(password="own-" + secrets.token_urlsafe(12), **kwargs)
        server.start()
        self.own.append(server)
        return server

    def server_sessions(self, server: Any = None) -> int:
        """Sessions open on the server under this test's application name (asked with psql,
        not through the library under test)."""
        server = server if server is not None else self.pg_server.server
        return int(server.pg_stat_activity_count(self.application_name))

    def record(self, **measures: Any) -> None:
        """Keep a measure (seconds, counts) for RELIABILITY.md."""
        for key, value in measures.items():
            self.node.user_properties.append((key, value))

    async def audit(self) -> None:
        """Disconnect every manager, then check that nothing was lost or leaked."""
        for facade in self.managers:
            await facade.disconnect(timeout=5.0)
        lost = sum(
            f.get_pool_stats().connections_opened - f.get_pool_stats().connections_closed
            for f in self.managers
        )
        opened = sum(f.get_pool_stats().connections_opened for f in self.managers)
        leaked = 0
        for server in self.servers:
            if not server.is_running():
                continue
            # The server ends a session a moment after its client hangs up: wait for that.
            with contextlib.suppress(AssertionError):
                await wait_until(lambda s=server: self.server_sessions(s) == 0, timeout=10.0)
            leaked += self.server_sessions(server)
        self.record(opened=opened, lost=lost, leaked=leaked if self.servers else None)
        assert lost == 0, f"{lost} connection(s) opened but never reported closed"
        assert leaked == 0, f"{leaked} server session(s) left open after disconnect"


@pytest.fixture
async def faults(
    supported_target: Target, pg_server: ServerInfo, request: pytest.FixtureRequest
) -> AsyncIterator[FaultKit]:
    kit = FaultKit(supported_target, pg_server, request.node)
    try:
        yield kit
        await kit.audit()
    finally:
        for server in kit.own:
            server.cleanup()


# -- borrowers -------------------------------------------------------------------------------


@dataclass
class Borrow:
    """What one borrower saw: the value of its statement or the exception, and when."""

    started: float
    ended: float
    value: Any = None
    error: BaseException | None = None
    connection_id: int | None = None

    @property
    def seconds(self) -> float:
        return self.ended - self.started


async def borrow_many(
    m: ManagerFacade, n: int, sql: str = "SELECT 1", *, timeout: float | None = None
) -> list[Borrow]:
    """``n`` borrowers at once — tasks for the async manager, threads for the sync one — each
    borrowing a connection (within ``timeout``), running ``sql`` and releasing it. Returns
    what each saw, in the order they were started."""
    def sync_borrow() -> Borrow:
        started = time.monotonic()
        try:
            with m.manager.connection(timeout) as c:  # type: ignore[union-attr]
                value = c.fetchval(sql)
                cid = c.connection_id
            return Borrow(started, time.monotonic(), value, connection_id=cid)
        except Exception as exc:
            return Borrow(started, time.monotonic(), error=exc)

    async def async_borrow() -> Borrow:
        started = time.monotonic()
        try:
            async with m.connection(timeout) as c:
                value = await c.fetchval(sql)
                cid = c.connection_id
            return Borrow(started, time.monotonic(), value, connection_id=cid)
        except Exception as exc:
            return Borrow(started, time.monotonic(), error=exc)

    if m.mode == "sync":
        return list(await asyncio.gather(*(asyncio.to_thread(sync_borrow) for _ in range(n))))
    return list(await asyncio.gather(*(async_borrow() for _ in range(n))))



async def borrow_ids(m: ManagerFacade, n: int) -> set[int]:
    """Borrow ``n`` connections at once, check that each works, give them back: their ids."""
    clients = [await m.get_client() for _ in range(n)]
    for c in clients:
        assert await c.fetchval("SELECT 1") == 1
        await c.release()
    return {c.connection_id for c in clients}
