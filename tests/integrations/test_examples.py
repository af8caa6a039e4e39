"""The framework examples, run for real: FastAPI under uvicorn, Flask under a WSGI server, the
worker as a script, each against a server the test starts, on every backend it supports.

The apps run as subprocesses, configured only through the environment (``DATABASE_URL``,
``PGCONNECTOR_BACKEND``) as users run them; each DSN carries an ``application_name`` so that
the sessions an app leaves on the server can be counted.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

import pgconnector
from pgconnector import PoolConfig, test_pool_config
from tests.conftest import ServerInfo

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
BACKENDS = pgconnector.available_backends()
ASYNC_BACKENDS = [name for name, info in BACKENDS.items() if info.supports_async]
SYNC_BACKENDS = [name for name, info in BACKENDS.items() if info.supports_sync]
ASYNC_ONLY_BACKENDS = [name for name in ASYNC_BACKENDS if name not in SYNC_BACKENDS]
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0


# -- helpers ---------------------------------------------------------------------------------


@cache
def load_example(name: str) -> ModuleType:
    """Import ``examples/NAME.py`` (the directory is not a package)."""
    spec = importlib.util.spec_from_file_location(f"pgconnector_example_{name}",
                                                  EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def example_env(dsn: str, backend: str, **extra: str) -> dict[str, str]:
    """Our environment without anything that would point the app elsewhere."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PG") and k not in ("DATABASE_URL", "HOST", "PORT")}
    env.update(DATABASE_URL=dsn, PGCONNECTOR_BACKEND=backend, PYTHONUNBUFFERED="1", **extra)
    return env


def app_dsn(server: Any, application_name: str) -> str:
    return f"{server.dsn()}?application_name={application_name}"


def closed_port_dsn(password: str) -> str:
    """A DSN for a port nobody listens on (bound and released: refused, not silent)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"postgresql://app:{password}@127.0.0.1:{port}/app"


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll an external process or server (nothing to wait on in-process), bounded."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


class Process:
    """A subprocess whose merged output is read by a thread, so a test can wait for a line."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.argv = argv
        self.popen = subprocess.Popen(
            argv, env=env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
            # Its own session: a Ctrl-C on pytest does not reach it half-way; cleanup kills it.
            start_new_session=True,
        )
        self._lines: list[str] = []
        self._eof = False
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            with self._changed:
                self._lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._eof = True
            self._changed.notify_all()

    @property
    def output(self) -> str:
        with self._changed:
            return "".join(self._lines)

    def lines(self, pattern: str) -> list[re.Match[str]]:
        regex = re.compile(pattern)
        with self._changed:
            return [m for m in map(regex.search, self._lines) if m]

    def wait_for_line(self, pattern: str, timeout: float = START_TIMEOUT) -> re.Match[str]:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                for line in self._lines[seen:]:
                    match = regex.search(line)
                    if match:
                        return match
                seen = len(self._lines)
                if self._eof:
                    raise AssertionError(f"{self.argv} ended (exit {self.popen.wait(5)}) "
                                         f"without printing {pattern!r}:\n{''.join(self._lines)}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no {pattern!r} from {self.argv} within {timeout:g} s:"
                                         f"\n{''.join(self._lines)}")
                self._changed.wait(remaining)

    def wait(self, timeout: float = STOP_TIMEOUT) -> int:
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.argv} still running after {timeout:g} s:\n"
                                 f"{self.output}") from None
        self._reader.join(timeout)
        return code

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        self.popen.send_signal(sig)
        return self.wait(timeout)

    def cleanup(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)
        self._reader.join(10)
        if self.popen.stdout is not None:
            self.popen.stdout.close()


Spawn = Callable[..., Process]


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """``spawn(argv, env)`` → a :class:`Process`, killed at teardown if the test left it."""
    started: list[Process] = []

    def factory(argv: list[str], env: dict[str, str]) -> Process:
        process = Process(argv, env)
        started.append(process)
        return process

    yield factory
    for process in started:
        process.cleanup()


