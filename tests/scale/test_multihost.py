"""Multi-host DSNs on real servers: every backend picks the server libpq picks.

The fleet: a read-write primary (P), its streaming hot standby (S), an independent primary
whose sessions are read-only by default (R, ``default_transaction_read_only=on``), a port with
nothing listening (D) and a peer that accepts TCP connections and never answers (silent).
libpq, through psycopg without pgconnector, is the reference: for each host order and each
``target_session_attrs`` value, every backend and manager must connect to the same server, or
fail when libpq does. The servers are told apart by their port.
"""

from __future__ import annotations

import secrets
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from pgconnector import ConnectionError, PoolConfig
from pgconnector._embedded import EmbeddedServer
from tests.conftest import Target, _embedded_or_skip
from tests.facade import ManagerFacade, wrap_manager

pytestmark = pytest.mark.integration
GROUP = "Failover and multi-host"

ATTRS = ("any", "read-write", "read-only", "primary", "standby", "prefer-standby")


@dataclass
class Fleet:
    primary: EmbeddedServer
    standby: EmbeddedServer
    read_only: EmbeddedServer
    down_port: int
    silent_port: int
    password: str

    def port(self, name: str) -> int:
        return {
            "P": self.primary.port,
            "S": self.standby.port,
            "R": self.read_only.port,
            "D": self.down_port,
            "silent": self.silent_port,
        }[name]

    def name(self, port: int) -> str:
        for name in ("P", "S", "R"):
            if self.port(name) == port:
                return name
        raise AssertionError(f"connected to an unknown port {port}")

    def dsn(self, order: str, **params: str) -> str:
        names = order.split(",")
        words = [
            "host=" + ",".join("127.0.0.1" for _ in names),
            "port=" + ",".join(str(self.port(n)) for n in names),
            "user=postgres dbname=postgres",
            f"password={self.password}",
        ]
        words += [f"{key}={value}" for key, value in params.items()]
        return " ".join(words)

    def uri(self, order: str, **params: str) -> str:
        hosts = ",".join(f"127.0.0.1:{self.port(n)}" for n in order.split(","))
        query = "&".join(f"{key}={value}" for key, value in params.items())
        return f"postgresql://postgres:{self.password}@{hosts}/postgres?{query}"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    password = "mh-" + secrets.token_urlsafe(12)
    primary = _embedded_or_skip(password=password)
    read_only = EmbeddedServer(password=password, settings={"default_transaction_read_only": "on"})
    # Accepts connections (the kernel completes the handshake from the backlog) and never
    # answers the startup message.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    with primary, read_only, silent:
        standby = primary.create_standby()
        try:
            yield Fleet(
                primary=primary,
                standby=standby,
                read_only=read_only,
                down_port=_closed_port(),
                silent_port=int(silent.getsockname()[1]),
                password=password,
            )
        finally:
            standby.cleanup()


def libpq_choice(dsn: str) -> int | None:
    """The port of the server libpq connects to, or None when it refuses them all."""
    try:
        with psycopg.connect(dsn) as conn:
            row = conn.execute("SELECT current_setting('port')::int").fetchone()
    except psycopg.OperationalError:
        return None
    assert row is not None
    return int(row[0])


async def pgconnector_choice(target: Target, dsn: str, **overrides: object) -> int | None:
    config = PoolConfig.from_dsn(dsn, min_size=0, max_size=1, **overrides)
    manager: ManagerFacade = wrap_manager(config, target.backend, target.mode)
    try:
        await manager.connect()
    except ConnectionError:
        return None
    try:
        async with manager.connection() as client:
            return int(await client.fetchval("SELECT current_setting('port')::int"))
    finally:
        await manager.disconnect()


