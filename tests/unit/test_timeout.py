"""pgconnector._timeout without a server: the checks, the errors, and the rules of the timer
(the cancel is over before the call returns; hang up past the grace; no cost unless expired)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from pgconnector import ConfigError, ConnectionError, StatementTimeoutError, errors
from pgconnector._timeout import (
    _timers,
    acall_with_timeout,
    call_with_timeout,
    check_timeout,
)


@pytest.mark.parametrize("value", [0, -1, 0.0, -0.5, float("nan"), "1", True, [1]])
def test_bad_timeouts_are_config_errors_naming_the_field(value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        check_timeout(value)
    assert info.value.field == "timeout"
    assert str(info.value).startswith("timeout: ")


def test_good_timeouts() -> None:
    assert check_timeout(None) is None
    assert check_timeout(2) == 2.0
    assert check_timeout(0.25) == 0.25
    assert check_timeout(float("inf")) is None  # no limit


class Statement:
    """A fake statement: blocks until cancelled (or hung up), then raises what a backend
    raises; records the order of events."""

    def __init__(self, *, cancel_works: bool = True) -> None:
        self.cancel_works = cancel_works
        self.ended = threading.Event()
        self.events: list[str] = []
        self.error: Exception | None = None

    def run(self) -> str:
        self.ended.wait(10)
        self.events.append("statement ended")
        if self.error is not None:
            raise self.error
        return "done"

    def cancel(self) -> None:
        self.events.append("cancel sent")
        if self.cancel_works:
            self.error = errors.QueryCanceled("canceling statement due to user request",
                                              RuntimeError("driver"))
            self.ended.set()
        self.events.append("cancel over")

    def hang_up(self) -> None:
        self.events.append("hung up")
        self.error = ConnectionError("server closed the connection", OSError("reset"))
        self.ended.set()


def test_expired_call_raises_statement_timeout_after_the_cancel_is_over() -> None:
    st = Statement()
    with pytest.raises(StatementTimeoutError) as info:
        call_with_timeout(st.run, 0.05, cancel=st.cancel, hang_up=st.hang_up, grace=5.0)
    # Nothing left on its way when the call raised: the cancel had returned.
    assert "cancel over" in st.events
    assert str(info.value) == (
        "statement timed out after 0.05 s and was cancelled on the server"
    )
    assert isinstance(info.value.cause, RuntimeError)
    assert info.value.__cause__ is info.value.cause


def test_a_statement_the_server_does_not_end_is_hung_up_after_the_grace() -> None:
    st = Statement(cancel_works=False)
    with pytest.raises(ConnectionError) as info:
        call_with_timeout(st.run, 0.05, cancel=st.cancel, hang_up=st.hang_up, grace=0.2)
    assert "hung up" in st.events
    assert str(info.value).startswith("statement timed out after 0.05 s, and the server")
    assert not isinstance(info.value, StatementTimeoutError)


def test_a_call_that_ends_in_time_sends_no_cancel() -> None:
    calls: list[str] = []
    result = call_with_timeout(
        lambda: "fast", 10.0, cancel=lambda: calls.append("cancel"),
        hang_up=lambda: calls.append("hang up"), grace=1.0,
    )
    assert (result, calls) == ("fast", [])


def test_its_own_errors_pass_through() -> None:
    def fail() -> None:
        raise errors.QueryCanceled("statement_timeout")  # the server's own: not ours

    with pytest.raises(errors.QueryCanceled) as info:
        call_with_timeout(fail, 10.0, cancel=lambda: None, hang_up=lambda: None, grace=1.0)
    assert type(info.value) is errors.QueryCanceled


def test_cancelled_deadlines_do_not_pile_up() -> None:
    for _ in range(5000):
        call_with_timeout(lambda: None, 60.0, cancel=lambda: None, hang_up=lambda: None,
                          grace=1.0)
    assert len(_timers._heap) < 200


async def test_async_expired_call_waits_for_its_cancel() -> None:
    ended = asyncio.Event()
    events: list[str] = []

    async def run() -> str:
        await ended.wait()
        events.append("statement ended")
        raise errors.QueryCanceled("canceling statement due to user request", RuntimeError())

    async def cancel() -> None:
        events.append("cancel sent")
        ended.set()
        await asyncio.sleep(0)  # the request's round trip
        events.append("cancel over")

    with pytest.raises(StatementTimeoutError):
        await acall_with_timeout(run, 0.05, cancel=cancel, hang_up=lambda: None, grace=5.0)
    assert events == ["cancel sent", "statement ended", "cancel over"]


async def test_async_call_in_time_starts_no_task() -> None:
    before = len(asyncio.all_tasks())

    async def fast() -> int:
        assert len(asyncio.all_tasks()) == before
        return 1

    async def never() -> None:
        raise AssertionError("no cancel")

    assert await acall_with_timeout(fast, 10.0, cancel=never, hang_up=lambda: None,
                                    grace=1.0) == 1
