"""Timing primitives: run an operation in N threads (sync) or N tasks (async), for a time or
for a number of operations, and say how long it took.

One worker runs in the calling thread or task, with no hand-off at all. Every loop is bounded:
by a deadline, or by a count, and every wait for workers by a timeout.
"""

from __future__ import annotations

import asyncio
import gc
import math
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

#: Workers that have not finished this long after they should have mean a hung pool.
GRACE_S = 120.0
#: Operations between two looks at the clock for a single worker (a look costs ~60 ns).
BATCH = 16

SyncOp = Callable[[], object]
AsyncOp = Callable[[], Awaitable[object]]


class WorkerError(RuntimeError):
    """A worker raised, or did not finish in time."""


@dataclass(frozen=True)
class Run:
    ops: int
    elapsed_s: float

    @property
    def per_second(self) -> float:
        return self.ops / self.elapsed_s

    @property
    def micros_per_op(self) -> float:
        return self.elapsed_s / self.ops * 1e6


def settle() -> None:
    """Collect garbage before a timed window, so that no subject pays for another's."""
    gc.collect()


# ------------------------------------------------------------------------------ threads


def _single_for(op: SyncOp, duration: float) -> Run:
    ops = 0
    started = time.perf_counter()
    deadline = started + duration
    while True:
        for _ in range(BATCH):
            op()
        ops += BATCH
        now = time.perf_counter()
        if now >= deadline:
            return Run(ops, now - started)


def _start_threads(workers: int, body: Callable[[int], None]) -> tuple[list[threading.Thread],
                                                                       threading.Event,
                                                                       list[BaseException]]:
    errors: list[BaseException] = []
    gate = threading.Event()

    def guarded(index: int) -> None:
        gate.wait()
        try:
            body(index)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(i,), daemon=True) for i in range(workers)]
    for thread in threads:
        thread.start()
    return threads, gate, errors


def _join(threads: list[threading.Thread], errors: list[BaseException], budget: float) -> None:
    limit = time.monotonic() + budget
    for thread in threads:
        thread.join(max(0.0, limit - time.monotonic()))
        if thread.is_alive():
            raise WorkerError(f"a worker thread did not finish within {budget:g} s")
    if errors:
        raise WorkerError(f"a worker failed: {errors[0]!r}") from errors[0]


def threads_for(op: SyncOp, workers: int, duration: float) -> Run:
    """Run ``op`` in ``workers`` threads until ``duration`` s have passed; every worker checks
    the clock after each operation so that none runs on alone at the end."""
    if workers == 1:
        return _single_for(op, duration)
    counts = [0] * workers
    ends = [0.0] * workers
    deadline = math.inf

    def body(index: int) -> None:
        ops = 0
        while True:
            op()
            ops += 1
            now = time.perf_counter()
            if now >= deadline:
                break
        counts[index] = ops
        ends[index] = now

    threads, gate, errors = _start_threads(workers, body)
    started = time.perf_counter()
    deadline = started + duration
    gate.set()
    _join(threads, errors, duration + GRACE_S)
    return Run(sum(counts), max(ends) - started)


def threads_count(op: SyncOp, workers: int, each: int) -> float:
    """Seconds for ``workers`` threads to run ``op`` ``each`` times apiece (thread start-up
    not included: they all wait at a gate)."""
    if workers == 1:
        started = time.perf_counter()
        for _ in range(each):
            op()
        return time.perf_counter() - started

    def body(_index: int) -> None:
        for _ in range(each):
            op()

    threads, gate, errors = _start_threads(workers, body)
    started = time.perf_counter()
    gate.set()
    _join(threads, errors, GRACE_S + each * workers * 0.01)
    return time.perf_counter() - started


# ------------------------------------------------------------------------------ tasks


async def _single_for_async(op: AsyncOp, duration: float) -> Run:
    ops = 0
    started = time.perf_counter()
    deadline = started + duration
    while True:
        for _ in range(BATCH):
            await op()
        ops += BATCH
        now = time.perf_counter()
        if now >= deadline:
            return Run(ops, now - started)


async def _run_tasks(workers: int, body: Callable[[], Awaitable[object]], budget: float,
                     on_open: Callable[[float], None] | None = None,
                     ) -> tuple[float, list]:  # type: ignore[type-arg]
    """Start ``workers`` tasks held at a gate (so that creating them is not timed), open the
    gate (telling ``on_open`` when); return when it opened and what the bodies returned."""
    gate = asyncio.Event()

    async def gated() -> object:
        await gate.wait()
        return await body()

    tasks = [asyncio.ensure_future(gated()) for _ in range(workers)]
    await asyncio.sleep(0)  # every task runs up to the gate before this one resumes
    started = time.perf_counter()
    if on_open is not None:
        on_open(started)
    gate.set()
    try:
        return started, await asyncio.wait_for(asyncio.gather(*tasks), budget)
    except asyncio.TimeoutError:
        raise WorkerError(f"worker tasks did not finish within {budget:g} s") from None


async def tasks_for(op: AsyncOp, workers: int, duration: float) -> Run:
    """The asyncio twin of :func:`threads_for`: ``workers`` tasks on this loop."""
    if workers == 1:
        return await _single_for_async(op, duration)
    deadline = math.inf

    async def body() -> tuple[int, float]:
        ops = 0
        while True:
            await op()
            ops += 1
            now = time.perf_counter()
            if now >= deadline:
                return ops, now

    def opened(started: float) -> None:
        nonlocal deadline
        deadline = started + duration

    started, done = await _run_tasks(workers, body, duration + GRACE_S, opened)
    return Run(sum(ops for ops, _ in done), max(end for _, end in done) - started)


async def tasks_count(op: AsyncOp, workers: int, each: int) -> float:
    """The asyncio twin of :func:`threads_count`."""

    async def body() -> None:
        for _ in range(each):
            await op()

    if workers == 1:
        started = time.perf_counter()
        await body()
        return time.perf_counter() - started
    started, _ = await _run_tasks(workers, body, GRACE_S + each * workers * 0.01)
    return time.perf_counter() - started


# ------------------------------------------------------------------------------ statistics


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of ``values`` (``fraction`` 0.99 for p99)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]
