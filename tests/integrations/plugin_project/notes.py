"""A tiny application: notes per owner, with a sync and an async API."""

from __future__ import annotations

from pgconnector import AsyncConnectionManager, ConnectionManager

SCHEMA = "CREATE TABLE IF NOT EXISTS sample_notes (id serial PRIMARY KEY, owner text, body text)"


def add_note(manager: ConnectionManager, owner: str, body: str) -> int:
    """Store a note; return how many notes *owner* has now."""
    with manager.connection() as client, client.transaction():
        client.execute(SCHEMA)
        client.execute("INSERT INTO sample_notes (owner, body) VALUES ($1, $2)", owner, body)
        return int(client.fetchval("SELECT count(*) FROM sample_notes WHERE owner = $1", owner))


async def add_note_async(manager: AsyncConnectionManager, owner: str, body: str) -> int:
    async with manager.connection() as client, client.transaction():
        await client.execute(SCHEMA)
        await client.execute(
            "INSERT INTO sample_notes (owner, body) VALUES ($1, $2)", owner, body
        )
        count = await client.fetchval("SELECT count(*) FROM sample_notes WHERE owner = $1", owner)
        return int(count)
