"""A background worker: claims jobs from a PostgreSQL table, one at a time, safely in parallel.

Configured from the environment like the web examples: ``DATABASE_URL`` (and the libpq ``PG*``
variables) and ``PGCONNECTOR_BACKEND`` (or a ``postgresql+NAME://`` URL). It is asyncio, so
every backend works (psycopg, asyncpg, pg8000). Run as many copies as you like::

    DATABASE_URL=postgresql://app:secret@127.0.0.1:5432/app PGCONNECTOR_BACKEND=asyncpg \\
    python examples/worker.py --create-table

    psql "$DATABASE_URL" -c "INSERT INTO jobs (payload) SELECT json_build_object('n', i)
                             FROM generate_series(1, 100) AS i"

Options: ``--max-jobs N`` stops after N jobs, ``--exit-when-empty`` stops when no job can be
claimed (a batch run, a test), ``--poll-interval S`` is how long an idle worker waits before
looking again, ``--work-seconds S`` simulates slow work, ``--create-table`` creates the table
if it is missing (see :data:`SCHEMA`).

Each job is claimed with ``SELECT … FOR UPDATE SKIP LOCKED`` inside ``client.transaction()``
and handled, and marked done, in that same transaction: concurrent workers skip each other's
jobs instead of waiting for them, and a worker that dies mid-job (crash, lost connection,
SIGKILL) rolls back, so the job is queued again rather than lost or done twice. A job whose
handler raises is put back with its error and ``attempts`` counted, and marked ``failed``
after :data:`MAX_ATTEMPTS`.

SIGTERM or SIGINT (``kubectl delete pod``, Ctrl-C) lets the current job finish and commit,
then the pool is closed and the process exits 0. If the database cannot be reached at start,
the worker exits 1 with the (password-redacted) reason on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from typing import Any

import pgconnector
from pgconnector import AsyncClient, AsyncConnectionManager, PoolConfig, production_pool_config

EXIT_OK, EXIT_UNREACHABLE = 0, 1
MAX_ATTEMPTS = 3
# A short connection outage: back off this long before claiming again, instead of spinning.
RETRY_DELAY = 1.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id           bigserial PRIMARY KEY,
    payload      jsonb NOT NULL,
    status       text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'done', 'failed')),
    attempts     int NOT NULL DEFAULT 0,
    result       jsonb,
    last_error   text,
    processed_by text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    done_at      timestamptz
);
CREATE INDEX IF NOT EXISTS jobs_queued ON jobs (id) WHERE status = 'queued'
"""

# ORDER BY id: oldest first. SKIP LOCKED: rows another worker holds are not waited for.
CLAIM = """
SELECT id, payload FROM jobs WHERE status = 'queued'
ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED
"""
MARK_DONE = """
UPDATE jobs SET status = 'done', attempts = attempts + 1, result = $2::jsonb,
       processed_by = $3, done_at = now(), last_error = NULL
WHERE id = $1
"""
MARK_FAILED = """
UPDATE jobs SET attempts = attempts + 1, last_error = $2, processed_by = $3,
       status = CASE WHEN attempts + 1 >= $4 THEN 'failed' ELSE 'queued' END
WHERE id = $1
"""

log = logging.getLogger("worker")


class JobError(Exception):
    """The job itself is bad: retrying the same payload will fail the same way."""


async def handle(payload: Any, work_seconds: float) -> dict[str, Any]:
    """The work. Replace with yours; it may use the database through the same ``client``."""
    if work_seconds:
        await asyncio.sleep(work_seconds)  # stands for I/O: an HTTP call, a file, an e-mail
    if not isinstance(payload, dict) or not isinstance(payload.get("n"), int):
        raise JobError(f"payload needs an integer 'n', got {payload!r}")
    return {"square": payload["n"] ** 2}


async def claim_and_process(client: AsyncClient, worker_id: str, work_seconds: float) -> bool:
    """Claim one job, handle it and record the outcome; False when none could be claimed."""
    async with client.transaction():
        row = await client.fetchrow(CLAIM)
        if row is None:
            return False
        job_id: int = row["id"]
        log.info("claimed job %d", job_id)
        try:
            # A savepoint: a failing handler undoes its own writes, not the claim.
            async with client.transaction():
                result = await handle(row["payload"], work_seconds)
        except pgconnector.ConnectionError:
            raise  # the whole transaction is gone; the job goes back to the queue by itself
        except Exception as exc:
            # Queued again at once (a real worker might add a run_after column for backoff).
            await client.execute(MARK_FAILED, job_id, f"{type(exc).__name__}: {exc}",
                                 worker_id, MAX_ATTEMPTS)
            log.warning("job %d failed: %s", job_id, exc)
        else:
            await client.execute(MARK_DONE, job_id, json.dumps(result), worker_id)
            log.info("processed job %d", job_id)
    return True


async def run(args: argparse.Namespace) -> int:
    env = PoolConfig.from_env()
    # One job at a time needs one connection; the second is for a health probe or a handler
    # that opens its own. min_size=1 keeps one warm between jobs.
    config = production_pool_config(dsn=env.dsn, backend=env.backend, min_size=1, max_size=2)
    manager = AsyncConnectionManager(config)
    worker_id = f"{socket.gethostname()}:{os.getpid()}"

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # The handler only sets a flag: the job in progress runs to its commit, and the
        # loop below looks at the flag between jobs.
        loop.add_signal_handler(sig, stop.set)

    try:
        await manager.connect()
    except pgconnector.ConnectionError as exc:
        print(f"worker: cannot reach the database: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    log.info("worker %s started (%s backend)", worker_id, manager.backend_name)
    if args.create_table:
        async with manager.connection() as client:
            await client.execute(SCHEMA)  # several statements: no arguments, one round trip

    done = 0
    reason = "signal"
    try:
        while not stop.is_set():
            if args.max_jobs is not None and done >= args.max_jobs:
                reason = f"--max-jobs {args.max_jobs}"
                break
            try:
                async with manager.connection() as client:
                    claimed = await claim_and_process(client, worker_id, args.work_seconds)
            except pgconnector.ConnectionError as exc:
                # An outage (or a failover) while running: the pool reconnects by itself.
                log.warning("database unavailable, retrying in %g s: %s", RETRY_DELAY, exc)
                await wait_or_stop(stop, RETRY_DELAY)
                continue
            if claimed:
                done += 1
            elif args.exit_when_empty:
                reason = "queue empty"
                break
            else:
                # LISTEN/NOTIFY could wake us sooner; polling keeps the example short.
                await wait_or_stop(stop, args.poll_interval)
    finally:
        await manager.disconnect()
    log.info("worker %s stopped after %d jobs (%s)", worker_id, done, reason)
    return EXIT_OK


async def wait_or_stop(stop: asyncio.Event, seconds: float) -> None:
    """Sleep up to ``seconds``, but wake at once on SIGTERM/SIGINT."""
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--max-jobs", type=int, default=None,
                        help="stop after N jobs handled (done or failed)")
    parser.add_argument("--exit-when-empty", action="store_true",
                        help="stop when no job can be claimed")
    parser.add_argument("--poll-interval", type=float, default=1.0,
                        help="seconds an idle worker waits before looking again (1)")
    parser.add_argument("--work-seconds", type=float, default=0.0,
                        help="simulated work per job, in seconds (0)")
    parser.add_argument("--create-table", action="store_true",
                        help="create the jobs table if it is missing")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