def check_readiness_cycle(http: httpx.Client, server: Any) -> None:
    """/readyz follows the database: 200 → stop → 503 (redacted) → start → 200 again."""
    ready = http.get("/readyz")
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["connected"] is True
    assert body["error"] is None
    assert body["pool_stats"]["max_size"] == 20  # the production preset
    assert http.get("/numbers/3").json() == [
        {"n": 1, "square": 1}, {"n": 2, "square": 4}, {"n": 3, "square": 9}
    ]

    server.stop()
    down = http.get("/readyz")
    assert down.status_code == 503, down.text
    assert down.json()["connected"] is False
    assert down.json()["error"]
    assert server.password not in down.text
    failed_query = http.get("/numbers/1")
    assert failed_query.status_code >= 500
    assert server.password not in failed_query.text
    assert http.get("/healthz").status_code == 200  # liveness does not follow the database

    server.start()
    wait_until(lambda: http.get("/readyz").status_code == 200, "/readyz to answer 200 again")
    assert http.get("/numbers/1").json() == [{"n": 1, "square": 1}]


# -- FastAPI ---------------------------------------------------------------------------------


def uvicorn_argv() -> list[str]:
    # --port 0: the kernel picks a free port and uvicorn's "running on" line names it, so
    # there is no race between choosing a port and binding it.
    return [sys.executable, "-m", "uvicorn", "--app-dir", str(EXAMPLES), "fastapi_app:app",
            "--host", "127.0.0.1", "--port", "0"]


@pytest.mark.parametrize("backend", ASYNC_BACKENDS)
def test_fastapi_app_under_uvicorn(own_server: Any, spawn: Spawn, backend: str) -> None:
    """Lifespan connects, /readyz follows the database, SIGTERM leaves no session behind."""
    name = f"example-fastapi-{backend}"
    app = spawn(uvicorn_argv(), example_env(app_dsn(own_server, name), backend))
    base_url = app.wait_for_line(r"Uvicorn running on (http://\S+)").group(1)
    # The lifespan connected before uvicorn accepted anything: the preset's min_size is open.
    assert own_server.pg_stat_activity_count(name) >= 1

    with httpx.Client(base_url=base_url, timeout=10.0) as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        assert http.get("/numbers/0").status_code == 422  # validated before any borrow
        check_readiness_cycle(http, own_server)

    # The pool may log tracebacks of failed reconnects during the outage; the shutdown must not.
    before = len(app.output)
    # uvicorn shuts down gracefully, then re-raises the signal it caught so that a process
    # manager sees how it ended: "killed by SIGTERM" after a clean shutdown is the success.
    assert app.stop(signal.SIGTERM) in (0, -signal.SIGTERM), app.output
    shutdown_log = app.output[before:]
    assert "Application shutdown complete" in shutdown_log
    assert "Finished server process" in shutdown_log
    assert "Traceback" not in shutdown_log
    wait_until(lambda: own_server.pg_stat_activity_count(name) == 0,
               "the app's sessions to end on the server", timeout=10.0)


def test_fastapi_app_refuses_to_start_without_database(spawn: Spawn) -> None:
    """An unreachable database at start-up stops uvicorn with a non-zero exit."""
    password = "startup-secret-pw"
    app = spawn(uvicorn_argv(), example_env(closed_port_dsn(password), ASYNC_BACKENDS[0]))
    code = app.wait()
    assert code != 0
    assert "Application startup failed" in app.output
    assert "could not connect" in app.output
    assert password not in app.output


