"""pgconnector's own connection pool, generic over a tiny blocking driver protocol.

A blocking driver (pg8000 today; psycopg2 or a test fake tomorrow) gets a complete pool, for the
sync *and* the async manager, by implementing :class:`RawDriver` (open one connection) and
:class:`RawConnection` (run a statement, report its transaction status, ping, cancel, close).
Everything else is here, written once:

``PoolState`` (:mod:`pgconnector._generic_state`)
    Every decision, under one lock, without I/O: sizes, FIFO hand-off to waiters, expiry with
    jitter, backoff, open/closed. Read its docstring for why no wake-up can be lost.

:class:`PoolCore`
    Carries the decisions out. It owns the driver, the core's :class:`~pgconnector.PoolHooks`
    (every open, close and failure is reported exactly once, from wherever it happens), a small
    set of daemon worker threads (connects, closes, and, for the async face, every blocking
    driver call), and one daemon housekeeping thread that sleeps on the state's condition until
    the next deadline. The blocking parts of returning, checking and closing connections are
    plain functions here, called directly by the sync face and from a worker by the async one.

:class:`GenericPool` / :class:`AsyncGenericPool`
    The two thin faces: the core's :class:`~pgconnector.PoolBackend` and
    :class:`~pgconnector.AsyncPoolBackend`. They differ only in how they wait (a thread waiter
    blocks its thread on a lock; an async waiter awaits a future of its loop, never a thread)
    and where blocking work runs (in the caller's thread, or in a worker thread awaited through
    a future). An async borrow that finds an idle connection, and the release of a clean one,
    touch no thread at all.

Threads and interpreter exit: every thread is a daemon, so a pool never keeps the interpreter
alive, whatever ``allow_exit_on_idle`` says (as with psycopg_pool, whose workers are daemons
too: a Python program is expected to exit when its main thread ends). The option decides what
happens to a pool still open at exit: with ``allow_exit_on_idle=False`` (the default) an
``atexit`` hook closes its idle connections politely (so the server logs a clean disconnect);
with ``True`` the pool does nothing at all at exit and the operating system drops the sockets.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import functools
import itertools
import logging
import threading
import weakref
from collections import deque
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Callable,
    Generator,
    Iterable,
    Iterator,
    Sequence,
)
from time import monotonic, perf_counter
from typing import Any, Protocol, TypeVar, runtime_checkable

from ._acompat import finish_even_if_cancelled
from ._config import PoolConfig
from ._copy import AsyncChunks, split_chunks, timed_chunks
from ._generic_state import (
    MAX_PARALLEL_CONNECTS,
    AsyncWaiter,
    Entry,
    Limits,
    Plan,
    PoolClosedError,
    PoolState,
    ThreadWaiter,
    Waiter,
)
from ._hosts import describe_target
from ._protocols import PoolHooks, QueryResult
from ._redact import redact
from ._timeout import call_with_timeout, stuck_error, timed_out
from .errors import ConnectionError, PoolTimeoutError, QueryCanceled

__all__ = [
    "IDLE",
    "IN_TRANSACTION",
    "IN_ERROR",
    "ACTIVE",
    "UNKNOWN",
    "SESSION_RESET_IDLE",
    "SESSION_RESET_IN_TRANSACTION",
    "RawConnection",
    "RawDriver",
    "PoolCore",
    "GenericPool",
    "AsyncGenericPool",
    "PooledConnection",
    "AsyncPooledConnection",
]

logger = logging.getLogger("pgconnector")

T = TypeVar("T")

# What RawConnection.transaction_status() returns (libpq's PQtransactionStatus, as words).
IDLE = "idle"
IN_TRANSACTION = "in transaction"
IN_ERROR = "in failed transaction"
ACTIVE = "active"  # a statement is running
UNKNOWN = "unknown"  # the connection is bad

#: Session reset of a connection that is idle (not in a transaction): one statement.
SESSION_RESET_IDLE = "DISCARD ALL"
#: Session reset of a connection in an open or aborted transaction, in the same round trip as
#: the rollback. ``DISCARD ALL`` refuses to run in the implicit transaction block that a
#: multi-statement query forms, so this is its documented equivalent, statement by statement.
#: (The same statements as the psycopg backend's.)
SESSION_RESET_IN_TRANSACTION = (
    "ROLLBACK; CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; DEALLOCATE ALL; "
    "UNLISTEN *; SELECT pg_advisory_unlock_all(); DISCARD PLANS; DISCARD TEMP; "
    "DISCARD SEQUENCES"
)

#: Idle worker threads exit after this long without work (they are re-created on demand).
WORKER_IDLE_EXIT = 30.0
#: A statement abandoned by a cancelled async caller is cancelled on the server at once, and
#: again after these pauses (doubling) while it still runs (see PoolCore._cancel_running).
CANCEL_RETRY_FIRST = 0.05
CANCEL_RETRY_MAX = 1.0


# -- the driver contract -------------------------------------------------------------------


@runtime_checkable
class RawConnection(Protocol):
    """One open server connection of a blocking driver, as the generic pool uses it.

    Only one thread uses it at a time, except :meth:`cancel` and :meth:`close`, which may be
    called from another thread while a statement runs (to interrupt it). The pool never sends
    a statement while another runs on the same connection, not even when an async caller was
    cancelled mid-statement (see :meth:`PoolCore.interrupt`).
    """

    @property
    def raw(self) -> Any:
        """The driver's own connection object (what ``Client.raw`` returns)."""
        ...

    def execute(self, sql: str, args: Sequence[Any]) -> str:
        """Run one statement (``$1`` placeholders, autocommit); return the command status.

        Raise :class:`pgconnector.ConnectionError` (driver error chained) when the connection
        is unusable afterwards, from then on :meth:`is_broken` is true; raise an error the server
        reported as the ``pgconnector.errors`` class of its SQLSTATE."""
        ...

    def fetch(self, sql: str, args: Sequence[Any]) -> QueryResult:
        """Like :meth:`execute`; return the column names and decoded rows."""
        ...

    def executemany(
        self, sql: str, rows: Sequence[tuple[Any, ...]], timeout: float | None = None
    ) -> None:
        """Like :meth:`execute`, once per row, pipelined (see
        :meth:`pgconnector.DriverConnection.executemany`); the pool handles ``timeout``."""
        ...

    def server_parameter(self, name: str) -> str | None:
        """The value the server last reported for a run-time parameter, or None (no I/O)."""
        ...

    def copy_in(self, sql: str, chunks: Iterable[bytes]) -> int:
        """Run a ``COPY … FROM STDIN`` sending ``chunks``; return the rows copied. A failure
        of ``chunks`` aborts the COPY (nothing applied) and is raised as is. Stop reading
        ``chunks`` once :meth:`cancel` was called (the COPY then fails as cancelled)."""
        ...

    def copy_out(self, sql: str) -> Iterator[bytes]:
        """Run a ``COPY … TO STDOUT`` as a generator of chunks of its data. Closed early, it
        cancels the COPY on the server and reads the rest, leaving the connection usable."""
        ...

    def transaction_status(self) -> str:
        """:data:`IDLE`, :data:`IN_TRANSACTION`, :data:`IN_ERROR`, :data:`ACTIVE` or
        :data:`UNKNOWN`, from what the client knows: no round trip."""
        ...

    def is_broken(self) -> bool:
        """True once a failure showed the connection unusable (no round trip)."""
        ...

    def ping(self, timeout: float) -> None:
        """One cheap round trip, bounded by ``timeout``; raise if it fails."""
        ...

    def cancel(self) -> None:
        """Ask the server to cancel the statement running on this connection: PostgreSQL's
        CancelRequest (the backend's pid and secret key from BackendKeyData, sent over a new
        connection), or the driver's own cancel. Best effort; called from another thread
        while a statement runs (an async caller abandoned it, or the connection is closed
        under it), perhaps several times; never raises. Return only once the server has
        received and acted on the request (it closes the cancel connection then): the pool
        sends nothing else on this connection until both the statement and its cancel
        requests are over, so that a late cancel can never hit the next statement."""
        ...

    def close(self) -> None:
        """Close the connection, promptly, even while a statement runs in another thread
        (which then fails). May raise; the pool ignores it."""
        ...


