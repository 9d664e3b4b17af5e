"""Where stored Responses API responses live: an embedded SQLite file (one gateway, the default) or a PostgreSQL
server (gateway replicas sharing one store). One SQL schema and one set of statements serve both.

Each row keeps the ``response`` object, the request's own input items and the conversation's earlier items
(``context``), so that ``previous_response_id`` continues with every item of the conversation, function calls
and their outputs included, from a single read, whatever became of the responses before it.

A row belongs to the API key that created it (its SHA-256, ``owner``): reads, continuations and deletes with any
other key find nothing. Rows expire ``retention_s`` after their creation (0: never); expired rows are never
returned and are deleted as new ones are written.

Why PostgreSQL for the shared store: every replica reads what any replica committed the moment it is committed;
a commit is durable on disk before the client hears of it (write-ahead log, fsync), so neither a gateway
restart nor a database restart loses a stored response; retention is a column and an index rather than a
second expiry mechanism; and it is the same SQL as the embedded store. (Redis would make retention a per-key
TTL but, configured by default, persists by periodic snapshot and loses the writes of its last seconds.)
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from nemo_protocol.errors import UnavailableError

DEFAULT_RETENTION_S = 30 * 24 * 3600.0  # OpenAI keeps stored responses 30 days
POSTGRES_SCHEMES = ("postgresql://", "postgres://")

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS nemo_responses (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION,
        response TEXT NOT NULL,
        input_items TEXT NOT NULL,
        context TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS nemo_responses_expiry ON nemo_responses (expires_at)",
)
_LIVE = "id = %s AND owner = %s AND (expires_at IS NULL OR expires_at > %s)"


def owner_of(api_key: str) -> str:
    """The store's name for whoever presented ``api_key``: its SHA-256 (the key itself is never stored)."""
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class StoredResponse:
    response: dict[str, Any]
    input_items: list[dict[str, Any]]  # this request's own input
    context: list[dict[str, Any]]  # the conversation's items before it (previous_response_id), oldest first

    @property
    def conversation(self) -> list[dict[str, Any]]:
        """Every item of the conversation up to and including this response's output."""
        return [*self.context, *self.input_items, *self.response["output"]]


class _Database(Protocol):
    def execute(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Run one statement in its own transaction (committed on return); the rows it returns."""

    def close(self) -> None: ...


class ResponseStore:
    """Stored responses in a SQL database (:func:`open_store` picks SQLite or PostgreSQL)."""

    def __init__(self, database: _Database, retention_s: float, clock: Callable[[], float] = time.time) -> None:
        self._database = database
        self.retention_s = retention_s
        self._clock = clock
        for statement in _SCHEMA:
            self._run(statement, ())

    def put(self, owner: str, stored: StoredResponse) -> None:
        now = self._clock()
        expires = now + self.retention_s if self.retention_s > 0 else None
        self._run("DELETE FROM nemo_responses WHERE expires_at <= %s", (now,))
        self._run(
            "INSERT INTO nemo_responses (id, owner, created_at, expires_at, response, input_items, context) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (
                stored.response["id"],
                owner,
                now,
                expires,
                _json(stored.response),
                _json(stored.input_items),
                _json(stored.context),
            ),
        )

    def get(self, owner: str, response_id: str) -> StoredResponse | None:
        rows = self._run(
            f"SELECT response, input_items, context FROM nemo_responses WHERE {_LIVE}",
            (response_id, owner, self._clock()),
        )
        if not rows:
            return None
        response, items, context = rows[0]
        return StoredResponse(json.loads(response), json.loads(items), json.loads(context))

    def delete(self, owner: str, response_id: str) -> bool:
        return bool(
            self._run(f"DELETE FROM nemo_responses WHERE {_LIVE} RETURNING id", (response_id, owner, self._clock()))
        )

    def close(self) -> None:
        self._database.close()

    def _run(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        try:
            return self._database.execute(sql, params)
        except UnavailableError:
            raise
        except Exception as exc:  # the driver's own errors: the store is down or refuses, not the request's fault
            raise UnavailableError(f"the response store failed: {type(exc).__name__}: {exc}") from exc


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class SqliteDatabase:
    """An embedded SQLite file; a connection per statement (the gateway calls it from worker threads)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(path)) as connection:
            connection.execute("PRAGMA journal_mode=WAL")  # readers never wait for the writer

    def execute(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with closing(sqlite3.connect(self.path, timeout=30)) as connection, connection:
            return connection.execute(sql.replace("%s", "?"), tuple(params)).fetchall()

    def close(self) -> None:
        """Nothing stays open between statements."""


class PostgresDatabase:
    """A PostgreSQL server (psycopg): one autocommit connection, reopened once when the server dropped it."""

    def __init__(self, url: str) -> None:
        import psycopg  # the [gateway] extra; only a shared store needs it

        self._psycopg = psycopg
        self._url = url
        self._lock = threading.Lock()
        self._connection: Any = None

    def execute(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._execute(sql, params)
            except self._psycopg.OperationalError:
                self._drop()
                return self._execute(sql, params)  # a fresh connection, once: the server may have restarted

    def _execute(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        if self._connection is None or self._connection.closed:
            self._connection = self._psycopg.connect(self._url, autocommit=True, connect_timeout=10)
        with self._connection.cursor() as cursor:
            cursor.execute(sql, tuple(params))
            return list(cursor.fetchall()) if cursor.description is not None else []

    def _drop(self) -> None:
        if self._connection is not None:
            self._connection.close()
        self._connection = None

    def close(self) -> None:
        with self._lock:
            self._drop()


def open_store(where: str, retention_s: float = DEFAULT_RETENTION_S) -> ResponseStore:
    """The store at ``where``: a ``postgresql://`` URL, or the path of a SQLite file (created when missing)."""
    if where.startswith(POSTGRES_SCHEMES):
        return ResponseStore(PostgresDatabase(where), retention_s)
    return ResponseStore(SqliteDatabase(Path(where)), retention_s)


def describe(where: str) -> str:
    """``where`` for a log line: a server URL without its credentials."""
    if where.startswith(POSTGRES_SCHEMES):
        scheme, _, rest = where.partition("://")
        return f"{scheme}://{rest.rpartition('@')[2]}"
    return where
