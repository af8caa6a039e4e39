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

from pgconnector import (
    AsyncConnectionManager,
    PoolConfig,
    StatementTimeoutError,
    UniqueViolation,
)


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
            # Many rows at once: pipelined, and all or nothing.
            await db.executemany(
                "INSERT INTO orders (id, item, price) VALUES ($1, $2, $3)",
                [(i, f"cookie {i}", Decimal("1.10")) for i in range(10, 1010)],
            )
            # Bulk loads with COPY: Python values, or data already in COPY format.
            loaded = await db.copy_records_to_table(
                "orders", [(2000 + i, f"scone {i}", Decimal("2.00")) for i in range(500)],
                columns=["id", "item", "price"],
            )
            loaded += await db.copy_in(
                "COPY orders (id, item, price) FROM STDIN", b"3000\tbun\t1.50\n"
            )
            print("copied in:", loaded)
            exported = b""
            async for chunk in db.copy_out(
                "COPY (SELECT id, item FROM orders WHERE id >= 3000) TO STDOUT"
            ):
                exported += chunk
            print("copied out:", exported)
            # A large result streamed from a server-side cursor, 100 rows at a time.
            streamed = 0
            async for row in db.cursor("SELECT price FROM orders WHERE id >= $1", 10,
                                       prefetch=100):
                streamed += row["price"]
            print("streamed:", streamed)
            # A statement that takes too long is cancelled on the server; the client goes on.
            try:
                await db.fetchval("SELECT pg_sleep(10)", timeout=0.2)
            except StatementTimeoutError as exc:
                print(f"timed out: {exc.sqlstate}")
            print("total:", await db.fetchval("SELECT sum(price) FROM orders"))
            print("count:", await db.fetchval("SELECT count(*) FROM orders WHERE $1", True))
        # LISTEN on a connection of its own; NOTIFY from a pooled one.
        async with manager.listen("orders") as stream, manager.connection() as db:
            await db.notify("orders", "order 3 placed")
            note = await stream.get(timeout=10)
            print(f"notified on {note.channel}: {note.payload}")
        health = await manager.health_check()
        print("healthy:", health.connected)
        stats = manager.get_pool_stats()
        print("acquires:", stats.acquires, "in use:", stats.in_use, "timeouts:", stats.timeouts)


if __name__ == "__main__":
    asyncio.run(main())