@runtime_checkable
class RawDriver(Protocol):
    """Opens connections for one pool. Built by the backend from the :class:`PoolConfig`, so
    that whatever can be prepared once (an ``ssl.SSLContext``, validated options) is."""

    def connect(self, timeout: float) -> RawConnection:
        """Open one connection within ``timeout`` seconds, or raise the driver's error."""
        ...

    def describe(self, error: BaseException) -> str:
        """The error as one readable line, for messages (the pool redacts it)."""
        ...


# -- worker threads ------------------------------------------------------------------------


class Job:
    """One call run by a worker thread. ``then`` adds a callback run in the worker once the
    call is done; an async caller gets the outcome through ``future``, in its loop."""

    __slots__ = ("_callbacks", "_lock", "_loop", "_started", "args", "done", "error", "fn",
                 "future", "result", "workers")

    def __init__(self, workers: Workers, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.workers = workers
        self.fn = fn
        self.args = args
        self.done = False
        self._started = False
        self.result: Any = None
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[Job], object]] | None = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.future: asyncio.Future[Any] | None = None

    def run(self) -> None:
        with self._lock:
            if self._started:  # withdrawn before a worker took it
                return
            self._started = True
        try:
            self.result = self.fn(*self.args)
        except BaseException as exc:
            self.error = exc
        with self._lock:
            self.done = True
            callbacks, self._callbacks = self._callbacks, None
        for callback in callbacks or ():
            try:
                callback(self)
            except Exception:
                logger.exception("pgconnector: pool callback failed")
        loop = self._loop
        if loop is not None:
            # RuntimeError: the loop is closed, nobody awaits the result any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._deliver)
        elif self.error is not None:
            if not isinstance(self.error, Exception):
                raise self.error
            if self.future is None:  # nobody else will see it
                logger.error("pgconnector: pool background job failed", exc_info=self.error)

    def _deliver(self) -> None:
        future = self.future
        if future is None or future.done():  # cancelled: the caller went away
            return
        if self.error is not None:
            future.set_exception(self.error)
        else:
            future.set_result(self.result)

    def withdraw(self) -> bool:
        """Keep the call from ever running, if no worker has started it yet: True then (the
        job is done, with no result, its future is cancelled, and callbacks added later run
        at once)."""
        with self._lock:
            if self._started:
                return False
            self._started = self.done = True
            self._callbacks = None
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed
                loop.call_soon_threadsafe(self._cancel_future)
        return True

    def _cancel_future(self) -> None:
        future = self.future
        if future is not None:
            future.cancel()

    def then(self, callback: Callable[[Job], object]) -> None:
        """Run ``callback(job)`` in a worker thread once the call is done (now, if it is)."""
        with self._lock:
            if self._callbacks is not None:
                self._callbacks.append(callback)
                return
        self.workers.submit(callback, self)


class Settling(Job):
    """Stands in for a statement job whose async caller went away (see
    :meth:`PoolCore.interrupt`): done once the statement and the cancel request sent to the
    server for it are both over. Run by whichever of the two ends last, never by a worker."""

    __slots__ = ()


def _nothing() -> None:
    return None


