"""A user's test with a wrong expectation: it must fail, on every sync backend."""

import notes


def test_wrong_count(pgconnector_sync_manager, pgconnector_server):
    assert pgconnector_server.dsn
    assert notes.add_note(pgconnector_sync_manager, "wrong", "x") == 999
