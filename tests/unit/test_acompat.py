"""finish_even_if_cancelled: asyncio.shield's promise, without a task when nothing waits."""

from __future__ import annotations

import asyncio

import pytest

from pgconnector._acompat import finish_even_if_cancelled


async def test_a_coroutine_that_never_waits_runs_inline() -> None:
    tasks_before = len(asyncio.all_tasks())

    async def clean() -> int:
        assert len(asyncio.all_tasks()) == tasks_before  # no task was made for it
        return 7

    assert await finish_even_if_cancelled(clean()) == 7


async def test_a_coroutine_that_waits_returns_its_value_and_raises_its_errors() -> None:
    async def slow(value: int) -> int:
        await asyncio.sleep(0)
        await asyncio.sleep(0.01)
        return value

    async def fails_after_waiting() -> None:
        await asyncio.sleep(0)
        raise KeyError("after")

    async def fails_at_once() -> None:
        raise KeyError("at once")

    assert await finish_even_if_cancelled(slow(3)) == 3
    with pytest.raises(KeyError, match="after"):
        await finish_even_if_cancelled(fails_after_waiting())
    with pytest.raises(KeyError, match="at once"):
        await finish_even_if_cancelled(fails_at_once())


async def test_the_caller_is_cancelled_but_the_coroutine_finishes() -> None:
    started, proceed, finished = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def release() -> None:
        started.set()
        await proceed.wait()  # the caller is cancelled while this waits
        finished.set()

    caller = asyncio.create_task(finish_even_if_cancelled(release()))
    await started.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert not finished.is_set()
    proceed.set()
    await asyncio.wait_for(finished.wait(), 5)
