"""Multi-host DSNs: how the servers to try are resolved, ordered and chosen (pure logic).

The connections here are stand-ins (strings): what is tested is the plan and the choice, which
the asyncpg and pg8000 backends follow. That the plan picks the server libpq picks, on real
servers, is tested in tests/scale/test_multihost.py.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from pgconnector import ConfigError, PoolConfig
from pgconnector._hosts import (
    Attempt,
    NoMatchingServer,
    accepts,
    connect_plan,
    describe_endpoints,
    open_budget,
    state_from_parameters,
)
from pgconnector._multihost import connect_first
from pgconnector._multihost_async import aconnect_first

ENV_VARS = ("DATABASE_URL", "PGHOST", "PGPORT", "PGTARGETSESSIONATTRS", "PGLOADBALANCEHOSTS")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)


def endpoints(dsn: str, **fields: object) -> tuple[tuple[str, int], ...]:
    return PoolConfig.from_dsn(dsn, **fields).connect_params().endpoints


# --- resolving the list -----------------------------------------------------------------------


def test_key_value_host_and_port_lists_pair_up() -> None:
    assert endpoints("host=a,b,c port=1,2,3") == (("a", 1), ("b", 2), ("c", 3))


def test_one_port_serves_every_host() -> None:
    assert endpoints("host=a,b port=7") == (("a", 7), ("b", 7))


def test_uri_hosts_with_their_own_ports() -> None:
    assert endpoints("postgresql://u@a:1,b,[::1]:3/db") == (("a", 1), ("b", 5432), ("::1", 3))


def test_empty_entries_mean_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pgconnector._config._default_host", lambda: "localhost")
    assert endpoints("host=a,,c port=1,,3") == (("a", 1), ("localhost", 5432), ("c", 3))


def test_port_count_must_match() -> None:
    with pytest.raises(ConfigError, match="2 ports for 3 hosts") as info:
        endpoints("host=a,b,c port=1,2")
    assert info.value.field == "dsn"
    with pytest.raises(ConfigError, match="2 ports for 3 hosts") as info:
        PoolConfig(host="a,b,c", dsn="port=1,2").connect_params()
    assert info.value.field == "port"


def test_host_field_may_list_hosts_and_port_field_applies_to_all() -> None:
    assert endpoints("host=x port=1", host="a,b", port=9) == (("a", 9), ("b", 9))


def test_environment_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGHOST", "a,b")
    monkeypatch.setenv("PGPORT", "1,2")
    monkeypatch.setenv("PGTARGETSESSIONATTRS", "standby")
    monkeypatch.setenv("PGLOADBALANCEHOSTS", "random")
    params = PoolConfig().connect_params()
    assert params.endpoints == (("a", 1), ("b", 2))
    assert (params.target_session_attrs, params.load_balance_hosts) == ("standby", "random")


@pytest.mark.parametrize(
    ("variable", "value"), [("PGTARGETSESSIONATTRS", "master"), ("PGLOADBALANCEHOSTS", "yes")]
)
def test_bad_environment_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=f"^{variable}='{value}' is not valid"):
        PoolConfig().connect_params()


def test_target_session_attrs_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGTARGETSESSIONATTRS", "standby")
    dsn = "host=a,b target_session_attrs=read-only"
    assert PoolConfig(dsn=dsn).connect_params().target_session_attrs == "read-only"
    explicit = PoolConfig(dsn=dsn, target_session_attrs="primary")
    assert explicit.connect_params().target_session_attrs == "primary"
    assert PoolConfig(dsn="host=a").connect_params().target_session_attrs == "standby"


def test_load_balance_hosts_is_validated() -> None:
    assert (
        PoolConfig(dsn="host=a,b load_balance_hosts=random").connect_params().load_balance_hosts
        == "random"
    )
    with pytest.raises(ConfigError, match="load_balance_hosts='always' is not valid"):
        PoolConfig(dsn="host=a,b load_balance_hosts=always")


def test_hostaddr_with_several_hosts_is_refused() -> None:
    with pytest.raises(ConfigError, match="hostaddr cannot be combined with several hosts"):
        PoolConfig(dsn="host=a,b hostaddr=10.0.0.1").connect_params()


def test_describe_endpoints() -> None:
    params = PoolConfig(dsn="postgresql://u@a:1,[::1]:2/db").connect_params()
    assert describe_endpoints(params) == "a:1,[::1]:2"


# --- the plan ---------------------------------------------------------------------------------


def plan(dsn: str, rng: random.Random | None = None) -> list[tuple[str, int, str]]:
    params = PoolConfig(dsn=dsn).connect_params()
    return [(a.host, a.port, a.want) for a in connect_plan(params, rng)]


def test_plan_keeps_the_order() -> None:
    assert plan("host=a,b port=1 target_session_attrs=read-write") == [
        ("a", 1, "read-write"),
        ("b", 1, "read-write"),
    ]


def test_prefer_standby_makes_two_passes() -> None:
    assert plan("host=a,b port=1 target_session_attrs=prefer-standby") == [
        ("a", 1, "standby"),
        ("b", 1, "standby"),
        ("a", 1, "any"),
        ("b", 1, "any"),
    ]


def test_random_load_balancing_shuffles_once_for_both_passes() -> None:
    dsn = "host=a,b,c,d port=1 load_balance_hosts=random target_session_attrs=prefer-standby"
    orders = set()
    for seed in range(20):
        attempts = plan(dsn, random.Random(seed))
        first, second = attempts[:4], attempts[4:]
        assert [h for h, _, _ in first] == [h for h, _, _ in second]
        assert sorted(h for h, _, _ in first) == ["a", "b", "c", "d"]
        orders.add(tuple(h for h, _, _ in first))
    assert len(orders) > 1


def test_open_budget_gives_every_attempt_connect_timeout() -> None:
    one = PoolConfig(dsn="host=a connect_timeout=3").connect_params()
    three = PoolConfig(dsn="host=a,b,c connect_timeout=3").connect_params()
    prefer = PoolConfig(
        dsn="host=a,b connect_timeout=3 target_session_attrs=prefer-standby"
    ).connect_params()
    assert (open_budget(one), open_budget(three), open_budget(prefer)) == (3.0, 9.0, 12.0)


# --- accepting a server -----------------------------------------------------------------------

PRIMARY = (False, False)
READ_ONLY_PRIMARY = (False, True)
STANDBY = (True, True)


@pytest.mark.parametrize(
    ("want", "primary", "read_only_primary", "standby"),
    [
        ("any", True, True, True),
        ("read-write", True, False, False),
        ("read-only", False, True, True),
        ("primary", True, True, False),
        ("standby", False, False, True),
    ],
)
def test_accepts_follows_libpq(
    want: str, primary: bool, read_only_primary: bool, standby: bool
) -> None:
    assert accepts(want, *PRIMARY) is primary
    assert accepts(want, *READ_ONLY_PRIMARY) is read_only_primary
    assert accepts(want, *STANDBY) is standby


@pytest.mark.parametrize(
    ("reported", "state"),
    [
        ({}, None),
        ({"in_hot_standby": "off", "default_transaction_read_only": "off"}, PRIMARY),
        ({"in_hot_standby": "off", "default_transaction_read_only": "on"}, READ_ONLY_PRIMARY),
        ({"in_hot_standby": "on", "default_transaction_read_only": "off"}, STANDBY),
    ],
)
def test_state_from_reported_parameters(
    reported: dict[str, str], state: tuple[bool, bool] | None
) -> None:
    assert state_from_parameters(reported.get) == state


# --- choosing: the first acceptable server, each failure noted --------------------------------

SERVERS = {"p": PRIMARY, "r": READ_ONLY_PRIMARY, "s": STANDBY}


class Fleet:
    """Servers by host name; "down" refuses connections. Records what was opened/closed."""

    def __init__(self) -> None:
        self.opened: list[str] = []
        self.closed: list[str] = []

    def open(self, attempt: Attempt) -> str:
        if attempt.host == "down":
            raise OSError("connection refused")
        self.opened.append(attempt.host)
        return attempt.host

    def state(self, conn: str) -> tuple[bool, bool]:
        return SERVERS[conn]

    def close(self, conn: str) -> None:
        self.closed.append(conn)


def choose(hosts: str, want: str) -> tuple[str, Fleet]:
    fleet = Fleet()
    params = PoolConfig(dsn=f"host={hosts} port=1 target_session_attrs={want}").connect_params()
    conn = connect_first(connect_plan(params), fleet.open, fleet.state, fleet.close, str, want)
    return conn, fleet


@pytest.mark.parametrize(
    ("hosts", "want", "chosen"),
    [
        ("down,s,r,p", "any", "s"),
        ("down,s,r,p", "read-write", "p"),
        ("down,s,r,p", "read-only", "s"),
        ("down,s,r,p", "primary", "r"),
        ("down,s,r,p", "standby", "s"),
        ("down,r,p,s", "prefer-standby", "s"),
        ("p,r", "prefer-standby", "p"),
    ],
)
def test_the_first_acceptable_server_is_chosen(hosts: str, want: str, chosen: str) -> None:
    conn, fleet = choose(hosts, want)
    assert conn == chosen
    # Every connection opened was closed again, except the one chosen.
    left_open = list(fleet.opened)
    for closed in fleet.closed:
        left_open.remove(closed)
    assert left_open == [chosen]


def test_no_match_lists_every_attempt_and_chains_the_last_error() -> None:
    with pytest.raises(NoMatchingServer) as info:
        choose("down,s,r", "read-write")
    message = str(info.value)
    assert message.startswith("no server matches target_session_attrs=read-write among 3")
    assert "down:1: connection refused" in message
    assert "s:1 is a standby (in recovery, read-only), not read-write" in message
    assert "r:1 is a read-only primary (default_transaction_read_only is on)" in message
    assert isinstance(info.value.__cause__, OSError)


def test_a_single_server_without_a_check_raises_the_driver_error_unchanged() -> None:
    with pytest.raises(OSError, match="connection refused"):
        choose("down", "any")


def test_async_twin_chooses_the_same() -> None:
    fleet = Fleet()

    async def open_one(attempt: Attempt) -> str:
        return fleet.open(attempt)

    async def state(conn: str) -> tuple[bool, bool]:
        return fleet.state(conn)

    for hosts, want in [("down,s,r,p", "primary"), ("down,r,p,s", "prefer-standby")]:
        params = PoolConfig(dsn=f"host={hosts} port=1 target_session_attrs={want}")
        attempts = connect_plan(params.connect_params())
        expected = connect_first(attempts, fleet.open, fleet.state, fleet.close, str, want)
        chosen = asyncio.run(aconnect_first(attempts, open_one, state, fleet.close, str, want))
        assert chosen == expected