# Which server libpq's rules pick, worked out by hand; the test also checks libpq agrees.
EXPECTED = {
    "D,S,R,P": {
        "any": "S",
        "read-write": "P",
        "read-only": "S",
        "primary": "R",
        "standby": "S",
        "prefer-standby": "S",
    },
    "D,R,P,S": {
        "any": "R",
        "read-write": "P",
        "read-only": "R",
        "primary": "R",
        "standby": "S",
        "prefer-standby": "S",
    },
    "P,R": {
        "any": "P",
        "read-write": "P",
        "read-only": "R",
        "primary": "P",
        "standby": None,
        "prefer-standby": "P",
    },
    "D,S": {
        "any": "S",
        "read-write": None,
        "read-only": "S",
        "primary": None,
        "standby": "S",
        "prefer-standby": "S",
    },
}


@pytest.mark.parametrize("order", list(EXPECTED))
async def test_the_same_server_as_libpq_for_every_target_session_attrs(
    supported_target: Target, fleet: Fleet, order: str
) -> None:
    for attrs in ATTRS:
        expected = EXPECTED[order][attrs]
        dsn = fleet.dsn(order, target_session_attrs=attrs, connect_timeout="2")
        reference = libpq_choice(dsn)
        assert (None if reference is None else fleet.name(reference)) == expected, (
            f"libpq chose differently for {order} {attrs}"
        )
        ours = await pgconnector_choice(supported_target, dsn)
        assert (None if ours is None else fleet.name(ours)) == expected, (order, attrs)
        # The URI form and the config field say the same.
        uri = fleet.uri(order, target_session_attrs=attrs, connect_timeout="2")
        assert await pgconnector_choice(supported_target, uri) == ours
        field = await pgconnector_choice(
            supported_target, fleet.dsn(order, connect_timeout="2"), target_session_attrs=attrs
        )
        assert field == ours


@pytest.mark.fault(GROUP, "No server in the host list matches target_session_attrs")
async def test_no_matching_server_is_a_connection_error_naming_each(
    supported_target: Target, fleet: Fleet
) -> None:
    """``connect()`` raises ``ConnectionError`` naming every server tried and why it was not
    used (down, a standby, read-only), without the password; the manager stays retryable.
    """
    config = PoolConfig.from_dsn(
        fleet.dsn("D,S,R", target_session_attrs="read-write"), min_size=0, connect_timeout=2.0
    )
    manager = wrap_manager(config, supported_target.backend, supported_target.mode)
    with pytest.raises(ConnectionError) as info:
        await manager.connect()
    message = str(info.value)
    assert fleet.password not in message
    for name in ("D", "S", "R"):
        assert str(fleet.port(name)) in message, message
    if supported_target.backend != "psycopg":  # libpq words its own reasons
        assert "is a standby (in recovery, read-only), not read-write" in message
        assert "is a read-only primary" in message
    assert not manager.is_initialized()


@pytest.mark.fault(GROUP, "First server in the host list accepts TCP and never answers")
async def test_a_silent_server_costs_its_connect_timeout_then_the_next_is_tried(
    supported_target: Target, fleet: Fleet, record_property: Any
) -> None:
    """The silent server is given its ``connect_timeout`` (1 s; libpq rounds up to 2 s) and the
    next server of the list is used.
    """
    started = time.monotonic()
    port = await pgconnector_choice(supported_target, fleet.dsn("silent,P", connect_timeout="1"))
    elapsed = time.monotonic() - started
    assert port == fleet.primary.port
    record_property("connected_after_s", round(elapsed, 2))
    # The first server was given its whole connect_timeout (libpq rounds it up to 2 s).
    assert elapsed >= 1.0


async def test_random_load_balancing_spreads_over_matching_servers_only(
    supported_target: Target, fleet: Fleet
) -> None:
    seen = set()
    for _ in range(16):
        port = await pgconnector_choice(
            supported_target, fleet.dsn("P,R", load_balance_hosts="random")
        )
        assert port is not None
        seen.add(fleet.name(port))
    # Both are picked (each time with probability 1/2: missing one is a 1 in 30,000 event).
    assert seen == {"P", "R"}
    for _ in range(4):
        port = await pgconnector_choice(
            supported_target,
            fleet.dsn("S,R,P", load_balance_hosts="random", target_session_attrs="read-write"),
        )
        assert port == fleet.primary.port