class Workers:
    """A few daemon threads, created on demand up to ``max_threads`` and exiting after
    :data:`WORKER_IDLE_EXIT` seconds without work (at once after :meth:`shutdown`).

    Not ``concurrent.futures``: its threads are joined at interpreter exit, so one blocked in
    a driver call would hang the exit; daemon threads never do.
    """

    def __init__(self, name: str, max_threads: int) -> None:
        self._name = name
        self._max = max_threads
        self._cond = threading.Condition(threading.Lock())
        self._jobs: deque[Job] = deque()
        self._threads = 0
        self._idle = 0
        self._stopping = False
        self._numbers = itertools.count(1)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Job:
        job = Job(self, fn, args)
        self._push(job)
        return job

    def submit_async(
        self, loop: asyncio.AbstractEventLoop, fn: Callable[..., T], *args: Any
    ) -> asyncio.Future[T]:
        """Run ``fn(*args)`` in a worker; the returned future (of ``loop``) gets its outcome.
        Cancelling the future does not stop the call."""
        job = Job(self, fn, args)
        job._loop = loop
        job.future = future = loop.create_future()
        self._push(job)
        return future

    def submit_job_async(
        self, loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], *args: Any
    ) -> Job:
        """Like :meth:`submit_async`, returning the :class:`Job` (its ``future`` is set)."""
        job = Job(self, fn, args)
        job._loop = loop
        job.future = loop.create_future()
        self._push(job)
        return job

    def submit_detached_async(
        self, loop: asyncio.AbstractEventLoop, fn: Callable[..., T], *args: Any
    ) -> asyncio.Future[T]:
        """Like :meth:`submit_async`, on a thread of its own: for work that must not queue
        behind the workers (closing the pool while every worker is stuck in a statement)."""
        job = Job(self, fn, args)
        job._loop = loop
        job.future = future = loop.create_future()
        threading.Thread(target=job.run, name=f"{self._name}-closer", daemon=True).start()
        return future

    def submit_detached(self, fn: Callable[..., Any], *args: Any) -> Job:
        """Run ``fn(*args)`` on a thread of its own, without waiting for it."""
        job = Job(self, fn, args)
        threading.Thread(target=job.run, name=f"{self._name}-closer", daemon=True).start()
        return job

    def _push(self, job: Job) -> None:
        with self._cond:
            self._jobs.append(job)
            if self._idle >= len(self._jobs):
                self._cond.notify()
                return
            if self._threads >= self._max:
                return  # queued: a busy thread takes it when done
            self._threads += 1
            number = next(self._numbers)
        thread = threading.Thread(
            target=self._work, name=f"{self._name}-worker-{number}", daemon=True
        )
        thread.start()

    def _work(self) -> None:
        cond = self._cond
        jobs = self._jobs
        while True:
            with cond:
                while not jobs:
                    if self._stopping:
                        self._threads -= 1
                        return
                    self._idle += 1
                    woken = cond.wait(WORKER_IDLE_EXIT)
                    self._idle -= 1
                    if not woken and not jobs:
                        self._threads -= 1
                        return
                job = jobs.popleft()
            job.run()

    def shutdown(self) -> None:
        """Let idle threads exit now. Jobs submitted later still run (on new threads)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()


# -- the core ------------------------------------------------------------------------------

_pool_numbers = itertools.count(1)


class PoolCore:
    """Carries out the decisions of :class:`PoolState` for both faces. See the module
    docstring; every method that does I/O blocks its calling thread."""

    def __init__(
        self,
        config: PoolConfig,
        hooks: PoolHooks,
        driver: RawDriver,
        *,
        name: str = "pgconnector",
    ) -> None:
        params = config.connect_params()
        self.name = f"{name}-{next(_pool_numbers)}"
        self.config = config
        self.hooks = hooks
        self.driver = driver
        self.target = describe_target(params)
        self.secrets = tuple(s for s in {params.password, config.password} if s)
        self.connect_timeout = params.connect_timeout
        #: How long the next statement or the release waits for a statement abandoned by a
        #: cancelled async caller: one connect_timeout for the cancel request (a connection of
        #: its own) and one for the statement to end once the server got it. Past that, the
        #: connection is closed under the statement.
        self.settle_timeout = 2 * params.connect_timeout
        self.session_reset = config.reset_on_release == "session"
        self.state = PoolState(
            Limits(
                min_size=config.min_size,
                max_size=config.max_size,
                idle_timeout=config.idle_timeout,
                max_lifetime=config.max_lifetime,
                max_uses=config.max_uses,
                ping_after_idle=config.ping_after_idle,
            ),
            clock=monotonic,
        )
        # One op per connection at a time, and one cancelling it if its caller abandoned it
        # (see interrupt()), plus connects, plus a close.
        self.workers = Workers(self.name, 2 * config.max_size + MAX_PARALLEL_CONNECTS + 1)
        self._housekeeper: threading.Thread | None = None
        #: Connect and close jobs not finished yet (close() waits for them to settle).
        self._pending = 0
        self._settled = threading.Condition(threading.Lock())
        self._atexit: Callable[[], None] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        plan = self.state.start()
        self._housekeeper = threading.Thread(
            target=self._housekeep, name=f"{self.name}-housekeeper", daemon=True
        )
        self._housekeeper.start()
        if not self.config.allow_exit_on_idle:
            self._atexit = _exit_hook(self)
            atexit.register(self._atexit)
        self.run_plan(plan)

    def close_blocking(self, timeout: float) -> None:
        """Close idle connections now, fail waiters, stop housekeeping; wait up to
        ``timeout`` for connects and closes in flight to settle (so that every connection
        they open or close has been reported when this returns)."""
        deadline = monotonic() + max(timeout, 0.0)
        self.run_plan(self.state.close(), inline=True)
        with self._settled:
            while self._pending:
                remaining = deadline - monotonic()
                if remaining <= 0:
                    break
                self._settled.wait(remaining)
        housekeeper = self._housekeeper
        if housekeeper is not None and housekeeper is not threading.current_thread():
            housekeeper.join(max(deadline - monotonic(), 0.0))
        self.workers.shutdown()
        if self._atexit is not None:
            atexit.unregister(self._atexit)
            self._atexit = None

    # -- carrying out plans ----------------------------------------------------------------

    def run_plan(self, plan: Plan, *, inline: bool = False) -> None:
        """Start the plan's connects (always in workers) and close its connections: here
        when ``inline``, else in a worker (so that a borrower is not delayed by them)."""
        if plan.connects:
            self._add_pending(plan.connects)
            for _ in range(plan.connects):
                self.workers.submit(self._connect)
        if plan.close:
            if inline:
                for entry, reason in plan.close:
                    self.close_entry(entry, reason)
            else:
                self._add_pending(1)
                self.workers.submit(self._close_all, plan.close)

    def _add_pending(self, count: int) -> None:
        with self._settled:
            self._pending += count

    def _done_pending(self) -> None:
        with self._settled:
            self._pending -= 1
            if not self._pending:
                self._settled.notify_all()

    def _close_all(self, closes: list[tuple[Entry, str]]) -> None:
        try:
            for entry, reason in closes:
                self.close_entry(entry, reason)
        finally:
            self._done_pending()

    def close_entry(self, entry: Entry, reason: str) -> None:
        """Close a connection the state has claimed for closing, and report it (once: only
        the path that claimed it gets here)."""
        try:
            entry.conn.close()
        except Exception:
            logger.debug("pgconnector: error closing connection %s", entry.connection_id,
                         exc_info=True)
        self.hooks.connection_closed(entry.connection_id, reason)

    def _connect(self) -> None:
        state = self.state
        try:
            started = perf_counter()
            try:
                conn = self.driver.connect(self.connect_timeout)
            except Exception as exc:
                # Reported before any waiter is failed with it, so that a borrower who sees
                # the error can count on the error event having fired.
                if state.is_open:
                    self.hooks.connection_failed(exc)
                plan, _ = state.connect_failed(exc)
                self.run_plan(plan)
                return
            if not state.connect_accepted():
                # The pool closed while connecting: never reported, neither opened nor closed.
                with contextlib.suppress(Exception):
                    conn.close()
                return
            opened = self.hooks.connection_opened(perf_counter() - started)
            entry = state.new_entry(conn, opened)
            self.run_plan(state.connect_placed(entry), inline=True)
        finally:
            self._done_pending()

    # -- housekeeping ----------------------------------------------------------------------

    def _housekeep(self) -> None:
        state = self.state
        cond = state.cond
        while True:
            try:
                self.run_plan(state.housekeep(), inline=True)
            except Exception:  # never let housekeeping die of one bad close
                logger.exception("pgconnector: pool housekeeping failed")
            with cond:
                while state.is_open and not state.poked:
                    delay = state.wake_at - state.clock()
                    if delay <= 0:
                        break
                    cond.wait(delay if delay != float("inf") else None)
                if not state.is_open:
                    return

    # -- borrowing helpers -----------------------------------------------------------------

    def ping_blocking(self, entry: Entry) -> bool:
        """Check a connection idle long enough (``ping_after_idle``). A dead one is closed
        ("check failed") and False returned: the borrower silently takes another."""
        try:
            entry.conn.ping(self.connect_timeout)
        except Exception:
            self.run_plan(self.state.discard(entry, "check failed"), inline=True)
            return False
        return True

    def run_stream(
        self, entry: Entry, chunks: Iterator[bytes]
    ) -> Generator[bytes, None, None]:
        """:meth:`run_op` for a generator (a copy_out): closing this closes ``chunks``."""
        try:
            yield from chunks
        except ConnectionError as exc:
            if self.state.claim_failure_report(entry):
                self.hooks.connection_failed(exc.cause or exc, entry.connection_id)
            raise

    def run_op(self, entry: Entry, fn: Callable[..., T], *args: Any) -> T:
        """Run a statement; report the connection's failure (once) if it broke."""
        try:
            return fn(*args)
        except ConnectionError as exc:
            if self.state.claim_failure_report(entry):
                self.hooks.connection_failed(exc.cause or exc, entry.connection_id)
            raise

    # -- returning -------------------------------------------------------------------------

    def needs_reset(self, entry: Entry) -> bool:
        """True when returning this connection takes a round trip (no I/O)."""
        return self.session_reset or entry.conn.transaction_status() != IDLE

    def release_blocking(self, entry: Entry, discard: bool) -> None:
        """Return a borrowed connection: roll back / reset it if needed, or close it (broken,
        discarded, max_uses, max_lifetime, failed reset, pool closed). Never raises for a
        broken connection."""
        state = self.state
        reason = state.retire_reason(entry, discard)
        if reason is None:
            reason = self._reset(entry)
        self.run_plan(state.put_back(entry, reason), inline=True)

    def _reset(self, entry: Entry) -> str | None:
        conn = entry.conn
        status = conn.transaction_status()
        sql: str | None
        if status == IDLE:
            sql = SESSION_RESET_IDLE if self.session_reset else None
        elif status in (IN_TRANSACTION, IN_ERROR):
            sql = SESSION_RESET_IN_TRANSACTION if self.session_reset else "ROLLBACK"
        elif status == ACTIVE:
            return "discarded"  # a statement still running: not worth waiting for
        else:
            return "broken"
        if sql is None:
            return None
        try:
            conn.execute(sql, ())
        except Exception as exc:
            cause = exc.cause if isinstance(exc, ConnectionError) and exc.cause else exc
            if self.state.claim_failure_report(entry):
                self.hooks.connection_failed(cause, entry.connection_id)
            return "reset failed"
        status = conn.transaction_status()
        if status != IDLE:
            if self.state.claim_failure_report(entry):
                self.hooks.connection_failed(
                    RuntimeError(f"connection left {status} by the reset on release"),
                    entry.connection_id,
                )
            return "reset failed"
        return None

    def discard_blocking(self, entry: Entry, reason: str) -> None:
        """Close a borrowed connection now (even mid-statement) and replace it."""
        self.run_plan(self.state.discard(entry, reason), inline=True)

    def interrupt(self, entry: Entry, job: Job | None = None) -> Job | None:
        """The async caller of the statement ``entry.job`` runs went away (cancelled): ask the
        server to cancel the statement, and put a :class:`Settling` job in its place, done once
        both the statement and the cancel request are over. Until then the connection must
        carry nothing else: the next statement and the release wait for ``entry.job`` (see
        :func:`_settled`). Waiting for the cancel request too means that the server has
        signalled the backend before anything else is sent on this connection, so a late
        cancel can never hit the next statement: a backend idle between commands ignores it.

        With ``job``, only if that is still the statement on the connection (not one another
        task sent after it ended). Returns the job to wait for (the same one if called again),
        or None when nothing runs (a statement no worker had started yet is withdrawn: it is
        never sent). Called from the event loop's thread only, like everything that sets
        ``entry.job``."""
        current = entry.job
        if current is None or current.done or (job is not None and current is not job):
            return None
        job = current
        if isinstance(job, Settling):
            return job
        if job.withdraw():
            return None
        settling = entry.job = Settling(self.workers, _nothing, ())
        lock = threading.Lock()
        remaining = [2]

        def one_done(_job: Job) -> None:
            with lock:
                remaining[0] -= 1
                last = remaining[0] == 0
            if last:
                settling.run()

        cancel = self.workers.submit(self._cancel_running, entry, job)
        job.then(one_done)
        cancel.then(one_done)
        return settling

    def _cancel_running(self, entry: Entry, job: Job) -> None:
        """Cancel requests until the statement is over, the first at once, then less and less
        often, for up to :attr:`settle_timeout`. Repeated because the first may reach the
        server before the statement does (a backend still reading a command ignores a
        cancel); harmless because nothing else is sent on the connection meanwhile."""
        over = threading.Event()
        job.then(lambda _job: over.set())
        deadline = monotonic() + self.settle_timeout
        pause = CANCEL_RETRY_FIRST
        while not job.done:
            entry.conn.cancel()
            remaining = deadline - monotonic()
            if remaining <= 0 or over.wait(min(pause, remaining)):
                return
            pause = min(pause * 2, CANCEL_RETRY_MAX)

    def break_stuck(self, entry: Entry) -> ConnectionError:
        """The statement a cancelled caller left running on ``entry`` did not end within
        :attr:`settle_timeout` although the server was asked to cancel it: close the
        connection under it (the borrower keeps the broken connection until it releases it,
        so that the pool never has more than ``max_size`` connections out) and return the
        error for the borrower's next statement."""
        error = ConnectionError(
            f"connection to PostgreSQL at {self.target} is broken: a statement abandoned by "
            f"a cancelled caller was still running {self.settle_timeout:g} s after the server "
            "was asked to cancel it, so the connection was closed"
        )
        if self.state.claim_failure_report(entry):
            self.hooks.connection_failed(error, entry.connection_id)
        # On a thread of its own: the workers may all be stuck, and the loop must not block.
        self.workers.submit_detached(_close_quietly, entry.conn)
        return error

    def after_orphaned(self, entry: Entry, job: Job) -> None:
        """An async borrower cancelled during the check of a connection (``ping_after_idle``)
        left ``job`` running on it; once it is done, give the connection back (if the check
        failed, it is already closed)."""
        if entry.in_use and not entry.closed:
            self.release_blocking(entry, False)

    # -- errors ----------------------------------------------------------------------------

    def settle(self, waiter: Waiter, timeout: float) -> Entry:
        """The end of a wait, whatever ended it: the connection handed to the waiter, or the
        timeout / connect failure raised."""
        outcome = self.state.withdraw(waiter)
        if outcome is None:
            raise self.timeout(timeout)
        if not isinstance(outcome, Entry):
            raise self.failure(outcome) from outcome
        return outcome

    def abandon_wait(self, waiter: Waiter) -> None:
        """A wait interrupted or cancelled: leave the queue, or hand back a connection that
        was assigned meanwhile (to the next waiter)."""
        outcome = self.state.withdraw(waiter)
        if isinstance(outcome, Entry):
            self.run_plan(self.state.give_back(outcome))

    def describe(self, error: BaseException) -> str:
        try:
            text = self.driver.describe(error)
        except Exception:
            text = str(error)
        return redact(" ".join(text.split()) or type(error).__name__, self.secrets)

    def failure(self, outcome: BaseException) -> ConnectionError:
        """The exception for a waiter failed with ``outcome``."""
        if isinstance(outcome, PoolClosedError):
            return ConnectionError(f"pool closed ({self.name}, {self.target})")
        return ConnectionError(
            f"could not connect to PostgreSQL at {self.target}: {self.describe(outcome)}",
            outcome,
        )

    def timeout(self, timeout: float) -> PoolTimeoutError:
        return PoolTimeoutError(
            f"no connection available within {timeout:g} s from pool {self.name} "
            f"(max_size={self.config.max_size})"
        )

    def open_failure(self, exc: BaseException, timeout: float) -> BaseException:
        """What ``open()`` raises when it could not borrow its first connection."""
        if isinstance(exc, PoolTimeoutError):
            cause = self.state.last_error or TimeoutError(
                f"no connection could be opened within {timeout:g} s"
            )
            detail = self.describe(cause)
            return ConnectionError(
                f"could not connect to PostgreSQL at {self.target}: no connection could be "
                f"opened within {timeout:g} s ({detail})",
                cause,
            )
        return exc

    def __repr__(self) -> str:
        return f"<PoolCore {self.name} {self.target} {self.state!r}>"


