"""Network faults: a network that stalls (the peer accepts TCP, then says nothing) or drops.

Every manager here reaches the shared test server through :class:`Proxy`, a TCP relay on
127.0.0.1 that the test turns from forwarding to stalled (every socket stays open, no byte
passes either way, and new connections are accepted but never answered) or dropped (every
relayed connection is reset at once, and new ones are reset on arrival), then back.

Nothing may hang: connects, borrows and in-flight statements fail within their timeouts with
``pgconnector.ConnectionError``; a connection cut off is never handed out twice; and once the
network is back the same manager recovers by itself and refills to ``min_size``.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from pgconnector import ConnectionError, PoolConfig
from tests.backends.helpers import wait_until
from tests.conftest import ServerInfo, Target
from tests.faults.conftest import FaultKit, borrow_ids
from tests.tls import dsn_through

pytestmark = pytest.mark.integration

GROUP = "Network faults"
LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST


class _Pair:
    """One relayed connection: the client's socket, the server's (None for one accepted while
    stalled: it is never forwarded), and what the relay does with it."""

    def __init__(self, client: socket.socket, upstream: socket.socket | None, state: str):
        self.client, self.upstream, self.state = client, upstream, state
        self.thread: threading.Thread | None = None


class Proxy:
    """A controllable TCP relay in front of ``host:port``; one thread per connection."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.mode = "forward"  # what a new connection gets: forward, stall or drop
        self.accepted = 0
        self.to_server = bytearray()  # every byte forwarded from clients to the server
        self._pairs: list[_Pair] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port = int(self._listener.getsockname()[1])
        self.dsn = ""  # the server's DSN by way of the proxy, set by the fixture
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def stall(self) -> None:
        """Stop forwarding on every connection, and answer no new one."""
        with self._lock:
            self.mode = "stall"
            for pair in self._pairs:
                pair.state = "stall"

    def drop(self) -> None:
        """Reset every relayed connection now (returns once they are all closed), and every
        new one on arrival."""
        with self._lock:
            self.mode = "drop"
            pairs = list(self._pairs)
            for pair in pairs:
                pair.state = "reset"
        for pair in pairs:
            assert pair.thread is not None
            pair.thread.join(timeout=5.0)
            assert not pair.thread.is_alive(), "a relayed connection was not dropped"

    def resume(self) -> None:
        """Forward new connections again (those stalled before stay stalled)."""
        with self._lock:
            self.mode = "forward"

    def close(self) -> None:
        self._closing.set()
        self._acceptor.join(timeout=5.0)
        self._listener.close()
        for pair in list(self._pairs):
            if pair.thread is not None:
                pair.thread.join(timeout=5.0)
        alive = [p for p in self._pairs if p.thread is not None and p.thread.is_alive()]
        assert not alive and not self._acceptor.is_alive(), "proxy threads left running"

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:  # the 0.05 s timeout: look at _closing again
                continue
            client.settimeout(5.0)
            self.accepted += 1
            with self._lock:
                if self.mode == "drop":
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
                    client.close()
                    continue
                upstream = None
                if self.mode == "forward":
                    try:
                        upstream = socket.create_connection(self.upstream, timeout=5.0)
                    except OSError:
                        client.close()
                        continue
                pair = _Pair(client, upstream, self.mode)
                pair.thread = threading.Thread(target=self._relay, args=(pair,), daemon=True)
                self._pairs.append(pair)
                pair.thread.start()

    def _relay(self, pair: _Pair) -> None:
        """Relay until either side hangs up, the pair is reset or the proxy closes. A stalled
        pair reads and discards; the server hanging up is hidden from the client, but the
        client hanging up is passed on, so that the server keeps a session only as long as
        the library under test keeps its connection (which the leak audit counts)."""
        ends = [s for s in (pair.client, pair.upstream) if s is not None]
        try:
            while pair.state != "reset" and not self._closing.is_set():
                readable, _, _ = select.select(ends, [], [], 0.05)
                for sock in readable:
                    data = sock.recv(65536)
                    if sock is pair.upstream and pair.state == "stall":
                        if not data:
                            ends.remove(sock)
                        continue
                    if not data:
                        return
                    if pair.state == "forward" and pair.upstream is not None:
                        if sock is pair.client:
                            self.to_server += data
                            pair.upstream.sendall(data)
                        else:
                            pair.client.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (pair.client, pair.upstream):
                if sock is None:
                    continue
                if pair.state == "reset":
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
                sock.close()


@pytest.fixture
def proxy(supported_target: Target, pg_server: ServerInfo) -> Iterator[Proxy]:
    params = PoolConfig.from_dsn(pg_server.dsn).connect_params()
    relay = Proxy(params.host, params.port)
    relay.dsn = dsn_through(pg_server, relay.port)
    try:
        yield relay
    finally:
        relay.close()


@pytest.fixture
def faults(proxy: Proxy, faults: FaultKit) -> FaultKit:
    """The suite's kit, made after the proxy so that its audit runs while the proxy still
    relays."""
    return faults


async def _refilled(faults: FaultKit, m: Any, minimum: int) -> float:
    """Wait until the pool holds ``minimum`` connections (and, on the embedded server, there
    are as many sessions of ours); returns how long that took."""
    server = faults.pg_server.server
    return await wait_until(
        lambda: (
            m.get_pool_stats().total >= minimum
            and (server is None or faults.server_sessions() >= minimum)
        ),
        timeout=20.0,
    )


