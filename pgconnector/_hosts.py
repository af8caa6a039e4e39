"""Multi-host connection with libpq's semantics, written once for every backend.

libpq (and so psycopg) tries the servers of a multi-host DSN in order, each within
``connect_timeout``, and keeps the first whose session matches ``target_session_attrs``;
``load_balance_hosts=random`` shuffles the order first, and ``prefer-standby`` makes two
passes: standbys only, then any server. asyncpg has its own variant that differs in details (one
timeout for the whole list, a random pick for ``prefer-standby``), and pg8000 has none. The
asyncpg and pg8000 backends therefore follow the plan made here (and choose with
``_multihost.connect_first`` / ``_multihost_async.aconnect_first``), so that one DSN picks the same
server on every backend; psycopg is left to libpq, and the tests check that they agree.

A server's state is read with one query on the new connection, and only when the plan needs it
(never for ``target_session_attrs=any``): PostgreSQL 14 and later also report it as the
``in_hot_standby`` / ``default_transaction_read_only`` parameters, but a query works on every
version and behind PgBouncer, which does not pass those on.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ._config import ConnectParams

__all__ = [
    "STATE_QUERY",
    "Attempt",
    "NoMatchingServer",
    "accepts",
    "attempt_count",
    "connect_plan",
    "describe_endpoints",
    "describe_state",
    "describe_target",
    "give_up",
    "open_budget",
    "rejection",
    "state_from_parameters",
]

#: One round trip that tells a standby (in recovery) from a primary, and a read-only session
#: (a standby, or ``default_transaction_read_only=on``) from a read-write one.
STATE_QUERY = (
    "SELECT pg_catalog.pg_is_in_recovery(), "
    "pg_catalog.current_setting('transaction_read_only') = 'on'"
)

@dataclass(frozen=True)
class Attempt:
    """One connection attempt: a server, and what its session must be (``"any"``: no check)."""

    host: str
    port: int
    want: str

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


class NoMatchingServer(Exception):
    """No server of the list could be used; the message says why for each one tried."""


def connect_plan(params: ConnectParams, rng: random.Random | None = None) -> list[Attempt]:
    """The attempts libpq would make for ``params``, in order."""
    endpoints = list(params.endpoints)
    if params.load_balance_hosts == "random":
        (rng or random).shuffle(endpoints)
    want = params.target_session_attrs
    if want == "prefer-standby":
        # libpq: a first pass that accepts standbys only, then one that accepts any server.
        return [Attempt(h, p, "standby") for h, p in endpoints] + [
            Attempt(h, p, "any") for h, p in endpoints
        ]
    return [Attempt(h, p, want) for h, p in endpoints]


def attempt_count(params: ConnectParams) -> int:
    """How many attempts :func:`connect_plan` makes at most (``prefer-standby``: two passes)."""
    return len(params.endpoints) * (2 if params.target_session_attrs == "prefer-standby" else 1)


def open_budget(params: ConnectParams) -> float:
    """How long opening one connection may take: ``connect_timeout`` for every attempt."""
    return params.connect_timeout * attempt_count(params)


def accepts(want: str, in_recovery: bool, read_only: bool) -> bool:
    """Whether a session on a server in this state satisfies ``target_session_attrs=want``."""
    if want == "read-write":
        return not read_only
    if want == "read-only":
        return read_only
    if want == "primary":
        return not in_recovery
    if want == "standby":
        return in_recovery
    return True  # "any" (and "prefer-standby", whose plan has already split it)


def describe_state(in_recovery: bool, read_only: bool) -> str:
    if in_recovery:
        return "a standby (in recovery, read-only)"
    if read_only:
        return "a read-only primary (default_transaction_read_only is on)"
    return "a read-write primary"


def state_from_parameters(parameters: Callable[[str], str | None]) -> tuple[bool, bool] | None:
    """``(in_recovery, read_only)`` from the server's reported parameters (PostgreSQL 14+
    reports ``in_hot_standby`` and ``default_transaction_read_only`` at connect and whenever
    they change, e.g. on promotion or a configuration reload); None when not reported."""
    hot_standby = parameters("in_hot_standby")
    if hot_standby is None:
        return None
    in_recovery = hot_standby == "on"
    return in_recovery, in_recovery or parameters("default_transaction_read_only") == "on"


def describe_endpoints(params: ConnectParams) -> str:
    """``127.0.0.1:5432`` or, for a multi-host DSN, ``a:5432,b:5433``."""
    return ",".join(str(Attempt(host, port, "any")) for host, port in params.endpoints)


def describe_target(params: ConnectParams) -> str:
    """``127.0.0.1:5432 (database 'app', user 'app')`` for error messages (every server of a
    multi-host DSN)."""
    return f"{describe_endpoints(params)} (database {params.database!r}, user {params.user!r})"


def rejection(attempt: Attempt, state: tuple[bool, bool]) -> str:
    """Why a server that answered was not used."""
    return f"{attempt} is {describe_state(*state)}, not {attempt.want}"


def give_up(attempts: Sequence[Attempt], failures: list[str], want: str) -> NoMatchingServer:
    return NoMatchingServer(
        f"no server matches target_session_attrs={want} among {len(attempts)} attempts: "
        + "; ".join(failures)
    )