def _close_quietly(conn: RawConnection) -> None:
    with contextlib.suppress(Exception):
        conn.close()


def _exit_hook(core: PoolCore) -> Callable[[], None]:
    """An ``atexit`` callback closing the pool politely, holding it only weakly."""
    ref = weakref.ref(core)

    def close_at_exit() -> None:
        pool = ref()
        if pool is not None and pool.state.is_open:
            pool.close_blocking(1.0)

    return close_at_exit


# -- the sync face -------------------------------------------------------------------------


class PooledConnection:
    """The :class:`~pgconnector.DriverConnection` the sync face hands out; one per server
    connection, made once."""

    __slots__ = ("_core", "_entry")

    def __init__(self, core: PoolCore, entry: Entry) -> None:
        self._core = core
        self._entry = entry

    @property
    def connection_id(self) -> int:
        return self._entry.connection_id

    @property
    def raw(self) -> Any:
        return self._entry.conn.raw

    def execute(self, sql: str, args: Sequence[Any], timeout: float | None = None) -> str:
        conn: RawConnection = self._entry.conn
        if timeout is not None:
            return self.run_within(functools.partial(conn.execute, sql, args), timeout)
        return self._core.run_op(self._entry, conn.execute, sql, args)

    def fetch(
        self, sql: str, args: Sequence[Any], timeout: float | None = None
    ) -> QueryResult:
        conn: RawConnection = self._entry.conn
        if timeout is not None:
            return self.run_within(functools.partial(conn.fetch, sql, args), timeout)
        return self._core.run_op(self._entry, conn.fetch, sql, args)

    def executemany(
        self, sql: str, rows: Sequence[tuple[Any, ...]], timeout: float | None = None
    ) -> None:
        conn: RawConnection = self._entry.conn
        if timeout is not None:
            self.run_within(functools.partial(conn.executemany, sql, rows), timeout)
            return
        self._core.run_op(self._entry, conn.executemany, sql, rows)

    def run_within(self, call: Callable[[], T], timeout: float) -> T:
        """The generic pool's statement-timeout primitive (sync face): run ``call`` (driver
        calls on this connection) under ``timeout`` seconds. A timer thread sends
        :meth:`RawConnection.cancel` (again while the statement still runs) and, past
        ``connect_timeout``, closes the connection under the statement; the call returns or
        raises only once the cancel request is over (see ``pgconnector._timeout``)."""
        core = self._core
        entry = self._entry
        conn: RawConnection = entry.conn
        return call_with_timeout(
            functools.partial(core.run_op, entry, call),
            timeout,
            cancel=conn.cancel,
            hang_up=conn.close,
            grace=core.connect_timeout,
        )

    def server_parameter(self, name: str) -> str | None:
        conn: RawConnection = self._entry.conn
        return conn.server_parameter(name)

    def copy_in(self, sql: str, chunks: Iterable[bytes], timeout: float | None = None) -> int:
        conn: RawConnection = self._entry.conn
        if timeout is not None:
            return self.run_within(functools.partial(conn.copy_in, sql, chunks), timeout)
        return self._core.run_op(self._entry, conn.copy_in, sql, chunks)

    def copy_out(self, sql: str, timeout: float | None = None) -> Iterator[bytes]:
        conn: RawConnection = self._entry.conn
        chunks = self._core.run_stream(self._entry, conn.copy_out(sql))
        if timeout is not None:
            return timed_chunks(chunks, timeout, self.run_within)
        return chunks

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._entry!r}>"


