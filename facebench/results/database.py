"""The store's connection to its database: an SQLite file (the default) or a PostgreSQL server.

Why not SQLAlchemy: the store's SQL is a few dozen statements that both engines
already speak (``INSERT … ON CONFLICT … DO UPDATE``, ``excluded.``, plain
types), so one thin layer is enough: this module hides the three things that
differ, and nothing else in facebench knows which engine it talks to:

- placeholders: statements are written with ``?``; for psycopg they become ``%s``;
- transactions: :meth:`Database.transaction` (``with db:`` in sqlite3, a psycopg
  transaction block on an autocommit connection); ``lock`` makes it exclusive for
  a check-then-write (SQLite ``BEGIN IMMEDIATE``, PostgreSQL ``LOCK TABLE``);
- the catalogue: :meth:`Database.tables` and :meth:`Database.columns`.

A store is named by a *location*: a file path or ``sqlite:///path`` (the
embedded default), or ``postgresql://user@host:port/db`` (psycopg 3, the
``facebench[postgres]`` extra). :func:`redact` is how a location is shown: a URL
never prints its password.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from facebench.errors import FacebenchError

StoreLocation = str | Path
SQLITE, POSTGRESQL = "sqlite", "postgresql"
_ADVISORY_LOCK = 0x66616365  # "face": the key of facebench's exclusive transactions on a PostgreSQL database
# statements a read-only store runs; anything else is refused before it reaches the database
_READS = ("select", "with", "explain")


class StoreError(FacebenchError, RuntimeError):
    """A results store that is not one, is corrupt, cannot be reached, or is read-only and was written;
    names the file or the server (never its password)."""


def parse_location(location: StoreLocation) -> tuple[str, str | Path]:
    """``(SQLITE, path)`` or ``(POSTGRESQL, url)``. ``sqlite:///rel.sqlite`` is relative and
    ``sqlite:////abs.sqlite`` absolute (SQLAlchemy's convention); an unknown scheme is an error."""
    if isinstance(location, Path):
        if re.match(r"(postgres(ql)?|sqlite)(\+\w+)?:/[^/]", str(location)):  # Path() folded a URL's //
            raise StoreError(f"{redact(str(location))}: a store URL was turned into a file path; pass it as a string")
        return SQLITE, location
    text = str(location)
    if "://" not in text:
        return SQLITE, Path(text)
    scheme = text.split("://", 1)[0].lower()
    if scheme in ("postgresql", "postgres") or scheme.startswith("postgresql+"):
        return POSTGRESQL, "postgresql://" + text.split("://", 1)[1]
    if scheme == "sqlite":
        rest = text.split("://", 1)[1]
        if not rest.startswith("/") or rest == "/":
            raise StoreError(f"{text}: an SQLite URL names a file: sqlite:///relative.sqlite or sqlite:////abs.sqlite")
        return SQLITE, Path(rest[1:])
    raise StoreError(f"{redact(text)}: unknown store URL scheme {scheme!r}; a store is a file path, "
                     "sqlite:///path or postgresql://user@host/db")


def redact(location: StoreLocation) -> str:
    """The location as it may be printed: a URL's password replaced by ``***``."""
    text = str(location)
    if "://" not in text:
        return text
    parts = urlsplit(text)
    if parts.password is None:
        return text
    user = quote(parts.username or "", safe="")
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class Database:
    """One connection: ``execute``/``executemany`` with ``?`` placeholders, ``transaction()``, the catalogue.

    Not shared between threads or processes: open one per thread (a web server opens one per request)."""

    dialect: str
    location: str  # printable (see redact)
    read_only: bool

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:  # a cursor: fetchone, fetchall, iteration
        raise NotImplementedError

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        raise NotImplementedError

    @contextmanager
    def transaction(self, exclusive: bool = False) -> Iterator[None]:
        """Statements inside commit together or not at all. ``exclusive``: no other exclusive transaction
        (of any process) runs at the same time, so a read-check-write inside is never raced (claims,
        migrations)."""
        raise NotImplementedError
        yield

    def tables(self) -> set[str]:
        raise NotImplementedError

    def columns(self, table: str) -> set[str]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    @staticmethod
    def clean(params: Sequence[Any]) -> tuple:
        """PostgreSQL's TEXT cannot hold NUL; SQLite's can. Both engines store a NUL in a string (an error
        message a model raised, an item name) as the four characters ``\\x00``, so they read back the same."""
        return tuple(p.replace("\x00", "\\x00") if isinstance(p, str) and "\x00" in p else p for p in params)

    def check_write(self, sql: str) -> None:
        if self.read_only and not sql.lstrip().lower().startswith(_READS):
            where = ("its user has no write access or the command asked for read-only" if self.dialect == POSTGRESQL
                     else "file or folder not writable, or a read-only mount")
            raise StoreError(f"{self.location} is read-only ({where}): this command writes results; "
                             "copy the store somewhere writable and pass --store")


