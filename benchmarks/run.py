"""pgconnector against the pools people would use instead, in one run on one server.

    .venv/bin/python benchmarks/run.py             # the full run, about 8 minutes
    .venv/bin/python benchmarks/run.py --smoke     # every measure, tiny, well under a minute

The script pins itself to one CPU before it starts its PostgreSQL server, which inherits the
pinning, so that client and server share that CPU (see benchmarks/README.md for why). Every
subject (see ``_subjects.py``) runs in this one process against this one server, and the
repetitions are interleaved: each round runs every subject once, in a rotated order, so that
a drift of the machine weighs on all of them alike. Medians of the rounds are reported.

It writes ``latest.json``, ``latest.md`` and ``latest.png`` into ``benchmarks/results/`` (or
``--out``), and with ``--results-md`` also ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

import _copy
import _cursor
import _executemany
import _listen
import _measure as m
import _report
import _subjects as s
import _timeouts

from pgconnector._embedded import EmbeddedServer

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Plan:
    """How long and how often; the defaults make the full run about 8 minutes."""

    reps: int = 5  # interleaved rounds for cycle, select1 and health
    warmup_s: float = 0.1  # untimed run of the same work before every timed window
    cycle_s: float = 0.5
    select1_s: float = 0.5  # pgbench runs whole seconds: max(1, round(select1_s))
    health_s: float = 0.3
    concurrency: tuple[int, ...] = (1, 4, 16, 64)
    pool_size: int = 10
    contention_workers: int = 200
    contention_cycles: int = 50
    contention_reps: int = 3
    cold_min_size: int = 10
    cold_reps: int = 5
    scaling_sizes: tuple[int, ...] = (1, 10, 50, 200)
    scaling_waiters: tuple[int, ...] = (1, 10, 100, 1000)
    scaling_cycles: int = 20_000  # per pool size
    waiter_cycles: int = 10_000  # per number of waiters, shared among them (>= 20 each)
    scaling_reps: int = 3
    audit_ops: int = 50
    listen_notifications: int = 10_000
    listen_reps: int = 3
    copy_rows: int = 1_000_000
    copy_reps: int = 3
    timeout_queries: int = 5_000
    timeout_reps: int = 3
    cursor_rows: int = 1_000_000
    cursor_reps: int = 3
    executemany_rows: int = 10_000
    executemany_reps: int = 3


FULL = Plan()
SMOKE = Plan(reps=1, warmup_s=0.01, cycle_s=0.03, select1_s=0.03, health_s=0.03,
             contention_workers=20, contention_cycles=5, contention_reps=1, cold_reps=1,
             scaling_sizes=(1, 10, 20), scaling_waiters=(1, 10, 100), scaling_cycles=600,
             waiter_cycles=300, scaling_reps=1, audit_ops=10, listen_notifications=200,
             listen_reps=1, timeout_queries=50, timeout_reps=1, cursor_rows=5_000,
             cursor_reps=1, executemany_rows=200, executemany_reps=1, copy_rows=2_000,
             copy_reps=1)

# Connections open at once at the peak: every subject's pool of 10, a scaling pool of 200,
# pgbench's 64 clients, with room to spare.
SERVER_SETTINGS = {"max_connections": "600"}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ plumbing


async def call(subject: Any, name: str, *args: Any) -> Any:
    """Call a sync or async subject's method (not in a timed window)."""
    result = getattr(subject, name)(*args)
    return await result if subject.info.is_async else result


async def warm(subject: Any, name: str, workers: int, duration: float) -> None:
    """Run ``subject.name()`` untimed: caches filled, every connection touched (pgconnector
    pings a connection idle for over a second before handing it out)."""
    op = getattr(subject, name)
    if subject.info.is_async:
        await m.tasks_for(op, workers, duration)
    else:
        m.threads_for(op, workers, duration)


async def run_for(subject: Any, name: str, workers: int, duration: float,
                  warmup: float) -> m.Run:
    """Warm up, then time ``subject.name()`` in ``workers`` threads or tasks."""
    await warm(subject, name, workers, warmup)
    m.settle()
    op = getattr(subject, name)
    if subject.info.is_async:
        return await m.tasks_for(op, workers, duration)
    return m.threads_for(op, workers, duration)


async def run_count(subject: Any, op: Any, workers: int, each: int) -> float:
    """Seconds for ``workers`` threads or tasks to run ``op`` ``each`` times apiece."""
    m.settle()
    if subject.info.is_async:
        return await m.tasks_count(op, workers, each)
    return m.threads_count(op, workers, each)