class GenericPool:
    """The sync :class:`~pgconnector.PoolBackend` over a :class:`RawDriver`. Thread-safe."""

    def __init__(
        self, config: PoolConfig, hooks: PoolHooks, driver: RawDriver, *, name: str = "pool"
    ) -> None:
        self._core = PoolCore(config, hooks, driver, name=name)

    @property
    def native(self) -> GenericPool:
        """There is no driver pool: the pool is this object."""
        return self

    @property
    def core(self) -> PoolCore:
        return self._core

    def open(self, timeout: float) -> None:
        core = self._core
        core.start()
        try:
            entry = self._take(timeout, opening=True)
        except BaseException as exc:
            core.close_blocking(timeout)
            error = core.open_failure(exc, timeout)
            if error is exc:
                raise
            raise error from error.__cause__
        entry.uses -= 1  # the check borrow is not a use (max_uses)
        core.run_plan(core.state.put_back(entry, None), inline=True)
        core.run_plan(core.state.fill())

    def acquire(self, timeout: float) -> PooledConnection:
        entry = self._take(timeout)
        face = entry.face
        if face is None:
            face = entry.face = PooledConnection(self._core, entry)
        return face  # type: ignore[no-any-return]

    def _take(self, timeout: float, *, opening: bool = False) -> Entry:
        core = self._core
        state = core.state
        deadline = monotonic() + timeout
        front = False
        while True:
            try:
                entry, waiter, plan = state.acquire(ThreadWaiter, front=front)
            except PoolClosedError as exc:
                raise core.failure(exc) from None
            if plan:
                core.run_plan(plan)
            if waiter is not None:
                assert isinstance(waiter, ThreadWaiter)
                try:
                    waiter.wait(deadline - monotonic())
                except BaseException:  # interrupted (KeyboardInterrupt)
                    core.abandon_wait(waiter)
                    raise
                entry = core.settle(waiter, timeout)
            assert entry is not None
            if not opening and state.needs_ping(entry) and not core.ping_blocking(entry):
                front = True
                continue
            return entry

    def release(self, conn: Any, *, discard: bool = False) -> None:
        if not isinstance(conn, PooledConnection) or conn._core is not self._core:
            raise ValueError(f"{conn!r} does not belong to this pool")
        self._core.release_blocking(conn._entry, discard)

    def close(self, timeout: float) -> None:
        self._core.close_blocking(timeout)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._core.name} {self._core.target}>"


