"""Driver errors into pgconnector's, written once for every backend (no I/O).

Each backend has one translation function that reads what its driver exposes (psycopg's
``diag``, asyncpg's exception attributes, pg8000's ErrorResponse fields) into
:class:`ServerFields` and calls :func:`server_error`, which chooses the class by SQLSTATE.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypedDict

from .errors import ConnectionError, DatabaseError, PgConnectorError, class_for

__all__ = ["ServerFields", "fields_from_protocol", "server_error"]


class ServerFields(TypedDict, total=False):
    """What the server said about an error, under the names of :class:`DatabaseError`'s
    attributes (``message`` is the primary message)."""

    sqlstate: str | None
    message: str | None
    detail: str | None
    hint: str | None
    severity: str | None
    schema_name: str | None
    table_name: str | None
    column_name: str | None
    constraint_name: str | None


def fields_from_protocol(fields: Mapping[str, str]) -> ServerFields:
    """:class:`ServerFields` from an ErrorResponse's fields keyed by their one-letter codes
    (``{"S": "ERROR", "V": "ERROR", "C": "23505", "M": …}``, as pg8000 keeps them; PostgreSQL's
    protocol, "Error and Notice Message Fields")."""
    return ServerFields(
        sqlstate=fields.get("C"), message=fields.get("M"), detail=fields.get("D"),
        hint=fields.get("H"), schema_name=fields.get("s"), table_name=fields.get("t"),
        column_name=fields.get("c"), constraint_name=fields.get("n"),
        # V is the severity never localized (PostgreSQL 9.6+); S may be translated.
        severity=fields.get("V") or fields.get("S"),
    )


def server_error(
    cause: BaseException, fields: ServerFields, *, broken: bool = False, description: str = ""
) -> PgConnectorError:
    """The exception to raise for a server error.

    A statement's error on a live connection is the :class:`DatabaseError` subclass of its
    SQLSTATE. When the error also ended the session (``broken``), it is a
    :class:`ConnectionError` whose message is ``description``: the SQLSTATE's own class where
    that class is connection-level (``AdminShutdown``, class 08), else a plain
    ``ConnectionError`` carrying the SQLSTATE (a FATAL ``idle_in_transaction_session_timeout``,
    say)."""
    sqlstate = fields.get("sqlstate")
    message = fields.get("message") or ""
    cls = class_for(sqlstate)
    extra = {k: v for k, v in fields.items() if k not in ("sqlstate", "message")}
    if not broken:
        return cls(message, cause, sqlstate=sqlstate, **extra)  # type: ignore[arg-type]
    if issubclass(cls, ConnectionError):
        error: DatabaseError = cls(description or message, cause, sqlstate=sqlstate, **extra)  # type: ignore[arg-type]
        error.message = message
        return error
    lost = ConnectionError(description or message, cause)
    lost.sqlstate = sqlstate
    return lost
