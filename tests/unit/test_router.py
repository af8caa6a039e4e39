"""The read/write router's decisions, without a server: arguments and the routing state."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from pgconnector import AsyncReadWriteRouter, ConfigError, ReadWriteRouter
from pgconnector._router_base import ReadTarget, ReplicaRouting
from pgconnector._stats import PoolStats

PRIMARY = "postgresql://app:s3cret-primary@127.0.0.1:1/app"
REPLICA = "postgresql://app:s3cret-replica@127.0.0.1:2/app"


@pytest.mark.parametrize("cls", [ReadWriteRouter, AsyncReadWriteRouter])
@pytest.mark.parametrize("interval", [-1.0, float("nan"), float("inf"), "5", True, None])
def test_retry_interval_is_checked(cls: Any, interval: Any) -> None:
    with pytest.raises(ConfigError) as info:
        cls(PRIMARY, REPLICA, replica_retry_interval=interval)
    assert info.value.field == "replica_retry_interval"


@pytest.mark.parametrize("cls", [ReadWriteRouter, AsyncReadWriteRouter])
def test_construction_does_no_io_and_shows_no_password(cls: Any) -> None:
    router = cls(PRIMARY, REPLICA, replica_retry_interval=0)
    assert "not connected" in repr(router)
    assert "s3cret" not in repr(router)
    stats = router.get_pool_stats()
    assert (stats.replica_reads, stats.fallback_reads, stats.replica_serving) == (0, 0, False)
    assert stats.primary == router.primary.get_pool_stats()
    assert router.replica.config.dsn == REPLICA


def routing(interval: float) -> ReplicaRouting:
    return ReplicaRouting(interval, logging.getLogger("pgconnector.test"), "replica-dsn")


def messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level]


def test_serving_replica_gets_every_read() -> None:
    state = routing(3600)
    state.connected()
    assert [state.choose() for _ in range(3)] == [ReadTarget.REPLICA] * 3


def test_one_probe_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pgconnector.test")
    state = routing(3600)
    state.connected()
    state.replica_failed("boom")
    state.replica_failed("boom again")  # a second borrower failing at the same moment
    assert len(messages(caplog, logging.WARNING)) == 1
    assert state.serving is False and state.last_error == "boom again"
    assert [state.choose() for _ in range(3)] == [ReadTarget.PRIMARY] * 3

    due = routing(0)
    due.replica_failed("down at connect", at_connect=True)
    assert due.choose() is ReadTarget.PROBE


def test_only_a_probe_brings_the_replica_back(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pgconnector.test")
    state = routing(3600)
    state.reset()  # nothing known: the first read finds out, the others do not wait for it
    assert state.choose() is ReadTarget.PROBE
    assert state.choose() is ReadTarget.PRIMARY
    # A borrow that began before the replica was marked down proves nothing.
    state.replica_served(ReadTarget.REPLICA)
    assert state.serving is False
    state.replica_served(ReadTarget.PROBE)
    assert state.serving is True
    state.replica_served(ReadTarget.PROBE)
    assert messages(caplog, logging.INFO) == [
        "Read replica replica-dsn is serving again; reads go back to it"
    ]
    state.fallback_served()
    stats = state.stats(PoolStats(), PoolStats())
    assert (stats.replica_reads, stats.fallback_reads, stats.replica_serving) == (3, 1, True)