# -- the async face ------------------------------------------------------------------------


async def _settled(core: PoolCore, entry: Entry) -> bool:
    """Wait until the statement a cancelled caller left running on ``entry`` is over, and the
    cancel request sent for it too (see :meth:`PoolCore.interrupt`): True then, False if that
    did not happen within ``core.settle_timeout``. Awaited on the loop: no thread waits."""
    job = core.interrupt(entry)
    if job is None:
        return True
    return await _over(job, core.settle_timeout)


async def _over(job: Job, timeout: float | None) -> bool:
    """Wait up to ``timeout`` (None: no limit) for ``job`` to be done; True if it is."""
    loop = asyncio.get_running_loop()
    over: asyncio.Future[None] = loop.create_future()

    def wake(_job: Job) -> None:
        # RuntimeError: the loop is closed, nobody waits any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_resolve, over)

    job.then(wake)
    try:
        await asyncio.wait_for(over, timeout)
    except asyncio.TimeoutError:
        return job.done
    return True


class _Pulled:
    """A blocking iterator over an async ``source``, for a worker thread: each chunk is
    awaited on ``loop``. :meth:`stop` (from the loop) fails the wait in progress and every
    later one."""

    def __init__(self, source: AsyncIterable[bytes], loop: asyncio.AbstractEventLoop) -> None:
        self._iterator = source.__aiter__()
        self._loop = loop
        self._lock = threading.Lock()
        self._pending: concurrent.futures.Future[bytes | None] | None = None
        self._stopped = False

    def __iter__(self) -> _Pulled:
        return self

    def __next__(self) -> bytes:
        with self._lock:
            if self._stopped:
                raise QueryCanceled("the COPY was cancelled (its timeout, or its caller)")
            pending = self._pending = asyncio.run_coroutine_threadsafe(
                _next_chunk(self._iterator), self._loop
            )
        try:
            chunk = pending.result()
        except concurrent.futures.CancelledError:
            raise QueryCanceled("the COPY was cancelled (its timeout, or its caller)") from None
        if chunk is None:
            raise StopIteration
        return chunk

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            pending = self._pending
        if pending is not None:
            pending.cancel()


