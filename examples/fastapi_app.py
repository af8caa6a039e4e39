"""A FastAPI service with one pgconnector pool per process, and Kubernetes-style probes.

Configured from the environment: ``DATABASE_URL`` (and the libpq ``PG*`` variables) says which
server, ``PGCONNECTOR_BACKEND`` (or a ``postgresql+NAME://`` URL) which backend; every backend
has an async manager, so psycopg, asyncpg and pg8000 all work. Run it with uvicorn, from the
repository root::

    DATABASE_URL=postgresql://app:secret@127.0.0.1:5432/app PGCONNECTOR_BACKEND=asyncpg \\
    uvicorn --app-dir examples fastapi_app:app --port 8000

or as a script (``HOST`` and ``PORT`` choose the address; default 127.0.0.1:8000)::

    DATABASE_URL=... python examples/fastapi_app.py

Routes:

* ``GET /healthz`` — liveness: the process answers; never touches the database, so a database
  outage does not make Kubernetes restart every replica.
* ``GET /readyz`` — readiness: ``health_check()`` through the pool; 200 with the
  ``ConnectionStatus`` as JSON when it works, 503 (same JSON, with the redacted error) when it
  does not, so the replica is taken out of the Service until the database is back.
* ``GET /numbers/{limit}`` — a real query with a ``$1`` parameter.

The pool is opened by the lifespan before the first request is accepted: if the database is
unreachable at start-up, uvicorn exits non-zero ("Application startup failed") instead of
serving a replica that cannot work. Once started, outages are the pool's business: it recovers
by itself, and ``/readyz`` says 503 meanwhile.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Path, Request
from fastapi.responses import JSONResponse

import pgconnector
from pgconnector import AsyncConnectionManager, ConnectionStatus, PoolConfig, production_pool_config

# Below a Kubernetes probe's timeoutSeconds (set it to 3 for this value): a check that takes
# longer than the probe allows is counted as a failure anyway, and nobody reads its answer.
READINESS_TIMEOUT = 2.0
# Seconds given to requests still holding connections at shutdown; keep it below the pod's
# terminationGracePeriodSeconds (30 by default) minus uvicorn's own drain.
DISCONNECT_TIMEOUT = 10.0
MAX_LIMIT = 1000


def config_from_env() -> PoolConfig:
    """The production preset, for the server and backend the environment names."""
    env = PoolConfig.from_env()  # DATABASE_URL, PGCONNECTOR_BACKEND (the PG* variables later)
    return production_pool_config(dsn=env.dsn, backend=env.backend)


def status_body(status: ConnectionStatus) -> dict[str, Any]:
    """The ``ConnectionStatus`` as JSON-ready data (the shape of ``pgconnector check --json``)."""
    body = dataclasses.asdict(status)
    last_checked: datetime = body["last_checked"]
    body["last_checked"] = last_checked.isoformat()
    return body


def get_manager(request: Request) -> AsyncConnectionManager:
    """FastAPI dependency: the process's manager, stored on ``app.state`` by the lifespan.

    Tests can swap it with ``app.dependency_overrides[get_manager] = ...``.
    """
    manager: AsyncConnectionManager | None = getattr(request.app.state, "manager", None)
    if manager is None:  # only when the app runs without its lifespan
        raise HTTPException(503, "database pool not started")
    return manager


Manager = Annotated[AsyncConnectionManager, Depends(get_manager)]


def create_app(config: PoolConfig | None = None) -> FastAPI:
    """The application; ``config`` defaults to :func:`config_from_env` read at start-up."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Built here rather than at import so that importing the module (tests, tooling)
        # reads no environment and opens nothing. Construction does no I/O.
        manager = AsyncConnectionManager(config if config is not None else config_from_env())
        # Raises pgconnector.ConnectionError (password redacted) when the server is
        # unreachable: start-up fails and the orchestrator retries with backoff.
        await manager.connect()
        app.state.manager = manager
        try:
            yield
        finally:
            # uvicorn gets here on SIGTERM/SIGINT after in-flight requests have finished, so
            # the server sees every session of this replica end cleanly.
            await manager.disconnect(timeout=DISCONNECT_TIMEOUT)

    app = FastAPI(title="pgconnector example", lifespan=lifespan)

    @app.exception_handler(pgconnector.ConnectionError)
    async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        # An outage is a 503 (retry later), not a 500 (a bug); the message is redacted.
        return JSONResponse({"detail": str(exc)}, status_code=503)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(manager: Manager) -> JSONResponse:
        status = await manager.health_check(timeout=READINESS_TIMEOUT)  # never raises
        return JSONResponse(status_body(status), status_code=200 if status.connected else 503)

    @app.get("/numbers/{limit}")
    async def numbers(
        manager: Manager, limit: Annotated[int, Path(ge=1, le=MAX_LIMIT)]
    ) -> list[dict[str, Any]]:
        # Borrowed for the query only and given back before the response is serialised: a
        # connection held while a slow client reads would shrink the pool for everyone.
        async with manager.connection() as client:
            rows = await client.fetch(
                "SELECT n, n * n AS square FROM generate_series(1, $1::int) AS n", limit
            )
        return [dict(row) for row in rows]

    return app


# What ``uvicorn fastapi_app:app`` serves.
app = create_app()


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(
        app,
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ.get("PORT", "8000")),
    )