def rotated(items: Sequence[Any], shift: int) -> list[Any]:
    """``items`` starting at ``shift``: each round starts with another subject."""
    k = shift % len(items) if items else 0
    return [*items[k:], *items[:k]]


def rounds(items: Sequence[Any], reps: int) -> Iterator[tuple[int, Any]]:
    for rep in range(reps):
        for item in rotated(items, rep):
            yield rep, item


def summary(runs: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(runs), "runs": runs}


def with_measure(specs: list[s.Spec], measure: str) -> list[s.Spec]:
    return [spec for spec in specs if measure in spec.info.measures]


# ------------------------------------------------------------------------------ round trips


def count_statements(log_file: Path, offset: int) -> int:
    """Statements the server logged (log_statement = all) after ``offset``: one ``statement:``
    line per simple query, one ``execute`` line per extended-protocol execution."""
    with log_file.open("rb") as fh:
        fh.seek(offset)
        text = fh.read().decode("utf-8", "replace")
    return sum(1 for line in text.splitlines()
               if "LOG:  statement: " in line or "LOG:  execute " in line)


async def audit_round_trips(specs: list[s.Spec], plan: Plan) -> dict[str, dict[str, float]]:
    """Statements per operation of every subject, counted by a side server that logs them all.

    In steady state each statement is one round trip for these subjects (each is sent with
    its own Sync), so equal counts mean equal round trips. The subject warms up first: a
    driver's one-off statement preparation is not what is being compared.
    """
    found: dict[str, dict[str, float]] = {}
    with EmbeddedServer(log_statements=True, settings=SERVER_SETTINGS) as side:
        target = s.Target.of(side)
        for spec in specs:
            subject = spec.make(target)
            if spec.info.kind == "pgbench":
                offset = side.log_file.stat().st_size
                subject.run(1, transactions=plan.audit_ops)
                found[spec.info.key] = {
                    "select1": count_statements(side.log_file, offset) / plan.audit_ops}
                subject.close()
                log(f"round trips {spec.info.key}: {found[spec.info.key]}")
                continue
            await call(subject, "open", 2, 2)
            counts: dict[str, float] = {}
            for name in (s.CYCLE, s.SELECT1, s.HEALTH):
                if name not in spec.info.measures:
                    continue
                op = getattr(subject, name)
                await run_count(subject, op, 1, 20)
                offset = side.log_file.stat().st_size
                await run_count(subject, op, 1, plan.audit_ops)
                counts[name] = count_statements(side.log_file, offset) / plan.audit_ops
            await call(subject, "close")
            found[spec.info.key] = counts
            log(f"round trips {spec.info.key}: {counts}")
    return found


# ------------------------------------------------------------------------------ the measures


async def measure_cold(specs: list[s.Spec], target: s.Target,
                       plan: Plan) -> dict[str, dict[str, Any]]:
    """(d) Build and open a pool with min_size connections; a plain connection for scale.

    The first round is thrown away: it pays for imports and the server's first forks.
    """
    chosen = with_measure(specs, s.COLD)
    firsts: dict[str, list[float]] = {spec.info.key: [] for spec in chosen}
    alls: dict[str, list[float]] = {spec.info.key: [] for spec in chosen}
    for rep, spec in rounds(chosen, plan.cold_reps + 1):
        subject = spec.make(target)
        m.settle()
        opened = await call(subject, "open", plan.cold_min_size, plan.cold_min_size)
        await call(subject, "close")
        if rep:
            firsts[spec.info.key].append(opened.first_s * 1e3)
            alls[spec.info.key].append(opened.all_s * 1e3)
    return {
        key: {"first_ms": statistics.median(firsts[key]), "all_ms": statistics.median(alls[key]),
              "first_runs_ms": firsts[key], "all_runs_ms": alls[key]}
        for key in firsts
    }


async def measure_cycle(specs: list[s.Spec], subjects: dict[str, Any],
                        plan: Plan) -> dict[str, Any]:
    """(a) Borrow and give back, no query, one worker: µs per cycle."""
    runs: dict[str, list[float]] = {spec.info.key: [] for spec in with_measure(specs, s.CYCLE)}
    for _, spec in rounds(with_measure(specs, s.CYCLE), plan.reps):
        run = await run_for(subjects[spec.info.key], "cycle", 1, plan.cycle_s, plan.warmup_s)
        runs[spec.info.key].append(run.micros_per_op)
    return {key: summary(values) for key, values in runs.items()}