async def _next_chunk(iterator: AsyncIterator[bytes]) -> bytes | None:
    try:
        return await iterator.__anext__()
    except StopAsyncIteration:
        return None


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():  # not given up on (timed out, cancelled)
        future.set_result(None)


class AsyncPooledConnection:
    """The :class:`~pgconnector.AsyncDriverConnection` of the async face: every driver call
    runs in a worker thread, awaited through a future of the caller's loop."""

    __slots__ = ("_core", "_entry")

    def __init__(self, core: PoolCore, entry: Entry) -> None:
        self._core = core
        self._entry = entry

    @property
    def connection_id(self) -> int:
        return self._entry.connection_id

    @property
    def raw(self) -> Any:
        return self._entry.conn.raw

    async def execute(
        self, sql: str, args: Sequence[Any], timeout: float | None = None
    ) -> str:
        status: str = await self._run(self._entry.conn.execute, sql, args, timeout=timeout)
        return status

    async def fetch(
        self, sql: str, args: Sequence[Any], timeout: float | None = None
    ) -> QueryResult:
        result: QueryResult = await self._run(self._entry.conn.fetch, sql, args, timeout=timeout)
        return result

    async def executemany(
        self, sql: str, rows: Sequence[tuple[Any, ...]], timeout: float | None = None
    ) -> None:
        await self._run(self._entry.conn.executemany, sql, rows, timeout=timeout)

    def server_parameter(self, name: str) -> str | None:
        conn: RawConnection = self._entry.conn
        return conn.server_parameter(name)

    async def copy_in(self, sql: str, chunks: AsyncChunks, timeout: float | None = None) -> int:
        source, iterable = split_chunks(chunks)
        pulled = None
        if source is not None:
            # The COPY runs in a worker thread; it pulls each chunk of an async source from
            # this loop (free meanwhile: the caller awaits the worker).
            iterable = pulled = _Pulled(source, asyncio.get_running_loop())
        watchdog = None
        if pulled is not None and timeout is not None:
            # A stalled source must not hold the worker past the timeout: its wait then fails
            # (QueryCanceled, which the timeout reports as StatementTimeoutError).
            watchdog = asyncio.get_running_loop().call_later(timeout, pulled.stop)
        try:
            count: int = await self._run(self._entry.conn.copy_in, sql, iterable, timeout=timeout)
        except BaseException:
            if pulled is not None:
                # Cancelled: a source that waits would keep the worker (and the COPY) forever;
                # failing the wait makes the driver abort the COPY at once.
                pulled.stop()
            raise
        finally:
            if watchdog is not None:
                watchdog.cancel()
        return count

    async def copy_out(self, sql: str, timeout: float | None = None) -> AsyncIterator[bytes]:
        """Each chunk is read by a worker thread (one job per chunk, so a cancelled caller is
        handled as for any statement: cancelled on the server, settled before the next one);
        closed early, the generator is closed in a worker too (cancel, then read the rest)."""
        core = self._core
        entry = self._entry
        chunks = core.run_stream(entry, entry.conn.copy_out(sql))
        deadline = None if timeout is None else monotonic() + timeout
        finished = False
        try:
            while True:
                remaining = None
                if deadline is not None:
                    # The timeout covers the whole COPY (see pgconnector._copy.timed_chunks).
                    remaining = deadline - monotonic()
                    if remaining <= 0:
                        finished = True
                        await self._run(chunks.close)
                        raise timed_out(None, timeout)  # type: ignore[arg-type]
                try:
                    chunk = await self._run(next, chunks, None, timeout=remaining)
                except Exception:
                    finished = True  # it raised: the generator is over
                    raise
                if chunk is None:
                    finished = True
                    return
                yield chunk
        finally:
            # Closed early (GeneratorExit at the yield), or the caller cancelled while a
            # worker read a chunk (closed once that is settled: see _run).
            if not finished:
                await self._run(chunks.close)

    async def _run(self, fn: Callable[..., Any], *args: Any, timeout: float | None = None) -> Any:
        """Run ``fn(*args)`` (driver calls on this connection) in a worker thread. This is
        also the generic pool's statement-timeout primitive (async face): with ``timeout``,
        see :meth:`_within`."""
        core = self._core
        entry = self._entry
        # One statement at a time on a connection: never send this one beside another.
        while (previous := entry.job) is not None and not previous.done:
            if isinstance(previous, Settling):
                # Left running by a cancelled caller, and being cancelled on the server.
                if not await _settled(core, entry):
                    raise core.break_stuck(entry)
            else:
                # Another task's statement on this client (a client is not meant to be
                # shared, but then it queues, as behind a lock, rather than interleaving).
                await _over(previous, None)
        # Kept on the entry: if the caller is cancelled, the statement goes on in the worker,
        # and nothing else may be sent on the connection until it is over.
        job = entry.job = core.workers.submit_job_async(
            asyncio.get_running_loop(), core.run_op, entry, fn, *args
        )
        assert job.future is not None
        try:
            if timeout is not None:
                return await self._within(job, timeout)
            return await job.future
        except BaseException:
            # Cancelled (or interrupted) while the statement runs in its worker: have it
            # cancelled on the server now, so that the caller's next statement (a ROLLBACK, in
            # a transaction block) or the release does not wait for it to run to its end.
            # (A job that ended, with its own error, needs nothing: interrupt() sees it done.)
            core.interrupt(entry, job)
            raise

    async def _within(self, job: Job, timeout: float) -> Any:
        """Await ``job`` (a statement on this connection) for up to ``timeout`` seconds; past
        that, cancel it on the server as for a cancelled caller (:meth:`PoolCore.interrupt`),
        and wait until both the statement and the cancel requests are over (so that none can
        hit the next statement) before raising ``StatementTimeoutError``. If that takes more
        than ``settle_timeout``, the connection is closed under the statement and this raises
        ``ConnectionError``."""
        future = job.future
        assert future is not None
        try:
            finished, _ = await asyncio.wait((future,), timeout=timeout)
            if finished:
                return future.result()
            if job.withdraw():
                # No worker had started it (all busy): it is never sent.
                raise timed_out(None, timeout)
            core = self._core
            settling = core.interrupt(self._entry, job)
            if settling is not None and not await _over(settling, core.settle_timeout):
                raise stuck_error(core.break_stuck(self._entry), timeout, core.settle_timeout)
            try:
                # Over (perhaps it ended just before the cancel: then its result stands); its
                # outcome reaches the future from the worker.
                return await future
            except QueryCanceled as exc:
                raise timed_out(exc, timeout) from exc.cause
        except BaseException:
            # Given up on (or the caller cancelled): the statement's outcome, when it comes,
            # is nobody's; a cancelled future drops it instead of logging it as unretrieved.
            future.cancel()
            raise

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._entry!r}>"


