"""The response store on both of its databases, the embedded SQLite file and a real PostgreSQL server: round trip,
the owner's key, retention, deletion, a server restart, and a store that is down."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nemo_gateway.response_store import (
    PostgresDatabase,
    ResponseStore,
    SqliteDatabase,
    StoredResponse,
    describe,
    open_store,
    owner_of,
)
from nemo_protocol.errors import UnavailableError
from tests.postgres_server import PostgresServer

ALICE, BOB = owner_of("alice"), owner_of("bob")
RETENTION_S = 60.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def stored(response_id: str = "resp_1", text: str = "Paris.") -> StoredResponse:
    output = [{"type": "message", "id": "msg_2", "role": "assistant", "status": "completed", "content": [text]}]
    return StoredResponse(
        {"id": response_id, "object": "response", "output": output},
        [{"type": "message", "id": "msg_1", "role": "user", "content": [{"type": "input_text", "text": "Où ?"}]}],
        [{"type": "function_call_output", "id": "fco_0", "call_id": "a1b2c3d4e", "output": "{}"}],
    )


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "sqlite":
        yield SqliteDatabase(tmp_path / "store" / "responses.sqlite3")
        return
    url = request.getfixturevalue("postgres_url")
    database = PostgresDatabase(url)
    database.execute("DROP TABLE IF EXISTS nemo_responses", ())  # the session's server: a fresh table per test
    yield database
    database.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(database: Any, clock: Clock) -> ResponseStore:
    return ResponseStore(database, RETENTION_S, clock)


def test_a_stored_response_comes_back_whole_with_its_conversation(store: ResponseStore) -> None:
    store.put(ALICE, stored())
    back = store.get(ALICE, "resp_1")
    assert back == stored()  # unicode included
    assert [item["id"] for item in back.conversation] == ["fco_0", "msg_1", "msg_2"]


def test_another_key_neither_reads_nor_deletes_it(store: ResponseStore) -> None:
    store.put(ALICE, stored())
    assert store.get(BOB, "resp_1") is None
    assert store.delete(BOB, "resp_1") is False
    assert store.delete(ALICE, "resp_1") is True
    assert store.get(ALICE, "resp_1") is None and store.delete(ALICE, "resp_1") is False


def test_responses_expire_after_the_retention_and_are_then_purged(
    store: ResponseStore, database: Any, clock: Clock
) -> None:
    store.put(ALICE, stored("resp_old"))
    clock.now += RETENTION_S - 1
    assert store.get(ALICE, "resp_old") is not None
    clock.now += 1
    assert store.get(ALICE, "resp_old") is None and store.delete(ALICE, "resp_old") is False
    store.put(ALICE, stored("resp_new"))  # writing purges what expired
    assert database.execute("SELECT id FROM nemo_responses", ()) == [("resp_new",)]


def test_retention_zero_keeps_for_ever(database: Any, clock: Clock) -> None:
    store = ResponseStore(database, 0, clock)
    store.put(ALICE, stored())
    clock.now += 10 * 365 * 24 * 3600
    assert store.get(ALICE, "resp_1") is not None


def test_an_existing_store_is_opened_again_with_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "responses.sqlite3"
    open_store(str(path)).put(ALICE, stored())
    assert open_store(str(path)).get(ALICE, "resp_1") == stored()


def test_the_store_reconnects_after_a_postgres_restart() -> None:
    with PostgresServer() as server:
        store = open_store(server.url)
        store.put(ALICE, stored())
        server.stop()
        with pytest.raises(UnavailableError, match="the response store failed"):
            store.get(ALICE, "resp_1")
        server.start()
        assert store.get(ALICE, "resp_1") == stored()  # committed before the stop: still there
        store.close()


def test_a_store_that_is_down_is_a_503_naming_the_store(tmp_path: Path) -> None:
    unreachable = "postgresql://nemo@127.0.0.1:1/postgres"
    with pytest.raises(UnavailableError, match="the response store failed") as error:
        open_store(unreachable)
    assert error.value.status_code == 503


def test_a_url_is_logged_without_its_password() -> None:
    assert describe("postgresql://nemo:secret@db:5432/responses") == "postgresql://db:5432/responses"
    assert describe("/var/lib/nemo-gateway/responses.sqlite3") == "/var/lib/nemo-gateway/responses.sqlite3"