class SqliteDatabase(Database):
    dialect = SQLITE

    def __init__(self, connection: sqlite3.Connection, path: Path, read_only: bool):
        self._db, self.path, self.read_only = connection, path, read_only
        self.location = str(path)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        self.check_write(sql)
        return self._db.execute(sql, self.clean(params))

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.check_write(sql)
        self._db.executemany(sql, (self.clean(r) for r in rows))

    @contextmanager
    def transaction(self, exclusive: bool = False) -> Iterator[None]:
        with self._db:
            if exclusive:  # the file's write lock from the first statement
                self._db.execute("BEGIN IMMEDIATE")
            yield

    def tables(self) -> set[str]:
        return {name for (name,) in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def columns(self, table: str) -> set[str]:
        return {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}

    def close(self) -> None:
        self._db.close()


class PostgresDatabase(Database):
    dialect = POSTGRESQL

    def __init__(self, url: str, read_only: bool, connect_timeout_s: float = 10.0):
        try:
            import psycopg
        except ImportError:
            raise StoreError(f"{redact(url)}: a PostgreSQL store needs psycopg: pip install 'facebench[postgres]'") \
                from None
        self.location, self.read_only = redact(url), read_only
        try:
            self._db = psycopg.connect(url, autocommit=True, connect_timeout=max(1, int(connect_timeout_s)),
                                       application_name="facebench")
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to the store {self.location}: {_first_line(exc)}") from None
        if read_only:
            self._db.execute("SET default_transaction_read_only = on")

    @staticmethod
    def _sql(sql: str) -> str:
        # psycopg's placeholders are %s, and a literal % must be doubled
        return sql.replace("%", "%%").replace("?", "%s")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        self.check_write(sql)
        return self._db.execute(self._sql(sql), self.clean(params))

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.check_write(sql)
        rows = [self.clean(r) for r in rows]
        if rows:
            with self._db.cursor() as cursor:
                cursor.executemany(self._sql(sql), rows)

    @contextmanager
    def transaction(self, exclusive: bool = False) -> Iterator[None]:
        with self._db.transaction():
            if exclusive:  # one advisory lock per database, released at commit or rollback
                self._db.execute("SELECT pg_advisory_xact_lock(%s)", (_ADVISORY_LOCK,))
            yield

    def tables(self) -> set[str]:
        rows = self._db.execute("SELECT table_name FROM information_schema.tables"
                                " WHERE table_schema = current_schema()")
        return {name for (name,) in rows}

    def columns(self, table: str) -> set[str]:
        rows = self._db.execute("SELECT column_name FROM information_schema.columns WHERE table_schema = "
                                "current_schema() AND table_name = %s", (table,))
        return {name for (name,) in rows}

    def close(self) -> None:
        self._db.close()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def is_missing_table(exc: BaseException) -> bool:
    """The error a query on a table an older store lacks raises, in either engine."""
    return bool(re.search(r"no such table|relation .* does not exist|UndefinedTable", f"{type(exc).__name__} {exc}"))


def writable_file(path: Path) -> bool:
    # SQLite writes a journal beside the file: the folder must be writable too (False on a read-only mount)
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)


def open_database(location: StoreLocation, read_only: bool | None = None) -> Database:
    """Connect to the store at ``location``. ``read_only`` None: an SQLite file that exists but cannot be
    written (its mode, its folder, a read-only mount) opens read-only; a server is opened for writing."""
    dialect, target = parse_location(location)
    if dialect == POSTGRESQL:
        return PostgresDatabase(str(target), bool(read_only))
    path = Path(target)
    if read_only is None:
        read_only = path.exists() and not writable_file(path)
    if read_only:
        return SqliteDatabase(_open_sqlite_read_only(path), path, True)
    if not path.exists():
        folder = next((p for p in (path.parent, *path.parent.parents) if p.exists()), None)
        if folder is not None and not os.access(folder, os.W_OK | os.X_OK):
            raise StoreError(f"cannot create the store {path}: {folder} is not writable; "
                             "name a store in a writable folder with --store")
        path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, timeout=30)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA foreign_keys=ON")
    except sqlite3.DatabaseError:
        connection.close()
        raise
    return SqliteDatabase(connection, path, False)


def _open_sqlite_read_only(path: Path) -> sqlite3.Connection:
    """``path`` opened with ``mode=ro``; where SQLite cannot even make its shared-memory file (a read-only
    folder or mount) the file is read as ``immutable``."""
    uri = "file:" + quote(str(path.resolve())) + "?mode=ro"
    db = sqlite3.connect(uri, uri=True, timeout=30)
    try:
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError as exc:
        db.close()
        if "unable to open" not in str(exc):
            raise
        db = sqlite3.connect(uri + "&immutable=1", uri=True, timeout=30)
    return db