async def measure_select1(specs: list[s.Spec], subjects: dict[str, Any],
                          plan: Plan) -> dict[str, Any]:
    """(b) Queries per second at each concurrency, pool max_size = plan.pool_size.

    A plain connection runs at one worker only: asyncpg's and pg8000's connections cannot be
    shared by concurrent workers, and one per worker would be a different pool size.
    """
    chosen = with_measure(specs, s.SELECT1)
    runs: dict[str, dict[str, list[float]]] = {spec.info.key: {} for spec in chosen}
    seconds = max(1, round(plan.select1_s))
    for rep in range(plan.reps):
        for workers in plan.concurrency:
            for spec in rotated(chosen, rep):
                key, subject = spec.info.key, subjects[spec.info.key]
                if spec.info.kind == "connection" and workers > 1:
                    continue
                if spec.info.kind == "pgbench":
                    qps = subject.run(workers, seconds=seconds)
                else:
                    run = await run_for(subject, "select1", workers, plan.select1_s,
                                        plan.warmup_s)
                    qps = run.per_second
                runs[key].setdefault(str(workers), []).append(qps)
        log(f"select1: round {rep + 1}/{plan.reps} done")
    return {key: {c: summary(v) for c, v in points.items()} for key, points in runs.items()}


async def measure_health(specs: list[s.Spec], subjects: dict[str, Any],
                         plan: Plan) -> dict[str, Any]:
    """(e) health_check() for pgconnector, SELECT 1 through the pool for the others: µs."""
    chosen = with_measure(specs, s.HEALTH)
    runs: dict[str, list[float]] = {spec.info.key: [] for spec in chosen}
    for _, spec in rounds(chosen, plan.reps):
        run = await run_for(subjects[spec.info.key], "health", 1, plan.health_s, plan.warmup_s)
        runs[spec.info.key].append(run.micros_per_op)
    return {key: summary(values) for key, values in runs.items()}


async def measure_contention(specs: list[s.Spec], subjects: dict[str, Any],
                             plan: Plan) -> dict[str, Any]:
    """(c) Many workers on a small pool, each cycle holding the connection for a SELECT 1:
    total time, and percentiles of how long each borrow waited."""
    chosen = with_measure(specs, s.CONTENTION)
    runs: dict[str, list[dict[str, float]]] = {spec.info.key: [] for spec in chosen}
    for _, spec in rounds(chosen, plan.contention_reps):
        subject = subjects[spec.info.key]
        await warm(subject, "select1", plan.pool_size, plan.warmup_s)
        waits: list[float] = []
        total = await run_count(subject, partial(subject.held_cycle, waits),
                                plan.contention_workers, plan.contention_cycles)
        runs[spec.info.key].append({
            "total_s": total,
            "p50_ms": m.percentile(waits, 0.50) * 1e3,
            "p99_ms": m.percentile(waits, 0.99) * 1e3,
            "max_ms": max(waits) * 1e3,
        })
    return {
        key: {**{field: statistics.median(r[field] for r in values) for field in values[0]},
              "runs": values}
        for key, values in runs.items()
    }


async def measure_pool_sizes(specs: list[s.Spec], subjects: dict[str, Any], target: s.Target,
                             plan: Plan) -> dict[str, Any]:
    """(f) µs per cycle (one worker) with pools of each size, min_size = max_size. A fresh
    pool per point, except the main pool at its own size."""
    chosen = with_measure(specs, s.SCALING)
    runs: dict[str, dict[str, list[float]]] = {spec.info.key: {} for spec in chosen}
    for rep in range(plan.scaling_reps):
        for size in plan.scaling_sizes:
            for spec in rotated(chosen, rep):
                fresh = size != plan.pool_size
                subject = spec.make(target) if fresh else subjects[spec.info.key]
                if fresh:
                    await call(subject, "open", size, size)
                # Warm every connection (a FIFO pool hands each out in turn).
                await run_count(subject, subject.cycle, 1, max(2 * size, 200))
                elapsed = await run_count(subject, subject.cycle, 1, plan.scaling_cycles)
                if fresh:
                    await call(subject, "close")
                per_op = elapsed / plan.scaling_cycles * 1e6
                runs[spec.info.key].setdefault(str(size), []).append(per_op)
        log(f"scaling by pool size: round {rep + 1}/{plan.scaling_reps} done")
    return {key: {n: summary(v) for n, v in points.items()} for key, points in runs.items()}