@pytest.mark.parametrize("backend", ASYNC_BACKENDS)
async def test_fastapi_app_in_process(pg_server: ServerInfo, backend: str) -> None:
    """The same app in-process: its lifespan entered directly, requests through httpx's ASGI
    transport (Starlette's TestClient warns, with this starlette, that it wants httpx2)."""
    module = load_example("fastapi_app")
    app = module.create_app(test_pool_config(dsn=pg_server.dsn, backend=backend))
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://example") as client,
    ):
        assert app.state.manager.backend_name == backend
        ready = await client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["connected"] is True
        numbers = await client.get("/numbers/2")
        assert numbers.json() == [{"n": 1, "square": 1}, {"n": 2, "square": 4}]
        assert (await client.get("/numbers/1001")).status_code == 422
    assert not app.state.manager.is_initialized()  # the lifespan's shutdown disconnected it


# -- Flask (WSGI) ----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", SYNC_BACKENDS)
def test_wsgi_app_under_werkzeug(own_server: Any, spawn: Spawn, backend: str) -> None:
    """Lazy connect on first use, /readyz follows the database, SIGTERM runs the atexit
    disconnect and leaves no session behind."""
    name = f"example-wsgi-{backend}"
    env = example_env(app_dsn(own_server, name), backend, PORT="0")
    app = spawn([sys.executable, str(EXAMPLES / "wsgi_app.py")], env)
    base_url = app.wait_for_line(r"serving on (http://\S+)").group(1)

    with httpx.Client(base_url=base_url, timeout=10.0) as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        # Liveness needs no pool, and the pool is opened on first use, not at import.
        assert own_server.pg_stat_activity_count(name) == 0
        check_readiness_cycle(http, own_server)
    assert own_server.pg_stat_activity_count(name) >= 1

    before = len(app.output)
    assert app.stop(signal.SIGTERM) == 0, app.output
    shutdown_log = app.output[before:]
    assert "PostgreSQL connection pool closed" in shutdown_log  # by the atexit hook
    assert "Traceback" not in shutdown_log
    wait_until(lambda: own_server.pg_stat_activity_count(name) == 0,
               "the app's sessions to end on the server", timeout=10.0)


@pytest.mark.parametrize("backend", SYNC_BACKENDS)
def test_wsgi_app_database_down_at_first_request(own_server: Any, backend: str) -> None:
    """The first request finds the database down: 503 with the reason; then it recovers."""
    module = load_example("wsgi_app")
    app = module.create_app(test_pool_config(dsn=own_server.dsn(), backend=backend,
                                             connect_timeout=2.0))
    manager: pgconnector.ConnectionManager = app.extensions["pgconnector"]
    client = app.test_client()
    own_server.stop()
    try:
        down = client.get("/readyz")
        assert down.status_code == 503
        assert down.get_json()["connected"] is False
        assert "could not connect" in down.get_json()["error"]
        assert own_server.password not in down.get_data(as_text=True)
        query = client.get("/numbers/1")
        assert query.status_code == 503
        assert own_server.password not in query.get_data(as_text=True)

        own_server.start()
        ready = client.get("/readyz")  # connect() is retried by the next request
        assert ready.status_code == 200, ready.get_data(as_text=True)
        assert client.get("/numbers/1").get_json() == [{"n": 1, "square": 1}]
    finally:
        manager.disconnect()


@pytest.mark.parametrize("backend", ASYNC_ONLY_BACKENDS)
def test_wsgi_app_refuses_async_only_backend(backend: str) -> None:
    module = load_example("wsgi_app")
    config = PoolConfig.from_dsn("postgresql://app@127.0.0.1:1/app", backend=backend)
    with pytest.raises(pgconnector.UnsupportedBackendError, match=backend):
        module.create_app(config)


# -- worker ----------------------------------------------------------------------------------


def seed_jobs(server: Any, count: int) -> None:
    schema = load_example("worker").SCHEMA
    server.admin_execute(
        f"{schema};\nINSERT INTO jobs (payload) "
        f"SELECT json_build_object('n', i) FROM generate_series(1, {count}) AS i"
    )


