"""A user's conftest: enable the pgconnector plugin and customise the managers' config."""

import pytest

from pgconnector import PoolConfig, test_pool_config

pytest_plugins = ["pgconnector.testing"]


@pytest.fixture
def pgconnector_config(pgconnector_server) -> PoolConfig:
    return test_pool_config(dsn=pgconnector_server.dsn, application_name="notes-tests")
