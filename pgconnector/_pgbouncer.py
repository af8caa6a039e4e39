"""What ``PoolConfig(pgbouncer=True)`` refuses, and the hint for its typical symptom.

Behind PgBouncer in transaction pooling, each transaction (each statement, outside one) may
run on a different server session, and server sessions are shared between clients. So:

* nothing may rely on server-side prepared statements: each backend turns its own off (see the
  backends), and the symptom of a driver that still prepares is SQLSTATE 26000 ("prepared
  statement … does not exist") or 42P05 ("… already exists");
* ``reset_on_release="session"`` is refused: the reset would run on whichever server session
  PgBouncer lends for it — another client's, say, where ``DISCARD ALL`` drops that client's
  state — and would not reset the session our next transaction gets anyway;
* ``server_settings`` (and a DSN ``options`` keyword) are refused: they travel as startup
  parameters, which PgBouncer answers with ``FATAL: unsupported startup parameter`` unless it
  tracks them (1.18: only application_name, client_encoding, DateStyle, TimeZone and
  standard_conforming_strings; libpq sends any of them inside ``options``, which 1.18 refuses
  too), and a session setting would not follow a client's transactions from one server
  session to the next.

PgBouncer announces itself nowhere on a client connection (the ParameterStatus values and
``SHOW`` answers are the server's), so this is never guessed; instead, a backend that sees the
symptom with ``pgbouncer=False`` adds :data:`HINT` to the error.
"""

from __future__ import annotations

from collections.abc import Mapping

from .errors import ConfigError

__all__ = ["HINT", "SYMPTOM_SQLSTATES", "add_hint", "check_config"]

#: invalid_sql_statement_name ("prepared statement … does not exist"),
#: duplicate_prepared_statement ("prepared statement … already exists").
SYMPTOM_SQLSTATES = frozenset({"26000", "42P05"})

HINT = (
    "pgconnector: a prepared statement went missing or was duplicated on the server, which "
    "is what happens behind a transaction-pooling proxy such as PgBouncer; if you connect "
    "through one, set PoolConfig(pgbouncer=True)"
)


def check_config(
    *, reset_on_release: str, server_settings: Mapping[str, str], options: Mapping[str, str]
) -> None:
    """Refuse what cannot work behind PgBouncer transaction pooling (for ``pgbouncer=True``).

    ``server_settings`` are those of the field and the DSN together; ``options`` the DSN's
    other keywords.
    """
    if reset_on_release == "session":
        raise ConfigError(
            "reset_on_release='session' cannot be combined with pgbouncer=True: behind "
            "transaction pooling the reset would run on a server session shared with other "
            "clients, and the next transaction may get another one anyway; use "
            "reset_on_release='transaction' (in session pooling, PgBouncer's own "
            "server_reset_query resets sessions, and pgbouncer=True is not needed)",
            field="reset_on_release",
        )
    names = sorted(server_settings)
    if "options" in options:
        names.append("options")
    if names:
        raise ConfigError(
            f"server_settings ({', '.join(names)}) cannot be combined with pgbouncer=True: "
            "PgBouncer refuses startup parameters it does not track ('unsupported startup "
            "parameter'), and a session setting would not follow your transactions across "
            "server sessions; set them on the server per role or database (ALTER ROLE … SET "
            "name = value), or per transaction with SET LOCAL; application_name is fine",
            field="server_settings",
        )


def add_hint(error: BaseException, sqlstate: object) -> None:
    """Add :data:`HINT` to ``error`` (as a note, shown under its traceback) when its SQLSTATE
    is the symptom of prepared statements behind a transaction pooler. Call it only for
    ``pgbouncer=False``."""
    if sqlstate not in SYMPTOM_SQLSTATES:
        return
    notes = getattr(error, "__notes__", None)
    if isinstance(notes, list) and HINT in notes:
        return
    add_note = getattr(error, "add_note", None)
    if add_note is not None:  # Python 3.11+
        add_note(HINT)
    else:  # 3.10: the same attribute, which traceback shows from 3.11 on
        error.__notes__ = [*(notes or []), HINT]  # type: ignore[attr-defined]
