"""The user's tests: each runs on every installed backend and manager it can."""

import uuid

import notes
import pytest

from pgconnector import AsyncConnectionManager


def owner() -> str:
    return f"owner-{uuid.uuid4()}"


def test_add_note_sync(pgconnector_sync_manager):
    who = owner()
    assert notes.add_note(pgconnector_sync_manager, who, "one") == 1
    assert notes.add_note(pgconnector_sync_manager, who, "two") == 2


@pytest.mark.asyncio
async def test_add_note_async(pgconnector_async_manager):
    who = owner()
    assert await notes.add_note_async(pgconnector_async_manager, who, "one") == 1
    assert await notes.add_note_async(pgconnector_async_manager, who, "two") == 2


@pytest.mark.asyncio
async def test_every_backend(pgconnector_manager, pgconnector_backend):
    assert pgconnector_manager.backend_name == pgconnector_backend.backend
    assert pgconnector_manager.config.application_name == "notes-tests"
    if isinstance(pgconnector_manager, AsyncConnectionManager):
        assert pgconnector_backend.is_async
        assert await notes.add_note_async(pgconnector_manager, owner(), "hi") == 1
        status = await pgconnector_manager.health_check()
    else:
        assert not pgconnector_backend.is_async
        assert notes.add_note(pgconnector_manager, owner(), "hi") == 1
        status = pgconnector_manager.health_check()
    assert status.connected


@pytest.mark.pgconnector_backends("pg8000")
@pytest.mark.asyncio
async def test_only_pg8000(pgconnector_manager):
    assert pgconnector_manager.backend_name == "pg8000"


def test_server(pgconnector_server):
    assert pgconnector_server.dsn not in repr(pgconnector_server)
    if pgconnector_server.is_embedded:
        assert pgconnector_server.admin_execute("SELECT 41 + 1") == "42"
    else:
        with pytest.raises(RuntimeError, match="needs the embedded server"):
            pgconnector_server.admin_execute("SELECT 1")