class AsyncGenericPool:
    """The :class:`~pgconnector.AsyncPoolBackend` over a :class:`RawDriver`: the same pool,
    waited for on the event loop, its blocking work done in worker threads."""

    def __init__(
        self, config: PoolConfig, hooks: PoolHooks, driver: RawDriver, *, name: str = "pool"
    ) -> None:
        self._core = PoolCore(config, hooks, driver, name=name)

    @property
    def native(self) -> AsyncGenericPool:
        """There is no driver pool: the pool is this object."""
        return self

    @property
    def core(self) -> PoolCore:
        return self._core

    async def _blocking(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._core.workers.submit_async(asyncio.get_running_loop(), fn, *args)

    async def open(self, timeout: float) -> None:
        core = self._core
        core.start()
        try:
            entry = await self._take(timeout, opening=True)
        except BaseException as exc:
            await core.workers.submit_detached_async(
                asyncio.get_running_loop(), core.close_blocking, timeout
            )
            error = core.open_failure(exc, timeout)
            if error is exc:
                raise
            raise error from error.__cause__
        entry.uses -= 1  # the check borrow is not a use (max_uses)
        core.run_plan(core.state.put_back(entry, None))
        core.run_plan(core.state.fill())

    async def acquire(self, timeout: float) -> AsyncPooledConnection:
        entry = await self._take(timeout)
        face = entry.face
        if face is None:
            face = entry.face = AsyncPooledConnection(self._core, entry)
        return face  # type: ignore[no-any-return]

    async def _take(self, timeout: float, *, opening: bool = False) -> Entry:
        core = self._core
        state = core.state
        loop = asyncio.get_running_loop()
        deadline = monotonic() + timeout
        front = False

        def make_waiter() -> AsyncWaiter:
            return AsyncWaiter(loop)

        while True:
            try:
                entry, waiter, plan = state.acquire(make_waiter, front=front)
            except PoolClosedError as exc:
                raise core.failure(exc) from None
            if plan:
                core.run_plan(plan)
            if waiter is not None:
                assert isinstance(waiter, AsyncWaiter)
                remaining = deadline - monotonic()
                try:
                    if remaining > 0:
                        await asyncio.wait_for(waiter.future, remaining)
                except asyncio.TimeoutError:
                    pass
                except BaseException:  # cancelled
                    core.abandon_wait(waiter)
                    raise
                entry = core.settle(waiter, timeout)
            assert entry is not None
            if not opening and state.needs_ping(entry):
                job = core.workers.submit_job_async(loop, core.ping_blocking, entry)
                assert job.future is not None
                try:
                    alive = await job.future
                except BaseException:
                    # Cancelled during the check: the connection comes back once it is done.
                    job.then(functools.partial(core.after_orphaned, entry))
                    raise
                if not alive:
                    front = True
                    continue
            return entry

    async def release(self, conn: Any, *, discard: bool = False) -> None:
        if not isinstance(conn, AsyncPooledConnection) or conn._core is not self._core:
            raise ValueError(f"{conn!r} does not belong to this pool")
        core = self._core
        entry = conn._entry
        job = entry.job
        if job is not None and not job.done:
            # The borrower was cancelled while a statement ran in a worker thread.
            if discard:
                # Closed under the statement: nothing to wait for.
                await self._blocking(core.discard_blocking, entry, "discarded")
            else:
                # Never back to the pool while the statement runs; finished in the background
                # if this caller is cancelled again meanwhile.
                await finish_even_if_cancelled(self._release_when_settled(entry))
            return
        if not discard and not core.needs_reset(entry) and core.state.retire_reason(entry) is None:
            # A clean connection: back to the pool without a round trip or a thread.
            plan = core.state.put_back(entry, None)
            if plan:
                core.run_plan(plan)
            return
        await self._blocking(core.release_blocking, entry, discard)

    async def _release_when_settled(self, entry: Entry) -> None:
        core = self._core
        if await _settled(core, entry):
            await self._blocking(core.release_blocking, entry, False)
        else:
            # Still running although cancelled on the server: close it under the statement.
            await self._blocking(core.discard_blocking, entry, "broken")

    async def close(self, timeout: float) -> None:
        await self._core.workers.submit_detached_async(
            asyncio.get_running_loop(), self._core.close_blocking, timeout
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._core.name} {self._core.target}>"
