"""Open the first acceptable server of a multi-host plan (async).

``_multihost.py`` is generated from ``_multihost_async.py`` by ``tools/unasync.py``. The plan and
the rules are in :mod:`pgconnector._hosts`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from ._hosts import Attempt, accepts, give_up, rejection

# isort: split
# ASYNC
from collections.abc import Awaitable

# END
__all__ = ["aconnect_first"]

C = TypeVar("C")


async def aconnect_first(
    attempts: Sequence[Attempt],
    # ASYNC
    open_one: Callable[[Attempt], Awaitable[C]],
    read_state: Callable[[C], Awaitable[tuple[bool, bool]]],
    # SYNC: open_one: Callable[[Attempt], C],
    # SYNC: read_state: Callable[[C], tuple[bool, bool]],
    # END
    close: Callable[[C], None],
    describe: Callable[[BaseException], str],
    want: str,
) -> C:
    """Open the first connection of the plan whose server is acceptable.

    With a single attempt that needs no check, ``open_one``'s error propagates unchanged.
    Otherwise each failure is noted (``describe`` turns a driver error into a line) and the
    next attempt made; when none succeeds, :class:`~pgconnector._hosts.NoMatchingServer`
    lists them all, chained to the last driver error. ``close`` drops a connection that is of
    no use, without waiting for the server.
    """
    if len(attempts) == 1 and attempts[0].want == "any":
        return await open_one(attempts[0])
    failures: list[str] = []
    last_error: BaseException | None = None
    for attempt in attempts:
        try:
            conn = await open_one(attempt)
        except Exception as exc:
            last_error = exc
            failures.append(f"{attempt}: {describe(exc)}")
            continue
        if attempt.want == "any":
            return conn
        try:
            state = await read_state(conn)
        except BaseException as exc:
            close(conn)
            if not isinstance(exc, Exception):
                raise
            last_error = exc
            failures.append(f"{attempt}: {describe(exc)}")
            continue
        if accepts(attempt.want, *state):
            return conn
        close(conn)
        failures.append(rejection(attempt, state))
    raise give_up(attempts, failures, want) from last_error
