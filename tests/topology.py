"""Replication topologies for failover tests: a real primary and a streaming hot standby.

* ``replication``: a primary and a *synchronous* standby (a commit on the primary returns only
  once the standby has it), both started, removed after the test.
* ``replication_factory``: ``replication_factory(synchronous=False, ...)`` makes a pair with the
  options the test chooses (``synchronous`` is required); every pair made is removed after the
  test.

Both servers come from :class:`pgconnector._embedded.EmbeddedServer` (the standby is a
``pg_basebackup`` copy of the primary, same user, password and database); tests are skipped
when no PostgreSQL binaries are installed. A typical failover::

    def test_failover(replication: Replication) -> None:
        replication.primary.admin_execute("CREATE TABLE t (x int)")
        replication.failover()            # stop the primary (fast), promote the standby
        replication.standby.admin_execute("INSERT INTO t VALUES (1)")
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

import pytest

from pgconnector._embedded import EmbeddedServer, EmbeddedServerError, StopMode, find_bin_dir


@dataclass
class Replication:
    """A primary and its streaming standby, both started."""

    primary: EmbeddedServer
    standby: EmbeddedServer
    synchronous: bool
    #: Wall-clock seconds it took to create and start both servers.
    setup_seconds: float

    def wait_replayed(self, timeout: float = 10.0) -> None:
        """Wait until the standby has replayed everything the primary has done so far."""
        self.primary.wait_for_standby_replay(self.standby, timeout=timeout)

    def failover(self, mode: StopMode = "fast", timeout: float = 30.0) -> None:
        """Stop the primary (with *mode*) and promote the standby."""
        self.primary.stop(mode)
        self.standby.promote(timeout=timeout)

    def cleanup(self) -> None:
        # The standby first: with synchronous replication, commits the primary still runs
        # would otherwise wait for it until the primary is stopped.
        try:
            self.standby.cleanup()
        finally:
            self.primary.cleanup()


class ReplicationFactory(Protocol):
    def __call__(
        self,
        *,
        synchronous: bool,
        primary_settings: Mapping[str, str] | None = ...,
        standby_settings: Mapping[str, str] | None = ...,
    ) -> Replication: ...


def _require_binaries() -> None:
    try:
        find_bin_dir()
    except EmbeddedServerError as exc:
        pytest.skip(f"no PostgreSQL binaries to start a primary and a standby: {exc}")


def make_replication(
    *,
    synchronous: bool = True,
    primary_settings: Mapping[str, str] | None = None,
    standby_settings: Mapping[str, str] | None = None,
) -> Replication:
    """Create and start a primary and a standby of it; the caller must ``cleanup()`` them."""
    started = time.monotonic()
    primary = EmbeddedServer(password="rep-" + secrets.token_urlsafe(12), settings=primary_settings)
    try:
        primary.start()
        standby = primary.create_standby(synchronous=synchronous, settings=standby_settings)
    except BaseException:
        primary.cleanup()
        raise
    return Replication(primary, standby, synchronous, time.monotonic() - started)


@pytest.fixture
def replication_factory() -> Iterator[ReplicationFactory]:
    _require_binaries()
    made: list[Replication] = []

    def factory(
        *,
        synchronous: bool,
        primary_settings: Mapping[str, str] | None = None,
        standby_settings: Mapping[str, str] | None = None,
    ) -> Replication:
        pair = make_replication(
            synchronous=synchronous,
            primary_settings=primary_settings,
            standby_settings=standby_settings,
        )
        made.append(pair)
        return pair

    yield factory
    errors: list[BaseException] = []
    for pair in reversed(made):
        try:
            pair.cleanup()
        except Exception as exc:  # clean up the other pairs anyway
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest.fixture
def replication() -> Iterator[Replication]:
    _require_binaries()
    pair = make_replication(synchronous=True)
    try:
        yield pair
    finally:
        pair.cleanup()
