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

import math
import os
import re
import sqlite3
import struct
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from facebench.errors import FacebenchError

StoreLocation = str | Path
SQLITE, POSTGRESQL = "sqlite", "postgresql"
_ADVISORY_LOCK = 0x66616365  # "face": the key of facebench's exclusive transactions on a PostgreSQL database
# how long a statement waits for a lock another session holds before it fails (SQLite's busy timeout is as long):
# a stuck process holding the store's exclusive lock, or a long transaction, is an error, never a hang
LOCK_TIMEOUT_S = 30.0
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
        return SQLITE, _user_path(text)
    scheme = text.split("://", 1)[0].lower()
    if re.fullmatch(r"postgres(ql)?(\+\w+)?", scheme):  # postgres://, postgresql+psycopg://, ...
        return POSTGRESQL, "postgresql://" + text.split("://", 1)[1]
    if scheme == "sqlite":
        rest = text.split("://", 1)[1]
        if not rest.startswith("/") or rest == "/":
            raise StoreError(f"{text}: an SQLite URL names a file: sqlite:///relative.sqlite or sqlite:////abs.sqlite")
        return SQLITE, _user_path(rest[1:])
    raise StoreError(f"{redact(text)}: unknown store URL scheme {scheme!r}; a store is a file path, "
                     "sqlite:///path or postgresql://user@host/db")


def _user_path(text: str) -> Path:
    # a "~/…" the shell did not expand ($FACEBENCH_STORE from a quoted .env line, sqlite:///~/…) is the home
    # folder's, never a folder named "~" made in the working directory
    return Path(text).expanduser() if text == "~" or text.startswith("~/") else Path(text)


def redact(location: StoreLocation) -> str:
    """The location as it may be printed: a URL's password replaced by ``***``, in its user part or in its
    query (``?password=…``, ``sslpassword=…``). Never parses the URL's hosts or port, so a URL libpq reads but
    :func:`urllib.parse.urlsplit` does not (several hosts ``h1:5432,h2:5433``, IPv6 brackets) is shown as
    written, less its password, and never raises."""
    text = str(location)
    if "://" not in text:
        return text
    scheme, rest = text.split("://", 1)
    if scheme.lower() == SQLITE:  # a file's path, never credentials (it may hold ':' and '@')
        return text
    # user[:password]@hosts: the user part ends at the last @ before the path (libpq's reading: a password may
    # hold an unescaped ? # : or @), else (an unescaped / in it) at the last @ before the query
    authority = rest.split("/", 1)[0]
    cut = authority.rfind("@") if "@" in authority else rest.partition("?")[0].rfind("@")
    userinfo, rest = (rest[:cut], rest[cut + 1:]) if cut >= 0 else (None, rest)
    before_query, has_query, query = rest.partition("?")
    if has_query:
        query = re.sub(r"(^|&)([^=&]*password)=[^&#]*", r"\1\2=***", query, flags=re.IGNORECASE)
        before_query += "?" + query
    if userinfo is not None:
        before_query = (userinfo.split(":", 1)[0] + ":***" if ":" in userinfo else userinfo) + "@" + before_query
    return f"{scheme}://{before_query}"


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
    def transaction(self, exclusive: bool = False, lock: str | None = None) -> Iterator[None]:
        """Statements inside commit together or not at all. ``exclusive``: no other exclusive transaction
        (of any process) runs at the same time, so a read-check-write inside is never raced (claims,
        migrations). ``lock``: exclusive among transactions of the same ``lock`` name only (one run's copy;
        SQLite has one lock per file: there it is ``exclusive``)."""
        raise NotImplementedError
        yield

    def tables(self) -> set[str]:
        raise NotImplementedError

    def columns(self, table: str) -> set[str]:
        raise NotImplementedError

    def now(self) -> float:
        """The store's clock (seconds since the epoch): a server's, shared by every host that writes to it."""
        return time.time()

    def tables_made_here(self) -> set[str]:
        """The tables where a new store's would be made (PostgreSQL: the first schema of the search_path)."""
        return self.tables()

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


# SQLite cannot hold every double: a NaN becomes NULL and -0.0 becomes 0 (a REAL column keeps an integral value
# as an integer). Those two are stored as a BLOB of their 8 bytes instead, tagged so no other value reads as one
# (facebench stores no other BLOB), and read back bit for bit, as PostgreSQL's DOUBLE PRECISION keeps them.
_FLOAT_TAG = b"facebench-float:"


