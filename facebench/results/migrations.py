"""The store's schema, as numbered migrations applied in order and recorded in ``schema_version``.

Why not Alembic: facebench already owns its SQL (see facebench/results/database.py), so a
migration is a list of portable statements; :func:`migrate` runs the missing ones in one
exclusive transaction (DDL is transactional on both engines), so two processes opening a new
store at once never apply one twice, and a failed migration leaves the store as it was.

Rules for a new migration: append it (never edit an applied one); write ``{real}`` for a
floating-point column (SQLite REAL; PostgreSQL DOUBLE PRECISION, since its REAL is 32-bit and
would round timestamps); keep every statement valid on both engines.

Stores written before versions were recorded (SQLite files of the first releases) have the
tables but no ``schema_version``: migration 1 uses ``IF NOT EXISTS`` and migration 2 adds only
the columns that are missing, so such a store upgrades in place.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from facebench.results.database import POSTGRESQL, Database, StoreError


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...] = ()
    added_columns: tuple[tuple[str, str, str], ...] = ()  # (table, column, type) added where missing
    run: Callable[[Database], None] | None = None


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "runs, items, chunks, device results, op profiles, probes, claims", (
        """CREATE TABLE IF NOT EXISTS runs (
            key TEXT PRIMARY KEY,
            model TEXT NOT NULL,
            protocol TEXT NOT NULL,
            protocol_hash TEXT NOT NULL,
            dataset_fingerprint TEXT NOT NULL,
            runtime TEXT NOT NULL,
            card TEXT NOT NULL,
            status TEXT NOT NULL,
            metrics TEXT,
            environment TEXT,
            n_items INTEGER,
            n_failures INTEGER,
            started {real},
            finished {real}
        )""",
        """CREATE TABLE IF NOT EXISTS items (
            run_key TEXT NOT NULL REFERENCES runs(key) ON DELETE CASCADE,
            item TEXT NOT NULL,
            error TEXT,
            prediction TEXT,
            item_metrics TEXT,
            preprocess_s {real},
            forward_s {real},
            postprocess_s {real},
            PRIMARY KEY (run_key, item)
        )""",
        """CREATE TABLE IF NOT EXISTS chunks (
            run_key TEXT NOT NULL REFERENCES runs(key) ON DELETE CASCADE,
            chunk INTEGER NOT NULL,
            n_chunks INTEGER NOT NULL,
            n_items INTEGER NOT NULL,
            finished {real},
            PRIMARY KEY (run_key, chunk)
        )""",
        """CREATE TABLE IF NOT EXISTS device_results (
            key TEXT PRIMARY KEY,
            model TEXT NOT NULL,
            device TEXT NOT NULL,
            status TEXT NOT NULL,
            record TEXT NOT NULL,
            finished {real}
        )""",
        """CREATE TABLE IF NOT EXISTS device_op_profiles (
            key TEXT NOT NULL REFERENCES device_results(key) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            node_type TEXT NOT NULL,
            name TEXT NOT NULL,
            avg_ms {real} NOT NULL,
            percent {real},
            times_called INTEGER,
            PRIMARY KEY (key, position)
        )""",
        """CREATE TABLE IF NOT EXISTS device_probes (
            device TEXT PRIMARY KEY,
            record TEXT NOT NULL,
            probed {real}
        )""",
        """CREATE TABLE IF NOT EXISTS claims (
            cell TEXT PRIMARY KEY,
            pid INTEGER NOT NULL,
            host TEXT NOT NULL,
            token TEXT NOT NULL,
            since {real} NOT NULL,
            heartbeat {real} NOT NULL
        )""",
    )),
    Migration(2, "runs keep their curves, key parts and last use",
              added_columns=(("runs", "curves", "TEXT"), ("runs", "key_parts", "TEXT"), ("runs", "used", "{real}"))),
    Migration(3, "submissions scored server-side: accounts, submissions, and a run's kind", (
        """CREATE TABLE IF NOT EXISTS accounts (
            team TEXT PRIMARY KEY,
            token_hash TEXT NOT NULL UNIQUE,
            created {real} NOT NULL,
            submissions_per_day INTEGER
        )""",
        """CREATE TABLE IF NOT EXISTS submissions (
            id TEXT PRIMARY KEY,
            team TEXT NOT NULL,
            protocol TEXT NOT NULL,
            status TEXT NOT NULL,
            card TEXT NOT NULL,
            upload_name TEXT NOT NULL,
            upload_sha256 TEXT NOT NULL,
            upload_bytes INTEGER NOT NULL,
            upload_path TEXT NOT NULL,
            error TEXT,
            run_key TEXT,
            worker TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            created {real} NOT NULL,
            started {real},
            finished {real}
        )""",
        "CREATE INDEX IF NOT EXISTS submissions_by_status ON submissions (status, created)",
        "CREATE INDEX IF NOT EXISTS submissions_by_team ON submissions (team, created)",
    ), added_columns=(("runs", "kind", "TEXT"),)),
)
LATEST = MIGRATIONS[-1].version
# every table a store has (a database holding only these names is a store, perhaps being made right now)
STORE_TABLES = frozenset({"schema_version", *(re.match(r"CREATE TABLE IF NOT EXISTS (\w+)", s).group(1)  # type: ignore
                                              for m in MIGRATIONS for s in m.statements
                                              if s.startswith("CREATE TABLE"))})
VERSION_TABLE = """CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied {real} NOT NULL
)"""


def _typed(db: Database, sql: str) -> str:
    return sql.replace("{real}", "DOUBLE PRECISION" if db.dialect == POSTGRESQL else "REAL")


def applied_version(db: Database, tables: set[str] | None = None) -> int:
    """The newest migration applied (0: an empty database, or a store from before versions were kept).
    ``tables``: the catalogue, when the caller has just read it."""
    if "schema_version" not in (db.tables() if tables is None else tables):
        return 0
    row = db.execute("SELECT max(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def check_version(db: Database, tables: set[str] | None = None) -> int:
    version = applied_version(db, tables)
    if version > LATEST:
        raise StoreError(f"{db.location}: written by a newer facebench (schema version {version}; this one knows up "
                         f"to {LATEST}): upgrade facebench to use it")
    return version


def migrate(db: Database, tables: set[str] | None = None) -> list[int]:
    """Apply the migrations the store lacks, in one exclusive transaction; returns the versions applied.
    ``tables``: the catalogue, when the caller has just read it (it is read again under the lock)."""
    if check_version(db, tables) == LATEST:
        return []
    with db.transaction(exclusive=True):
        if "schema_version" not in db.tables():  # (IF NOT EXISTS would make a second one in another schema)
            db.execute(_typed(db, VERSION_TABLE))
        done = applied_version(db)  # again, under the lock: another process may have migrated meanwhile
        applied = []
        for migration in MIGRATIONS:
            if migration.version <= done:
                continue
            for statement in migration.statements:
                db.execute(_typed(db, statement))
            for table, column, kind in migration.added_columns:
                if column not in db.columns(table):
                    db.execute(_typed(db, f"ALTER TABLE {table} ADD COLUMN {column} {kind}"))
            if migration.run is not None:
                migration.run(db)
            db.execute("INSERT INTO schema_version (version, name, applied) VALUES (?, ?, ?)",
                       (migration.version, migration.name, time.time()))
            applied.append(migration.version)
    return applied