def job_rows(server: Any) -> list[tuple[int, str, int]]:
    out = server.admin_execute("SELECT id, status, attempts FROM jobs ORDER BY id")
    rows = []
    for line in out.splitlines():
        job_id, status, attempts = line.split("|")
        rows.append((int(job_id), status, int(attempts)))
    return rows


def worker_argv(*args: str) -> list[str]:
    return [sys.executable, str(EXAMPLES / "worker.py"), *args]


def processed_ids(process: Process) -> list[int]:
    return [int(m.group(1)) for m in process.lines(r"processed job (\d+)")]


@pytest.mark.parametrize("backend", ASYNC_BACKENDS)
def test_two_workers_drain_the_queue_exactly_once(
    own_server: Any, spawn: Spawn, backend: str
) -> None:
    """Two workers at once, until the queue is empty: every job done once, none twice."""
    jobs = 60
    seed_jobs(own_server, jobs)
    name = f"example-worker-{backend}"
    env = example_env(app_dsn(own_server, name), backend)
    workers = [spawn(worker_argv("--exit-when-empty", "--work-seconds", "0.01"), env)
               for _ in range(2)]
    for worker in workers:
        assert worker.wait(60) == 0, worker.output
        assert "(queue empty)" in worker.output

    done_by = [processed_ids(w) for w in workers]
    every = done_by[0] + done_by[1]
    assert sorted(every) == list(range(1, jobs + 1)), done_by  # each exactly once
    assert job_rows(own_server) == [(i, "done", 1) for i in range(1, jobs + 1)]
    wait_until(lambda: own_server.pg_stat_activity_count(name) == 0,
               "the workers' sessions to end on the server", timeout=10.0)


def test_worker_stops_after_max_jobs(own_server: Any, spawn: Spawn) -> None:
    seed_jobs(own_server, 10)
    env = example_env(own_server.dsn(), ASYNC_BACKENDS[0])
    worker = spawn(worker_argv("--max-jobs", "4"), env)
    assert worker.wait() == 0, worker.output
    assert "(--max-jobs 4)" in worker.output
    assert processed_ids(worker) == [1, 2, 3, 4]
    assert [status for _, status, _ in job_rows(own_server)] == ["done"] * 4 + ["queued"] * 6


@pytest.mark.parametrize("backend", ASYNC_BACKENDS)
def test_worker_sigterm_finishes_the_current_job(
    own_server: Any, spawn: Spawn, backend: str
) -> None:
    """SIGTERM mid-job: the job commits, no other is started, exit 0, no session left."""
    jobs = 30
    seed_jobs(own_server, jobs)
    name = f"example-worker-term-{backend}"
    env = example_env(app_dsn(own_server, name), backend)
    # Half a second of work per job, so the signal lands while a job is being handled.
    worker = spawn(worker_argv("--work-seconds", "0.5"), env)
    in_progress = int(worker.wait_for_line(r"claimed job (\d+)").group(1))
    assert worker.stop(signal.SIGTERM) == 0, worker.output
    assert "(signal)" in worker.output

    claimed = [int(m.group(1)) for m in worker.lines(r"claimed job (\d+)")]
    processed = processed_ids(worker)
    assert in_progress in processed
    assert processed == claimed  # nothing claimed and abandoned
    assert len(processed) < jobs
    rows = job_rows(own_server)
    assert [r for r in rows if r[1] == "done"] == [(i, "done", 1) for i in processed]
    assert all(r == (r[0], "queued", 0) for r in rows if r[0] not in processed)
    wait_until(lambda: own_server.pg_stat_activity_count(name) == 0,
               "the worker's sessions to end on the server", timeout=10.0)


@pytest.mark.parametrize("backend", ASYNC_BACKENDS)
def test_worker_exits_nonzero_when_database_unreachable(spawn: Spawn, backend: str) -> None:
    password = "worker-secret-pw"
    worker = spawn(worker_argv(), example_env(closed_port_dsn(password), backend))
    assert worker.wait() == 1
    assert "worker: cannot reach the database: could not connect" in worker.output
    assert password not in worker.output
