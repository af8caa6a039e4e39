"""The password over real scram auth never shows in a repr, a log record or an error."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import pytest

import pgconnector
from pgconnector import ConnectionError, PoolConfig
from pgconnector.cli import main as cli_main
from tests.conftest import ServerInfo
from tests.faults.conftest import FaultKit

pytestmark = pytest.mark.integration


def _assert_absent(secret: str, *texts: str) -> None:
    for text in texts:
        assert secret not in text, f"password leaked in: {text[:200]!r}"


@pytest.mark.fault("Security", "The password in reprs, logs, errors and health reports")
async def test_password_absent_everywhere(
    faults: FaultKit, caplog: pytest.LogCaptureFixture
) -> None:
    """Over real scram auth, with every event logged at DEBUG: the password is in no repr (of
    the manager, config, client, pool, status), no log record, no error of a connect with a
    wrong password, and no health report of a server that went away."""
    caplog.set_level(logging.DEBUG)
    own_server = faults.start_server()
    password = own_server.password
    dsn = own_server.dsn()
    assert password in dsn  # the DSN really carries it: the test would catch a leak

    m = faults.manager(own_server, min_size=1)
    pgconnector.setup_pool_listeners(m.manager)
    texts = [repr(m.manager), str(m.manager), repr(m.config), str(m.config)]
    await m.connect()
    async with m.connection() as c:
        assert await c.fetchval("SELECT current_user") == own_server.user
        texts.append(repr(c.client))
    status = await m.health_check()
    texts.append(repr(status))
    texts.append(repr(m.get_pool()))
    await m.disconnect()

    # a wrong password: the error must say what failed without echoing any password
    wrong = "Wr0ng-" + password[::-1]
    bad = faults.manager(
        own_server, dsn=own_server.dsn().replace(password, wrong), min_size=1,
        connect_timeout=3.0,
    )
    with pytest.raises(ConnectionError) as info:
        await bad.connect()
    texts += [str(info.value), repr(info.value), repr(bad.manager), repr(bad.config)]
    assert "password authentication failed" in str(info.value)
    _assert_absent(wrong, *texts, caplog.text)

    # a server that stops answering: the health error is redacted too
    await m.connect()
    own_server.stop()
    down = await m.health_check(timeout=2.0)
    texts.append(repr(down))
    own_server.start()

    for record in caplog.records:
        texts.append(record.getMessage())
        texts.append(repr(record.__dict__))
    _assert_absent(password, *texts, caplog.text)


def test_config_and_errors_redact_the_password(pg_server: ServerInfo) -> None:
    config = PoolConfig.from_dsn("postgresql://app:Sup3r-Secret@127.0.0.1:1/db")
    assert "Sup3r-Secret" not in repr(config)
    assert "***" in repr(config)
    explicit = PoolConfig(host="127.0.0.1", password="Sup3r-Secret")
    assert "Sup3r-Secret" not in repr(explicit)
    with pytest.raises(pgconnector.ConfigError) as info:
        PoolConfig.from_dsn("postgresql://app:Sup3r-Secret@127.0.0.1:1/db", min_size=5,
                            max_size=1)
    assert "Sup3r-Secret" not in str(info.value)


@pytest.mark.parametrize("backend", list(pgconnector.available_backends()))
def test_cli_check_reports_without_the_password(own_server: Any, backend: str) -> None:
    out = io.StringIO()
    code = cli_main(["check", "--dsn", own_server.dsn(), "--backend", backend,
                     "--json"], out=out)
    assert code == 0, out.getvalue()
    status = json.loads(out.getvalue())
    assert status["connected"] is True
    assert status["pool_stats"]["max_size"] == 1
    _assert_absent(own_server.password, out.getvalue())

    wrong = own_server.dsn().replace(own_server.password, "Not-The-Pa55word")
    out = io.StringIO()
    code = cli_main(["check", "--dsn", wrong, "--backend", backend, "--json",
                     "--timeout", "3"], out=out)
    assert code == 1
    status = json.loads(out.getvalue())
    assert status["connected"] is False
    _assert_absent("Not-The-Pa55word", out.getvalue())
    _assert_absent(own_server.password, out.getvalue())