def _odd_float(value: object) -> bool:
    return isinstance(value, float) and (math.isnan(value) or (value == 0.0 and math.copysign(1.0, value) < 0))


def _encode_sqlite(params: Sequence[Any]) -> tuple:
    params = Database.clean(params)
    if not any(_odd_float(p) for p in params):
        return params
    # every NaN as the one NaN PostgreSQL reads back (it keeps no sign or payload), so both engines agree
    return tuple(_FLOAT_TAG + struct.pack("<d", math.nan if math.isnan(p) else p) if _odd_float(p) else p
                 for p in params)


def _decode_sqlite_row(cursor: sqlite3.Cursor, row: tuple) -> tuple:
    if not any(type(v) is bytes for v in row):
        return row
    return tuple(struct.unpack("<d", v[len(_FLOAT_TAG):])[0]
                 if type(v) is bytes and len(v) == len(_FLOAT_TAG) + 8 and v.startswith(_FLOAT_TAG) else v
                 for v in row)


class SqliteDatabase(Database):
    dialect = SQLITE

    def __init__(self, connection: sqlite3.Connection, path: Path, read_only: bool):
        self._db, self.path, self.read_only = connection, path, read_only
        self._db.row_factory = _decode_sqlite_row
        self.location = str(path)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        self.check_write(sql)
        return self._db.execute(sql, _encode_sqlite(params))

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.check_write(sql)
        self._db.executemany(sql, (_encode_sqlite(r) for r in rows))

    @contextmanager
    def transaction(self, exclusive: bool = False, lock: str | None = None) -> Iterator[None]:
        with self._db:
            if exclusive or lock:  # the file's write lock from the first statement
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

    def __init__(self, url: str, read_only: bool | None, connect_timeout_s: float = 10.0):
        try:
            import psycopg
        except ImportError:
            raise StoreError(f"{redact(url)}: a PostgreSQL store needs psycopg: pip install 'facebench[postgres]'") \
                from None
        self.location, self.read_only = redact(url), bool(read_only)
        try:
            self._db = psycopg.connect(url, autocommit=True, connect_timeout=max(1, int(connect_timeout_s)),
                                       application_name="facebench")
        except psycopg.Error as exc:
            # libpq quotes a URL it cannot parse whole, password included
            message = _first_line(exc).replace(url, self.location)
            raise StoreError(f"cannot connect to the store {self.location}: {message}") from None
        self._errors = psycopg.errors
        # one round trip: the lock timeout, and whether this user may write the store at all (a user granted
        # SELECT only reads it, leaderboard and report, as a read-only file)
        row = self._db.execute("SELECT set_config('lock_timeout', %s, false), to_regclass('runs') IS NOT NULL"
                               " AND NOT has_table_privilege(to_regclass('runs'), 'INSERT')",
                               (str(int(LOCK_TIMEOUT_S * 1000)),)).fetchone()
        if read_only is None:
            self.read_only = bool(row and row[1])
        if self.read_only:
            self._db.execute("SET default_transaction_read_only = on")

    @contextmanager
    def _server_errors(self) -> Iterator[None]:
        """The server's errors a user can act on are a StoreError naming the store: a write it refuses (no
        privilege, a read-only transaction or standby), a lock not granted in time, the connection lost."""
        errors = self._errors
        try:
            yield
        except (errors.InsufficientPrivilege, errors.ReadOnlySqlTransaction) as exc:
            raise StoreError(f"{self.location} is read-only (its user has no write access or the command asked "
                             f"for read-only: {_first_line(exc)}): this command writes results; name a store "
                             "you may write with --store") from None
        except errors.LockNotAvailable as exc:
            raise StoreError(f"{self.location}: waited {LOCK_TIMEOUT_S:g} s for a lock another session holds "
                             f"({_first_line(exc)}): a stuck facebench process or a long transaction "
                             "(see pg_stat_activity); try again once it is gone") from None
        except errors.OperationalError as exc:
            raise StoreError(f"{self.location}: the server failed or the connection was lost: "
                             f"{_first_line(exc)}") from None

    @staticmethod
    def _sql(sql: str) -> str:
        # psycopg's placeholders are %s, and a literal % must be doubled
        return sql.replace("%", "%%").replace("?", "%s")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        self.check_write(sql)
        with self._server_errors():
            return self._db.execute(self._sql(sql), self.clean(params))

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.check_write(sql)
        rows = [self.clean(r) for r in rows]
        if rows:
            with self._server_errors(), self._db.cursor() as cursor:
                cursor.executemany(self._sql(sql), rows)

    @contextmanager
    def transaction(self, exclusive: bool = False, lock: str | None = None) -> Iterator[None]:
        with self._server_errors(), self._db.transaction():
            if exclusive:  # one advisory lock per database, released at commit or rollback
                self._db.execute("SELECT pg_advisory_xact_lock(%s)", (_ADVISORY_LOCK,))
            elif lock:  # a named one, in the two-key space (never the database's one)
                self._db.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_ADVISORY_LOCK, lock))
            yield

    # The catalogue is what an unqualified name resolves to on the search_path (not only its first schema,
    # current_schema()): a store's tables in a later schema of the path, or behind a schema named after the
    # user ("$user", first in the default path) created after them, are the store, not an empty database.
    def tables(self) -> set[str]:
        rows = self._db.execute("SELECT c.relname FROM pg_catalog.pg_class c WHERE c.relkind IN ('r', 'p')"
                                " AND c.relnamespace <> 'pg_catalog'::regnamespace"
                                " AND pg_catalog.pg_table_is_visible(c.oid)")
        return {name for (name,) in rows}

    def now(self) -> float:
        with self._server_errors():
            row = self._db.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()
        assert row is not None
        return float(row[0])

    def tables_made_here(self) -> set[str]:
        rows = self._db.execute("SELECT table_name FROM information_schema.tables"
                                " WHERE table_schema = current_schema()")
        return {name for (name,) in rows}

    def columns(self, table: str) -> set[str]:
        rows = self._db.execute("SELECT attname FROM pg_catalog.pg_attribute WHERE attrelid = to_regclass(%s)"
                                " AND attnum > 0 AND NOT attisdropped", (table,))
        return {name for (name,) in rows}

    def close(self) -> None:
        self._db.close()


