"""Pure core logic: rows, stats arithmetic, events, errors, the generated sync twins."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest

import pgconnector
from pgconnector import PoolEvent, PoolStats, Row
from pgconnector._row import make_rows
from pgconnector._stats import PoolMonitor

ROOT = Path(__file__).resolve().parents[2]


class ListLogger:
    def __init__(self) -> None:
        self.records: list[tuple[str, str]] = []

    def _log(self, level: str, msg: str, *args: object, **kwargs: object) -> None:
        self.records.append((level, msg % args if args else msg))

    def debug(self, msg: str, *args: object, **kwargs: object) -> None:
        self._log("debug", msg, *args)

    def info(self, msg: str, *args: object, **kwargs: object) -> None:
        self._log("info", msg, *args)

    def warning(self, msg: str, *args: object, **kwargs: object) -> None:
        self._log("warning", msg, *args)

    def error(self, msg: str, *args: object, **kwargs: object) -> None:
        self._log("error", msg, *args)


def test_row_access() -> None:
    rows = make_rows(["id", "name", "id"], [(1, "a", 9), (2, "b", 8)])
    row = rows[0]
    assert isinstance(row, Row)
    assert row[0] == 1
    assert row[-1] == 9
    assert row["name"] == "a"
    assert row["id"] == 1  # the first of a duplicated name
    assert list(row) == [1, "a", 9]
    assert len(row) == 3
    assert list(row.keys()) == ["id", "name"]
    assert dict(row) == {"id": 1, "name": "a"}
    assert row == (1, "a", 9)
    assert row[1:] == ("a", 9)
    assert row.get("missing", 5) == 5
    assert repr(rows[1]) == "Row(id=2, name='b')"
    with pytest.raises(KeyError, match="no column 'nope'"):
        row["nope"]


def test_monitor_arithmetic() -> None:
    log = ListLogger()
    mon = PoolMonitor("fake", 1, 4, log)
    gen = mon.generation()
    a = gen.connection_opened()
    b = gen.connection_opened()
    assert (a, b) == (1, 2)
    gen.wait_started()
    assert mon.snapshot(gen).waiting == 1
    gen.acquired()
    gen.wait_started()
    gen.wait_timed_out()
    s = mon.snapshot(gen)
    assert (s.total, s.idle, s.in_use, s.waiting, s.acquires, s.timeouts) == (2, 1, 1, 0, 1, 1)
    gen.connection_closed(b, "idle")
    s = mon.snapshot(gen)
    assert (s.total, s.idle, s.connections_opened, s.connections_closed) == (1, 0, 2, 1)
    assert mon.snapshot() == PoolStats(
        min_size=1, max_size=4, acquires=1, timeouts=1, connections_opened=2,
        connections_closed=1,
    )


def test_generations_count_apart() -> None:
    """A borrow and a connection that outlive their pool (disconnect() with borrowers still
    running) are counted out in their own generation: the next one's gauges never go below
    zero, and the old one's return to zero; the counters span both."""
    mon = PoolMonitor("fake", 1, 4, ListLogger())
    old = mon.generation()
    cid = old.connection_opened()
    old.wait_started()
    old.acquired()
    old.wait_started()  # still waiting when the pool closes
    new = mon.generation()
    new_cid = new.connection_opened()
    assert (mon.snapshot(new).total, mon.snapshot(new).in_use) == (1, 0)
    old.released()
    old.wait_failed()
    old.connection_closed(cid, "pool closed")
    s = mon.snapshot(new)
    assert (s.total, s.idle, s.in_use, s.waiting) == (1, 1, 0, 0)
    assert (s.acquires, s.connections_opened, s.connections_closed) == (1, 2, 1)
    s = mon.snapshot(old)
    assert (s.total, s.idle, s.in_use, s.waiting) == (0, 0, 0, 0)
    new.connection_closed(new_cid, "pool closed")
    assert mon.snapshot().connections_closed == 2


def test_events_and_raising_listener() -> None:
    log = ListLogger()
    mon = PoolMonitor("fake", 0, 2, log, secrets=("hunter2",))
    seen: list[PoolEvent] = []
    mon.add_listener("connect", seen.append)
    mon.add_listener("error", seen.append)

    def boom(event: PoolEvent) -> None:
        raise RuntimeError("listener saw hunter2")

    mon.add_listener("remove", boom)
    gen = mon.generation()
    cid = gen.connection_opened()
    gen.connection_closed(cid, "idle")
    assert [e.name for e in seen] == ["connect", "error"]
    assert seen[0].connection_id == cid
    assert isinstance(seen[1].error, RuntimeError)
    assert log.records and log.records[0][0] == "error"
    assert "hunter2" not in log.records[0][1]
    with pytest.raises(pgconnector.ConfigError, match="unknown pool event"):
        mon.add_listener("nope", seen.append)
    mon.remove_listener("connect", seen.append)
    gen.connection_opened()
    assert [e.name for e in seen] == ["connect", "error"]


def test_setup_pool_listeners_messages() -> None:
    log = ListLogger()

    class Target:
        def __init__(self) -> None:
            self.mon = PoolMonitor("fake", 0, 2, log)

        def add_listener(self, event: str, cb: object) -> None:
            self.mon.add_listener(event, cb)  # type: ignore[arg-type]

    t = Target()
    pgconnector.setup_pool_listeners(t, log)  # type: ignore[arg-type]
    gen = t.mon.generation()
    cid = gen.connection_opened()
    t.mon.emit("acquire", cid)
    t.mon.emit("release", cid)
    gen.connection_closed(cid, "idle")
    gen.connection_failed(OSError("refused"))
    assert log.records == [
        ("debug", "New client connected to pool"),
        ("debug", "Client acquired from pool"),
        ("debug", "Client released back to pool"),
        ("debug", "Client removed from pool"),
        ("error", "PostgreSQL pool error"),
    ]


def test_error_hierarchy() -> None:
    import builtins

    err = pgconnector.PoolTimeoutError("slow", cause=None)
    assert isinstance(err, pgconnector.ConnectionError)
    assert isinstance(err, builtins.ConnectionError)
    assert isinstance(err, TimeoutError)
    assert isinstance(err, pgconnector.PgConnectorError)
    assert err.cause is None
    cause = OSError("refused")
    wrapped = pgconnector.ConnectionError("no", cause)
    assert wrapped.cause is cause and wrapped.__cause__ is cause
    copy = pickle.loads(pickle.dumps(wrapped))
    assert str(copy) == "no" and isinstance(copy.cause, OSError)
    assert issubclass(pgconnector.BackendNotFoundError, pgconnector.ConfigError)
    assert issubclass(pgconnector.ConfigError, ValueError)
    assert pgconnector.ConnectionError.__module__ == "pgconnector"


def test_sync_twins_are_up_to_date() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "unasync.py"), "--check"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
