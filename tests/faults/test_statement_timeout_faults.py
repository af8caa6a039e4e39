"""Data API faults: a statement's ``timeout=`` when the server cannot answer the cancel.

A call's timeout cancels its statement on the server and raises ``StatementTimeoutError``
once the cancel request is over. A stalled server (stopped processes, a frozen host) serves
neither the statement nor the cancel request: the call must still end, within its timeout plus
a few ``connect_timeout`` budgets, by shutting the connection down under the statement
(``ConnectionError``; the pool replaces the connection), and never hang.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from pgconnector import ConnectionError, StatementTimeoutError
from pgconnector._embedded import _postmaster_pid
from tests.backends.helpers import record_events, removal_reasons
from tests.faults.conftest import FaultKit

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs SIGSTOP"),
]

GROUP = "Data API"
CONNECT_TIMEOUT = 1.0
TIMEOUT = 0.5


@pytest.mark.fault(GROUP, "A timeout while the server is stalled")
async def test_timeout_while_the_server_is_stalled(faults: FaultKit) -> None:
    """The server's postmaster and the client's session are stopped (SIGSTOP), then a statement
    runs with ``timeout=0.5``: the cancel request cannot be served. The call ends with
    ``ConnectionError`` (the connection is shut down under the statement) within the timeout
    plus the cancel's and the wait's ``connect_timeout`` budgets; after the server resumes
    the pool serves again."""
    server = faults.start_server()
    m = faults.manager(server, min_size=1, max_size=2, connect_timeout=CONNECT_TIMEOUT)
    await m.connect()
    events = record_events(m)
    c = await m.get_client()
    session = await c.fetchval("SELECT pg_backend_pid()")
    stalled_id = c.connection_id
    postmaster = _postmaster_pid(server.data_dir)
    assert postmaster is not None
    stopped = [session, postmaster]
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises((ConnectionError, StatementTimeoutError)) as info:
            await c.fetchval("SELECT pg_sleep(5)", timeout=TIMEOUT)
        elapsed = time.monotonic() - started
    finally:
        for pid in reversed(stopped):
            os.kill(pid, signal.SIGCONT)
    faults.record(ended_s=round(elapsed, 2))
    # Neither the statement nor the cancel request can be served by a stopped server.
    assert isinstance(info.value, ConnectionError)
    assert str(info.value).startswith(f"statement timed out after {TIMEOUT:g} s")
    # Timeout, the cancel request's connect_timeout, the wait's, and margin for a busy CPU.
    assert elapsed < TIMEOUT + 4 * CONNECT_TIMEOUT + 2.0
    await c.release()
    async with m.connection() as again:
        assert await again.fetchval("SELECT 1", timeout=5) == 1
        # And a timeout works again, on a live server.
        with pytest.raises(StatementTimeoutError):
            await again.fetchval("SELECT pg_sleep(5)", timeout=TIMEOUT)
        assert await again.fetchval("SELECT 2") == 2
    # The connection shut down under the statement was removed from the pool, and only it.
    removed = [e.connection_id for e in events if e.name == "remove"]
    assert removed == [stalled_id], removal_reasons(events)