def same_database(a: StoreLocation, b: StoreLocation) -> bool:
    """Whether two locations name one store however spelled: the same file (a relative path, a symlink, an
    ``sqlite:///`` URL), or the same database and schema of one PostgreSQL server (another host name, port
    alias or scheme). Connects to a server read-only; a file that does not exist yet is no other store."""
    (dialect_a, target_a), (dialect_b, target_b) = parse_location(a), parse_location(b)
    if dialect_a != dialect_b:
        return False
    if dialect_a == SQLITE:
        path_a, path_b = Path(target_a), Path(target_b)
        if path_a.resolve() == path_b.resolve():
            return True
        return path_a.exists() and path_b.exists() and os.path.samefile(path_a, path_b)
    first, second = PostgresDatabase(str(target_a), True), PostgresDatabase(str(target_b), True)
    try:  # is the first's session, named uniquely, one of the second's server and database? (a session's pid
        # and application_name are visible to every user, unlike its other columns)
        token = f"facebench-{os.getpid()}-{os.urandom(8).hex()}"
        first.execute("SELECT set_config('application_name', ?, false)", (token,))
        pid, schema = first.execute("SELECT pg_backend_pid(), current_schema()").fetchone()
        row = second.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = ? AND application_name = ?"
                             " AND datname = current_database() AND ? = current_schema()",
                             (pid, token, schema)).fetchone()
        return bool(row[0])
    finally:
        first.close()
        second.close()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def writable_file(path: Path) -> bool:
    # SQLite writes a journal beside the file: the folder must be writable too (False on a read-only mount)
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)


def open_database(location: StoreLocation, read_only: bool | None = None) -> Database:
    """Connect to the store at ``location``. ``read_only`` None: an SQLite file that exists but cannot be
    written (its mode, its folder, a read-only mount) opens read-only; so does a server's store whose user may
    not insert into its runs (GRANT SELECT only); else it is opened for writing."""
    dialect, target = parse_location(location)
    if dialect == POSTGRESQL:
        return PostgresDatabase(str(target), read_only)
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
        _wal(connection)
        connection.execute("PRAGMA foreign_keys=ON")
    except sqlite3.DatabaseError:
        connection.close()
        raise
    return SqliteDatabase(connection, path, False)


def _wal(connection: sqlite3.Connection, wait_s: float = 30.0) -> None:
    """Switch to write-ahead logging. Processes opening a new store at once contend for the switch, and SQLite
    answers "locked" at once rather than through its busy timeout: wait as that timeout would."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


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