@pytest.mark.fault(GROUP, "Connect to a peer that accepts TCP and never answers")
async def test_connect_to_a_stalled_peer_fails_within_connect_timeout(
    faults: FaultKit, proxy: Proxy
) -> None:
    proxy.stall()
    m = faults.manager(dsn=proxy.dsn, min_size=1, connect_timeout=1.0)
    started = time.monotonic()
    with pytest.raises(ConnectionError) as info:
        await m.connect()
    elapsed = time.monotonic() - started
    assert proxy.accepted >= 1  # the TCP connect succeeded: it was the silence that failed
    assert elapsed < 1.0 + 1.5, f"connect() took {elapsed:.2f} s"
    assert info.value.cause is not None
    assert (await m.health_check()).connected is False
    faults.record(failed_in_s=round(elapsed, 3))


@pytest.mark.fault(GROUP, "Network stalls under an idle pool (ping_after_idle=0), then is back")
@pytest.mark.timeout(60)
async def test_stalled_network_fails_borrows_then_recovers(faults: FaultKit, proxy: Proxy) -> None:
    m = faults.manager(
        dsn=proxy.dsn,
        min_size=1,
        max_size=2,
        ping_after_idle=0,
        connect_timeout=1.0,
        acquire_timeout=1.5,
    )
    await m.connect()
    before = await borrow_ids(m, 2)
    proxy.stall()
    started = time.monotonic()
    with pytest.raises(ConnectionError):  # a connect error or a pool timeout: never a hang
        await m.get_client()
    failed_in = time.monotonic() - started
    assert failed_in < 5.0, f"get_client() took {failed_in:.2f} s on a stalled network"
    proxy.resume()
    up = time.monotonic()
    failures = 0
    while True:  # the stalled connections must be found out and replaced: borrow until one works
        try:
            async with m.connection() as c:
                assert await c.fetchval("SELECT 1") == 1
                assert c.connection_id not in before, "a stalled connection was handed out"
            break
        except ConnectionError:
            failures += 1
            assert time.monotonic() - up < 10.0, "the pool did not recover within 10 s"
    recovered = time.monotonic() - up
    assert (await m.health_check()).connected
    refill = await _refilled(faults, m, 1)
    faults.record(
        failed_in_s=round(failed_in, 3),
        recovered_s=round(recovered, 3),
        failed_borrows_after=failures,
        refilled_s=round(refill, 3),
    )


@pytest.mark.fault(GROUP, "Network drops mid-query")
async def test_drop_mid_query_fails_promptly_and_discards(faults: FaultKit, proxy: Proxy) -> None:
    m = faults.manager(
        dsn=proxy.dsn,
        min_size=2,
        max_size=2,
        ping_after_idle=0,
        connect_timeout=1.0,
        acquire_timeout=1.5,
        # So that the server ends the cut-off session mid-sleep, not 5 s later in the audit.
        server_settings={"client_connection_check_interval": "100ms"},
    )
    await m.connect()
    c = await m.get_client()
    victim = c.connection_id
    sql = "SELECT pg_sleep(5)"
    if m.mode == "sync":
        query = asyncio.ensure_future(asyncio.to_thread(c.client.fetchval, sql))
    else:
        query = asyncio.ensure_future(c.fetchval(sql))
    try:
        await wait_until(lambda: sql.encode() in proxy.to_server, timeout=5.0)
        dropped = time.monotonic()
        proxy.drop()
        with pytest.raises(ConnectionError) as info:
            await asyncio.wait_for(query, timeout=10.0)
        failed_in = time.monotonic() - dropped
    finally:
        await asyncio.gather(query, return_exceptions=True)
        await c.release()
    assert failed_in < 2.0, f"the query failed {failed_in:.2f} s after the drop"
    assert info.value.cause is not None
    proxy.resume()
    async with m.connection() as c2:
        assert c2.connection_id != victim
        assert await c2.fetchval("SELECT 1") == 1
    refill = await _refilled(faults, m, 2)
    assert (await m.health_check()).connected
    faults.record(failed_in_s=round(failed_in, 3), refilled_s=round(refill, 3))


@pytest.mark.fault(GROUP, "Network drops, no ping: a broken connection is handed out once")
async def test_dropped_connection_is_never_handed_out_twice(faults: FaultKit, proxy: Proxy) -> None:
    m = faults.manager(
        dsn=proxy.dsn,
        min_size=3,
        max_size=3,
        ping_after_idle=None,
        connect_timeout=1.0,
        acquire_timeout=1.5,
    )
    await m.connect()
    before = await borrow_ids(m, 3)
    proxy.drop()
    proxy.resume()
    broken: list[int] = []
    good = 0
    for _ in range(12):
        error: ConnectionError | None = None
        async with m.connection() as c:
            assert c.connection_id not in broken, "a broken connection was handed out again"
            try:
                assert await c.fetchval("SELECT 1") == 1
            except ConnectionError as exc:
                error = exc
        if error is None:
            good += 1
        else:
            assert error.cause is not None
            assert c.connection_id in before
            broken.append(c.connection_id)
    assert len(broken) <= 3
    assert good == 12 - len(broken)
    refill = await _refilled(faults, m, 3)
    faults.record(broken_handed_out=len(broken), refilled_s=round(refill, 3))