async def measure_waiters(specs: list[s.Spec], subjects: dict[str, Any],
                          plan: Plan) -> dict[str, Any]:
    """(f) µs per operation as more workers share the main pool: total time / total cycles.

    Here a cycle holds its connection for a ``SELECT 1``. With nothing to wait for while
    holding, a thread keeps the GIL and a task never yields, so no one would ever queue: the
    hold is what makes 100 or 1000 workers wait on 10 connections, and the waiting is what
    this measures (a hand-off that wakes every waiter would grow with their number).
    """
    chosen = with_measure(specs, s.SCALING)
    runs: dict[str, dict[str, list[float]]] = {spec.info.key: {} for spec in chosen}
    for rep in range(plan.scaling_reps):
        for waiters in plan.scaling_waiters:
            # At least 20 cycles per worker: waking a thread and ending it is not the pool's cost.
            each = max(20, plan.waiter_cycles // waiters)
            for spec in rotated(chosen, rep):
                subject = subjects[spec.info.key]
                await warm(subject, "select1", plan.pool_size, plan.warmup_s)
                elapsed = await run_count(subject, subject.select1, waiters, each)
                per_op = elapsed / (each * waiters) * 1e6
                runs[spec.info.key].setdefault(str(waiters), []).append(per_op)
        log(f"scaling by waiters: round {rep + 1}/{plan.scaling_reps} done")
    return {key: {n: summary(v) for n, v in points.items()} for key, points in runs.items()}


# ------------------------------------------------------------------------------ the run


async def open_main(specs: list[s.Spec], target: s.Target, plan: Plan) -> dict[str, Any]:
    """Every subject's long-lived pool (min_size = max_size = pool_size), open all run long so
    that no measure pays for opening one."""
    subjects: dict[str, Any] = {}
    try:
        for spec in specs:
            subject = spec.make(target)
            if spec.info.kind != "pgbench":
                await call(subject, "open", plan.pool_size, plan.pool_size)
            subjects[spec.info.key] = subject
    except BaseException:
        await close_all(subjects)
        raise
    return subjects


async def close_all(subjects: dict[str, Any]) -> None:
    for subject in subjects.values():
        try:
            await call(subject, "close")
        except Exception as exc:  # the results matter more than a failed goodbye
            log(f"closing {subject.info.key} failed: {exc!r}")


async def run_all(plan: Plan, specs: list[s.Spec], meta: dict[str, Any]) -> dict[str, Any]:
    results: dict[str, Any] = {"meta": meta, "plan": asdict(plan)}
    log("counting round trips on a side server with log_statement = all")
    results["round_trips"] = await audit_round_trips(specs, plan)
    with EmbeddedServer(settings=SERVER_SETTINGS) as server:
        meta.update(server_facts(server))
        target = s.Target.of(server)
        log("(d) cold start")
        results["cold_start"] = await measure_cold(specs, target, plan)
        subjects = await open_main(specs, target, plan)
        try:
            log("(a) cycle")
            results["cycle_us"] = await measure_cycle(specs, subjects, plan)
            log("(b) select1")
            results["select1_qps"] = await measure_select1(specs, subjects, plan)
            log("(e) health")
            results["health_us"] = await measure_health(specs, subjects, plan)
            log("(c) contention")
            results["contention"] = await measure_contention(specs, subjects, plan)
            log("(f) scaling by pool size")
            results["scaling_pool_size_us"] = await measure_pool_sizes(specs, subjects, target,
                                                                       plan)
            log("(f) scaling by waiters")
            results["scaling_waiters_us"] = await measure_waiters(specs, subjects, plan)
            log("(g) LISTEN / NOTIFY")
            results["listen"] = await _listen.measure_listen(
                target.dsn, plan.listen_notifications, plan.listen_reps
            )
            log("(h) statement timeouts")
            results["timeouts"] = await _timeouts.measure_timeouts(
                target.dsn, plan.timeout_queries, plan.timeout_reps
            )
            log("(i) streaming cursor")
            results["cursor"] = await _cursor.measure_cursor(
                target.dsn, plan.cursor_rows, plan.cursor_reps
            )
            log("(j) executemany")
            results["executemany"] = await _executemany.measure_executemany(
                target.dsn, plan.executemany_rows, plan.executemany_reps
            )
            log("(k) COPY")
            results["copy"] = await _copy.measure_copy(target.dsn, plan.copy_rows,
                                                       plan.copy_reps)
        finally:
            await close_all(subjects)
    return results


# ------------------------------------------------------------------------------ facts


def pin(cpu: int | None, no_pin: bool) -> list[int]:
    """Pin this process to one CPU, before any thread or server exists (both inherit it)."""
    if not no_pin:
        allowed = sorted(os.sched_getaffinity(0))
        chosen = allowed[0] if cpu is None else cpu
        os.sched_setaffinity(0, {chosen})
    return sorted(os.sched_getaffinity(0))


def machine_facts() -> dict[str, Any]:
    cpu_model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    packages: dict[str, str | None] = {}
    for name in ("pgconnector", "pgconnector-psycopg", "pgconnector-asyncpg",
                 "pgconnector-pg8000", "psycopg", "psycopg-binary", "psycopg-pool", "asyncpg",
                 "pg8000", "SQLAlchemy", "matplotlib"):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    return {
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "kernel": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "packages": packages,
    }


def server_facts(server: EmbeddedServer) -> dict[str, Any]:
    """The server's version and the CPUs its postmaster may use (inherited from us)."""
    pid = int((server.data_dir / "postmaster.pid").read_text().split()[0])
    pgbench = subprocess.run([str(server.bin_dir / "pgbench"), "--version"],
                             capture_output=True, text=True, check=False).stdout.strip()
    return {
        "postgresql": server.admin_execute("SHOW server_version"),
        "pgbench": pgbench,
        "server_cpus": sorted(os.sched_getaffinity(pid)),
    }


# ------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--smoke", action="store_true",
                        help="tiny durations and repetitions: checks the runner, not speed")
    parser.add_argument("--out", type=Path, default=HERE / "results",
                        help="directory for latest.json/.md/.png (default: benchmarks/results)")
    parser.add_argument("--cpu", type=int, default=None,
                        help="CPU to pin to (default: the first this process may use)")
    parser.add_argument("--no-pin", action="store_true",
                        help="do not pin (numbers then vary by up to 55%%: quote ranges)")
    parser.add_argument("--reps", type=int, default=None,
                        help="rounds for cycle, select1 and health (default 5; smoke 1)")
    parser.add_argument("--results-md", action="store_true",
                        help="also write benchmarks/RESULTS.md (machine facts, command)")
    parser.add_argument("--render", type=Path, metavar="JSON",
                        help="measure nothing: write the report (.md, .png) of a saved run")
    return parser.parse_args(argv)


