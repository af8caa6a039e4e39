"""SQL errors by SQLSTATE: the same pgconnector.errors class, with the same fields, on every
backend and manager; connection-level conditions are ConnectionErrors."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

import pgconnector
from pgconnector import errors
from tests.conftest import MakeManager

pytestmark = pytest.mark.integration


@pytest.fixture
async def m(make_manager: MakeManager) -> Any:
    manager = make_manager(min_size=1, max_size=2)
    await manager.connect()
    yield manager
    await manager.disconnect()


async def test_unique_violation_with_every_field(m: Any) -> None:
    table = f"t_{uuid.uuid4().hex[:12]}"
    async with m.connection() as c:
        await c.execute(f"CREATE TABLE {table} (id int CONSTRAINT {table}_pk PRIMARY KEY)")
        try:
            await c.execute(f"INSERT INTO {table} VALUES ($1)", 1)
            with pytest.raises(pgconnector.UniqueViolation) as info:
                await c.execute(f"INSERT INTO {table} VALUES ($1)", 1)
            e = info.value
            assert isinstance(e, pgconnector.IntegrityError)
            assert isinstance(e, pgconnector.DatabaseError)
            assert not isinstance(e, pgconnector.ConnectionError)
            assert type(e) is errors.UniqueViolation
            assert e.sqlstate == "23505"
            assert str(e) == e.message == (
                f'duplicate key value violates unique constraint "{table}_pk"'
            )
            assert e.detail == "Key (id)=(1) already exists."
            assert (e.severity, e.schema_name, e.table_name, e.constraint_name) == (
                "ERROR", "public", table, f"{table}_pk"
            )
            assert (e.hint, e.column_name) == (None, None)
            assert e.cause is not None and e.__cause__ is e.cause
            assert not isinstance(e.cause, pgconnector.PgConnectorError)  # the driver's own
            # The client is still good: autocommit left nothing aborted.
            assert await c.fetchval(f"SELECT count(*) FROM {table}") == 1
        finally:
            await c.execute(f"DROP TABLE {table}")


@pytest.mark.parametrize(
    ("sql", "cls", "dbapi", "message"),
    [
        ("SELECT 1/0", errors.DivisionByZero, errors.DataError, "division by zero"),
        ("SELECT 'x'::int", errors.InvalidTextRepresentation, errors.DataError,
         'invalid input syntax for type integer: "x"'),
        ("SELEC 1", errors.SyntaxError, errors.ProgrammingError,
         'syntax error at or near "SELEC"'),
        ("SELECT * FROM no_such_table_here", errors.UndefinedTable, errors.ProgrammingError,
         'relation "no_such_table_here" does not exist'),
        ("SELECT no_such_function_here()", errors.UndefinedFunction, errors.ProgrammingError,
         "function no_such_function_here() does not exist"),
    ],
    ids=["division", "text", "syntax", "table", "function"],
)
async def test_statement_errors_by_sqlstate(
    m: Any, sql: str, cls: type, dbapi: type, message: str
) -> None:
    async with m.connection() as c:
        for method in (c.execute, c.fetch, c.fetchrow, c.fetchval):
            with pytest.raises(cls) as info:
                await method(sql)
            assert type(info.value) is cls
            assert isinstance(info.value, dbapi)
            assert str(info.value) == message
            assert info.value.sqlstate == cls.sqlstate  # type: ignore[attr-defined]
        assert await c.fetchval("SELECT $1::int", 7) == 7


async def test_raise_exception_detail_hint_and_unknown_codes(m: Any) -> None:
    async with m.connection() as c:
        with pytest.raises(errors.RaiseException) as info:
            await c.execute(
                "DO $$ BEGIN RAISE EXCEPTION 'boom %', 42 USING DETAIL = 'the detail', "
                "HINT = 'the hint'; END $$"
            )
        e = info.value
        assert (str(e), e.detail, e.hint, e.sqlstate) == (
            "boom 42", "the detail", "the hint", "P0001"
        )
        assert isinstance(e, errors.ProgrammingError)
        # A SQLSTATE no table knows is raised as the class of its first two characters.
        with pytest.raises(errors.IntegrityConstraintViolation) as unknown:
            await c.execute("DO $$ BEGIN RAISE EXCEPTION 'odd' USING ERRCODE = '23ZZZ'; END $$")
        assert unknown.value.sqlstate == "23ZZZ"
        assert isinstance(unknown.value, errors.IntegrityError)


async def test_errors_inside_a_transaction(m: Any) -> None:
    async with m.connection() as c:
        with pytest.raises(errors.InFailedSqlTransaction) as info:
            async with c.transaction():
                with pytest.raises(errors.DivisionByZero):
                    await c.fetchval("SELECT 1/0")
                # PostgreSQL aborted the transaction: every statement is refused until the end,
                # and the block ends with that error, rolled back.
                await c.fetchval("SELECT 1")
        assert isinstance(info.value, errors.InternalError)
        assert info.value.sqlstate == "25P02"
        assert await c.fetchval("SELECT 1") == 1  # rolled back, usable


async def test_server_statement_timeout_is_query_canceled(m: Any) -> None:
    async with m.connection() as c:
        await c.execute("SET statement_timeout = 50")
        try:
            with pytest.raises(pgconnector.QueryCanceled) as info:
                await c.fetchval("SELECT pg_sleep(5)")
            assert not isinstance(info.value, pgconnector.StatementTimeoutError)
            assert info.value.sqlstate == "57014"
            assert str(info.value) == "canceling statement due to statement timeout"
            assert await c.fetchval("SELECT 1") == 1
        finally:
            await c.execute("RESET statement_timeout")


async def test_terminated_session_is_admin_shutdown_and_a_connection_error(m: Any) -> None:
    c = await m.get_client()
    try:
        with pytest.raises(pgconnector.ConnectionError) as info:
            await c.fetchval("SELECT pg_terminate_backend(pg_backend_pid())")
        e = info.value
        assert isinstance(e, errors.AdminShutdown)
        assert isinstance(e, errors.OperationalError)
        assert e.sqlstate == "57P01"
        assert e.message == "terminating connection due to administrator command"
        assert "is broken" in str(e)  # says which server's connection
        assert e.cause is not None
        # Every later statement on it is a ConnectionError too.
        with pytest.raises(pgconnector.ConnectionError):
            await c.fetchval("SELECT 1")
    finally:
        await c.release()
    async with m.connection() as fresh:
        assert await fresh.fetchval("SELECT 1") == 1
