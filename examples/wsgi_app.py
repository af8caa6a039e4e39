"""A Flask (WSGI) service with one pgconnector pool per process, and Kubernetes-style probes.

Configured from the environment: ``DATABASE_URL`` (and the libpq ``PG*`` variables) says which
server, ``PGCONNECTOR_BACKEND`` (or a ``postgresql+NAME://`` URL) which backend. WSGI is
synchronous, so this uses ``ConnectionManager``: psycopg or pg8000 (asyncpg has no sync
manager, and ``create_app()`` says so with ``UnsupportedBackendError``).

Under a production WSGI server, one app (and one pool) per worker process::

    DATABASE_URL=postgresql://app:secret@127.0.0.1:5432/app PGCONNECTOR_BACKEND=psycopg \\
    gunicorn --chdir examples -w 4 --threads 8 -b 127.0.0.1:8000 'wsgi_app:create_app()'

With Flask's development server: ``flask --app examples/wsgi_app.py run``. As a script, it
serves with werkzeug's threaded server (``HOST``/``PORT``, default 127.0.0.1:8000; ``PORT=0``
picks a free port), prints ``serving on http://HOST:PORT`` to stderr once it accepts requests,
and stops cleanly on SIGTERM or SIGINT::

    DATABASE_URL=... python examples/wsgi_app.py

Routes: ``/healthz`` (liveness, no database), ``/readyz`` (readiness: 200 with the
``ConnectionStatus`` JSON when the pool answers, 503 when it does not) and ``/numbers/<n>`` (a
query with a ``$1`` parameter).

WSGI has no lifespan, so the pool's life is tied to the process:

* it is *connected lazily*, on the first request that needs it. Pre-forking servers
  (gunicorn ``--preload``, uWSGI without ``lazy-apps``) import the app in a master process and
  then fork the workers: a pool opened at import would have its sockets and housekeeping
  threads copied into every worker, sharing one server session between processes. Opened
  after the fork, each worker has its own. ``connect()`` is idempotent and thread-safe, so
  every request may call it; once connected it costs one attribute check;
* it is *disconnected at exit* by an ``atexit`` hook (see :func:`create_app` for why not a
  Flask teardown hook).
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import os
import signal
import sys
import threading
from datetime import datetime, timezone
from types import FrameType
from typing import Any

from flask import Flask, Response, current_app, jsonify

import pgconnector
from pgconnector import ConnectionManager, ConnectionStatus, PoolConfig, production_pool_config

EXTENSION_KEY = "pgconnector"
READINESS_TIMEOUT = 2.0  # below the readinessProbe's timeoutSeconds
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


def get_manager() -> ConnectionManager:
    """The app's manager, connected. Call it inside a request (or app context).

    Raises :class:`pgconnector.ConnectionError` (password redacted) while the database cannot
    be reached; the next call tries again.
    """
    manager: ConnectionManager = current_app.extensions[EXTENSION_KEY]
    manager.connect()
    return manager


def create_app(config: PoolConfig | None = None) -> Flask:
    """The application; ``config`` defaults to :func:`config_from_env`."""
    app = Flask(__name__)
    # Construction does no I/O (it only checks the config and the backend): safe at import
    # time, before a pre-forking server forks.
    manager = ConnectionManager(config if config is not None else config_from_env())
    app.extensions[EXTENSION_KEY] = manager
    # atexit rather than @app.teardown_appcontext: Flask runs teardown hooks after *every*
    # request, so closing the pool there would reconnect on each one. atexit runs once, when
    # the worker exits normally (gunicorn and uWSGI turn SIGTERM into a graceful exit; this
    # script's __main__ does too). It does not run on SIGKILL; the server then sees the
    # sockets close and ends the sessions itself. A no-op if the pool was never opened.
    atexit.register(manager.disconnect, DISCONNECT_TIMEOUT)

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify(status="ok")

    @app.get("/readyz")
    def readyz() -> tuple[Response, int]:
        try:
            manager = get_manager()
        except pgconnector.ConnectionError as exc:
            # Never connected yet (the database was down when the first request came):
            # report why, in the same shape as a failed health check.
            status = ConnectionStatus(
                connected=False,
                pool_stats=current_app.extensions[EXTENSION_KEY].get_pool_stats(),
                last_checked=datetime.now(timezone.utc),
                error=str(exc),
            )
        else:
            status = manager.health_check(timeout=READINESS_TIMEOUT)  # never raises
        return jsonify(status_body(status)), 200 if status.connected else 503

    @app.get("/numbers/<int:limit>")
    def numbers(limit: int) -> Response | tuple[Response, int]:
        if not 1 <= limit <= MAX_LIMIT:
            return jsonify(error=f"limit must be between 1 and {MAX_LIMIT}"), 422
        # Borrowed for the query only: the connection is back in the pool before the
        # response is written to a possibly slow client.
        with get_manager().connection() as client:
            rows = client.fetch(
                "SELECT n, n * n AS square FROM generate_series(1, $1::int) AS n", limit
            )
        return jsonify([dict(row) for row in rows])

    @app.errorhandler(pgconnector.ConnectionError)
    def database_unavailable(exc: pgconnector.ConnectionError) -> tuple[Response, int]:
        # An outage is a 503 (retry later), not a 500 (a bug); the message is redacted.
        return jsonify(error=str(exc)), 503

    return app


def main() -> None:
    from werkzeug.serving import make_server

    # The pool logs its opening and closing at INFO on the "pgconnector" logger.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    app = create_app()
    server = make_server(
        os.environ.get("HOST", "127.0.0.1"), int(os.environ.get("PORT", "8000")), app,
        threaded=True,
    )

    def stop(signum: int, frame: FrameType | None) -> None:
        # shutdown() waits for serve_forever() to return, which runs in this (the main)
        # thread: ask from another thread so the handler itself returns at once.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"serving on http://{server.host}:{server.server_port}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    # Returning from main() lets the interpreter exit normally, which runs the atexit hook.


if __name__ == "__main__":
    main()