def write_report(results: dict[str, Any], out: Path, results_md: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    markdown = _report.markdown(results)
    (out / "latest.md").write_text(markdown)
    _report.chart(results, out / "latest.png")
    if results_md:
        # The committed record of a full run; results/ holds whatever ran last.
        (HERE / "RESULTS.md").write_text(_report.results_page(results, markdown, "RESULTS.png"))
        (HERE / "RESULTS.png").write_bytes((out / "latest.png").read_bytes())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        saved = json.loads(args.render.read_text())
        saved["targets"] = _report.evaluate_targets(saved)  # with this version's rules
        write_report(saved, args.out, args.results_md)
        return 0
    cpus = pin(args.cpu, args.no_pin)  # first of all: the server must inherit it
    plan = SMOKE if args.smoke else FULL
    if args.reps is not None:
        plan = replace(plan, reps=args.reps)
    specs, skipped = s.available_specs()
    for note in skipped:
        log(f"skipped: {note}")
    started = time.perf_counter()
    meta: dict[str, Any] = {
        **machine_facts(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join([os.path.relpath(sys.executable), *sys.argv]),
        "pinned": not args.no_pin,
        "client_cpus": cpus,
        "smoke": args.smoke,
        "skipped": skipped,
        "subjects": {
            spec.info.key: {"label": spec.info.label, "family": spec.info.family,
                            "kind": spec.info.kind, "is_async": spec.info.is_async,
                            "default_mode": spec.info.default_mode,
                            "measures": sorted(spec.info.measures)}
            for spec in specs
        },
        "references": s.REFERENCES,
        "one_connection": s.ONE_CONNECTION,
    }
    results = asyncio.run(run_all(plan, specs, meta))
    meta["wall_s"] = time.perf_counter() - started
    results["targets"] = _report.evaluate_targets(results)
    args.out.mkdir(parents=True, exist_ok=True)
    # The numbers first: a failing report can be redone with --render.
    (args.out / "latest.json").write_text(json.dumps(results, indent=1) + "\n")
    write_report(results, args.out, args.results_md)
    log(f"done in {meta['wall_s']:.0f} s: {args.out / 'latest.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
