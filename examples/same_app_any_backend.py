"""One application, any backend: run it with PGCONNECTOR_BACKEND=psycopg, asyncpg or pg8000
(or a postgresql+NAME:// DATABASE_URL) and it prints the same thing.

    DATABASE_URL=postgresql://user:password@127.0.0.1:5432/postgres \\
    PGCONNECTOR_BACKEND=pg8000 python examples/same_app_any_backend.py

The backend that served it goes to stderr, so that stdout is identical whichever it was.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
import uuid
from decimal import Decimal

from pgconnector import AsyncConnectionManager, PoolConfig, UniqueViolation


async def main() -> None:
    manager = AsyncConnectionManager(PoolConfig.from_env(min_size=1, max_size=4))
    print(f"backend: {manager.backend_name}", file=sys.stderr)
    async with manager:
        async with manager.connection() as db:
            await db.execute(
                "CREATE TEMP TABLE orders (id int PRIMARY KEY, item text, price numeric(8,2),"
                " placed timestamptz, ref uuid, tags text[], extra jsonb)"
            )
            placed = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
            async with db.transaction():
                for i, (item, price) in enumerate([("tea", "3.50"), ("cake", "4.25")], 1):
                    status = await db.execute(
                        "INSERT INTO orders VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)",
                        i, item, Decimal(price), placed, uuid.UUID(int=i), [item, "x"],
                        '{"gift": %s}' % ("true" if i == 1 else "false"),
                    )
                    print(status)
            try:
                async with db.transaction():
                    await db.execute("INSERT INTO orders (id, item) VALUES (3, 'lost')")
                    raise RuntimeError("changed my mind")
            except RuntimeError as exc:
                print(f"rolled back: {exc}")
            try:
                await db.execute("INSERT INTO orders (id, item) VALUES (1, 'again')")
            except UniqueViolation as exc:  # the same class on every backend
                print(f"duplicate: {exc.sqlstate} {exc.constraint_name}: {exc.detail}")
            for row in await db.fetch("SELECT * FROM orders ORDER BY id"):
                print(dict(row))
            print("total:", await db.fetchval("SELECT sum(price) FROM orders"))
            print("count:", await db.fetchval("SELECT count(*) FROM orders WHERE $1", True))
        health = await manager.health_check()
        print("healthy:", health.connected)
        stats = manager.get_pool_stats()
        print("acquires:", stats.acquires, "in use:", stats.in_use, "timeouts:", stats.timeouts)


if __name__ == "__main__":
    asyncio.run(main())
