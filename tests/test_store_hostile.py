"""Hostile tests of the results store on both engines (an SQLite file and the session's throwaway PostgreSQL
cluster): odd store URLs and where passwords show, floats SQLite cannot hold, a SELECT-only user, the same
store under two names, a damaged source, schemas along the search_path, a stuck lock holder, a lost connection.
One test per fault found (and fixed)."""

from __future__ import annotations

import math
import sqlite3
import struct
import sys
import threading
import time
import uuid

import psycopg
import pytest
from click.testing import CliRunner

from facebench.cli import main
from facebench.results import database
from facebench.results.database import StoreError, parse_location, redact
from facebench.results.store import Store, copy_store
from facebench.types import ItemResult

CARD = {"name": "m", "task": "landmarks"}


def _run(db: Store, key: str = "k", items: int = 2) -> None:
    db.start_run(key, "m", "p", "h", "f", "tflite", CARD, {"python": "3.11"}, {"card": key})
    db.add_items(key, [ItemResult(f"i{k}", None, "ValueError: x" * (k % 2), 0.1, 0.2, 0.3) for k in range(items)])
    db.complete_run(key, {"nme": 0.25}, {}, items, items // 2)


def _with_password(url: str, password: str = "s3cr%40t") -> str:
    return url.replace("postgresql://facebench@", f"postgresql://facebench:{password}@")


def test_redact_never_raises_and_hides_every_password():
    """libpq reads URLs urlsplit cannot (several hosts, a bad port): redact raised ValueError (a traceback
    wherever a location is shown, Store() included); a ``?password=`` stayed in clear; IPv6 lost its brackets;
    ``postgres+psycopg://`` was an unknown scheme."""
    shown = {
        "postgresql://u:pw@h1:5432,h2:5433/db": "postgresql://u:***@h1:5432,h2:5433/db",
        "postgresql://u:pw@host:abc/db": "postgresql://u:***@host:abc/db",
        "postgresql:///db?host=/run/pg&password=pw&sslmode=require": "postgresql:///db?host=/run/pg&password=***"
                                                                      "&sslmode=require",
        "postgresql://u@h/db?sslpassword=pw": "postgresql://u@h/db?sslpassword=***",
        "postgresql://u:p@w:d@[::1]:5432/db": "postgresql://u:***@[::1]:5432/db",
        "postgresql://u%40x:p%40w@h/db": "postgresql://u%40x:***@h/db",
        "postgresql://u:p?w#x@h/db?sslmode=disable": "postgresql://u:***@h/db?sslmode=disable",
        "postgresql://u:p/w@h/db": "postgresql://u:***@h/db",
        "postgresql://h/db@x": "postgresql://h/db@x",
    }
    for url, expected in shown.items():
        assert redact(url) == expected
        assert "pw" not in redact(url) and "p%40w" not in redact(url)
    assert redact("sqlite:////data/u:v@w.sqlite") == "sqlite:////data/u:v@w.sqlite"  # a path, shown whole
    assert parse_location("postgres+psycopg://u:pw@h/db") == ("postgresql", "postgresql://u:pw@h/db")
    with pytest.raises(StoreError) as err:  # unreachable: one line, no password, no ValueError
        Store("postgresql://u:pw@127.0.0.1:1,127.0.0.1:2/db?connect_timeout=1")
    assert "pw" not in str(err.value)
    with pytest.raises(StoreError) as err:  # libpq quotes a URL it cannot parse, password and all
        Store("postgresql://u:pw@[::1/db")
    assert "pw" not in str(err.value) and "u:***@[::1/db" in str(err.value)


ODD_FLOATS = (math.nan, -0.0, 5e-324, 2.2250738585072014e-308, math.inf, -math.inf, 1 / 3)


def _bits(x: float | None) -> str | None:
    return None if x is None else struct.pack("<d", x).hex()


def test_floats_sqlite_cannot_hold_read_back_bit_for_bit_on_both_engines(tmp_path, store_location):
    """SQLite turned a NaN timing into NULL and -0.0 into 0.0 (PostgreSQL kept both): the engines read back
    differently, and a copy between them changed the numbers."""
    with Store(store_location) as db:
        db.start_run("k", "m", "p", "h", "f", "tflite", CARD, {})
        db.add_items("k", [ItemResult(f"i{n}", None, None, x, x, -x) for n, x in enumerate(ODD_FLOATS)])
        db.put_device_result({"key": "d", "model": "m", "device": "pixel", "status": "ok", "finished": 1.0,
                              "op_profile": [{"node_type": "C", "name": str(n), "avg_ms": x, "percent": -x}
                                             for n, x in enumerate(ODD_FLOATS)]})
        got = {r.key: r for r in db.items("k")}
        ops = db.device_op_profile("d")
        with Store(tmp_path / "copy.sqlite") as other:
            copy_store(db, other)
            copied = {r.key: r for r in other.items("k")}
    for n, x in enumerate(ODD_FLOATS):
        minus = math.nan if math.isnan(x) else -x  # a NaN reads back as Python's NaN on both (no sign kept)
        for seen in (got[f"i{n}"], copied[f"i{n}"]):
            assert (_bits(seen.preprocess_s), _bits(seen.postprocess_s)) == (_bits(x), _bits(minus))
        assert (_bits(ops[n]["avg_ms"]), _bits(ops[n]["percent"])) == (_bits(x), _bits(minus))


def test_a_select_only_user_reads_and_is_refused_writes_in_one_line(tmp_path, postgres_url):
    """A user granted SELECT only: a write was psycopg's InsufficientPrivilege (a traceback, e.g. `store copy`
    into it); now the store opens read-only for it (as an unwritable file does), reads work, and a write, even
    on a connection opened for writing, is one StoreError line."""
    with Store(postgres_url) as db:
        _run(db)
    role = "ro_" + uuid.uuid4().hex[:8]
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'p@ss:w'")
        admin.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
    url = postgres_url.replace("facebench@", f"{role}:p%40ss%3Aw@")
    with Store(url) as db:
        assert db.read_only and [r.key for r in db.runs()] == ["k"]
        with pytest.raises(StoreError, match="read-only"):
            db.start_run("k2", "m", "p", "h", "f", "tflite", CARD, {})
    writer = database.PostgresDatabase(url, read_only=False)
    try:
        with pytest.raises(StoreError, match="read-only.*permission denied"):
            with writer.transaction():
                writer.execute("INSERT INTO claims VALUES ('c', 1, 'h', 't', 0, 0)")
    finally:
        writer.close()
    runner = CliRunner()
    info = runner.invoke(main, ["store", "info", url])
    assert info.exit_code == 0 and "runs: 1 (1 complete)" in info.output and "p@ss" not in info.output
    with Store(tmp_path / "new.sqlite") as other:
        _run(other, "k2")
    copy = runner.invoke(main, ["store", "copy", str(tmp_path / "new.sqlite"), url])
    assert copy.exit_code == 1 and "read-only" in copy.output and "p@ss" not in copy.output
    assert not isinstance(copy.exception, psycopg.Error)


def test_store_copy_refuses_the_same_store_in_disguise(tmp_path, postgres_cluster, postgres_url, monkeypatch):
    """The check compared the printed locations: the same file by a relative path, a symlink or an sqlite:///
    URL, or the same database as localhost or postgres://, was copied into itself (exit 0)."""
    monkeypatch.chdir(tmp_path)
    with Store(tmp_path / "a.sqlite") as db:
        _run(db)
    with Store(postgres_url) as db:
        _run(db)
    (tmp_path / "link.sqlite").symlink_to(tmp_path / "a.sqlite")
    other = postgres_cluster.new_database()
    runner = CliRunner()
    for source, target in ((str(tmp_path / "a.sqlite"), "a.sqlite"), ("a.sqlite", "link.sqlite"),
                           ("a.sqlite", "sqlite:///a.sqlite"), (f"sqlite:///{tmp_path}/a.sqlite", "./a.sqlite"),
                           (postgres_url, postgres_url.replace("127.0.0.1", "localhost")),
                           (postgres_url, postgres_url.replace("postgresql://", "postgres://"))):
        result = runner.invoke(main, ["store", "copy", source, target])
        assert result.exit_code == 2 and "the same store" in result.output, (source, target, result.output)
    role = "other_" + uuid.uuid4().hex[:8]  # another user of the same database: still the same store
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")
        admin.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
    result = runner.invoke(main, ["store", "copy", postgres_url.replace("facebench@", f"{role}@"), postgres_url])
    assert result.exit_code == 2 and "the same store" in result.output, result.output
    for source, target in ((postgres_url, other), ("a.sqlite", "b.sqlite")):  # other stores still copy
        result = runner.invoke(main, ["store", "copy", source, target])
        assert result.exit_code == 0 and "1 new" in result.output, result.output


@pytest.mark.slow  # a whole report (about 5 s)
def test_the_report_command_line_never_shows_the_store_password(tmp_path, postgres_url, monkeypatch):
    """`facebench report` (and `run`'s report) printed its command line, --store URL and password, into the
    report's commands section."""
    url = _with_password(postgres_url)
    with Store(url) as db:
        _run(db)
    out = tmp_path / "report"
    argv = ["facebench", "report", "--store", url, "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    result = CliRunner().invoke(main, argv[1:])
    assert result.exit_code == 0, result.output
    html = (out / "index.html").read_text()
    assert "report --store postgresql://facebench:***@" in html
    for page in out.rglob("*"):
        assert not page.is_file() or b"s3cr" not in page.read_bytes(), page


def test_copy_from_a_source_damaged_past_its_first_check_is_one_error_line(tmp_path, postgres_url):
    """A source whose runs table reads but whose items do not (a damaged page, bytes that are not UTF-8)
    stopped `store copy` with sqlite3's OperationalError (a traceback)."""
    source = tmp_path / "damaged.sqlite"
    with Store(source) as db:
        _run(db, "a")
        _run(db, "b")
    with sqlite3.connect(source) as raw:
        raw.execute("UPDATE items SET error = CAST(x'ff00fe' AS TEXT) WHERE run_key = 'b'")
    raw.close()
    result = CliRunner().invoke(main, ["store", "copy", str(source), postgres_url])
    assert result.exit_code == 1 and "corrupt" in result.output and str(source) in result.output, result.output
    assert not isinstance(result.exception, sqlite3.Error)
    with Store(postgres_url, read_only=True) as db:  # the run read before the damage is there, whole
        assert [r.key for r in db.runs()] == ["a"] and len(db.items("a")) == 2


def test_a_store_is_found_along_the_search_path_not_only_in_its_first_schema(postgres_cluster, postgres_url):
    """The catalogue looked only at current_schema(): once a schema named after the user ("$user", first in
    the default search_path) existed, or with the tables in a later schema of the path, the store read as
    empty and a second, empty set of tables was made beside it."""
    with Store(postgres_url) as db:
        _run(db)
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute("CREATE SCHEMA facebench")  # the user's own schema: current_schema() from now on
        admin.execute("CREATE SCHEMA results")
        admin.execute("ALTER TABLE public.runs SET SCHEMA results")
        for table in ("items", "chunks", "device_results", "device_op_profiles", "device_probes", "claims",
                      "schema_version", "accounts", "submissions"):
            admin.execute(f"ALTER TABLE public.{table} SET SCHEMA results")
        database_name = postgres_url.rsplit("/", 1)[1]
        admin.execute(f'ALTER DATABASE "{database_name}" SET search_path = "$user", public, results')
    with Store(postgres_url) as db:
        assert [r.key for r in db.runs()] == ["k"] and len(db.items("k")) == 2
        _run(db, "k2")
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        schemas = admin.execute("SELECT table_schema FROM information_schema.tables WHERE table_name = 'runs'")
        assert [s for (s,) in schemas] == ["results"]
        assert admin.execute("SELECT count(*) FROM results.runs").fetchone() == (2,)
    shared = postgres_cluster.new_database()  # another program's tables in public, facebench's own schema first
    with psycopg.connect(shared, autocommit=True) as admin:
        admin.execute("CREATE SCHEMA facebench")
        admin.execute("CREATE TABLE public.invoices (id INTEGER)")
        admin.execute("CREATE TABLE public.runs (id INTEGER)")  # another program's runs, behind facebench's schema
    with Store(shared) as db:  # a new store in its own schema, as before (not refused as another program's)
        _run(db)
    with psycopg.connect(shared, autocommit=True) as admin:
        assert admin.execute("SELECT count(*) FROM facebench.runs").fetchone() == (1,)


def test_a_stuck_holder_of_the_store_lock_is_an_error_not_a_hang(postgres_url, monkeypatch):
    """A session holding the store's exclusive lock (a stuck process mid-claim, a long migration) made
    `claim_cell` on PostgreSQL wait for ever (SQLite gives up after its busy timeout)."""
    monkeypatch.setattr(database, "LOCK_TIMEOUT_S", 0.5)
    with Store(postgres_url) as holder, Store(postgres_url) as waiter:
        with holder.db.transaction(exclusive=True):
            started = time.monotonic()
            with pytest.raises(StoreError, match="waited 0.5 s for a lock"):
                waiter.claim_cell("cell", "t2", 2, "h", 60.0, lambda pid, host: False)
            assert time.monotonic() - started < 5
        assert waiter.claim_cell("cell", "t2", 2, "h", 60.0, lambda pid, host: False) is None  # free again


def test_a_connection_lost_between_statements_is_a_store_error(postgres_url):
    """The server ending the session (a restart, an admin, a timeout) between two statements surfaced as
    psycopg's OperationalError; it is a StoreError naming the store, like an unreachable server."""
    url = _with_password(postgres_url)
    with Store(url) as db:
        _run(db)
        pid = db.db.execute("SELECT pg_backend_pid()").fetchone()[0]
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(StoreError) as err:
            db.runs()
    assert "connection" in str(err.value) and "facebench:***@" in str(err.value) and "s3cr" not in str(err.value)


def test_reading_a_store_that_is_not_there_says_so(tmp_path):
    """`store copy`/`store info` of a mistyped file said "cannot create the store … is its folder writable?"
    (a reading command never creates a store)."""
    for args in (["store", "info", str(tmp_path / "typo.sqlite")],
                 ["store", "copy", f"sqlite:///{tmp_path}/typo.sqlite", str(tmp_path / "to.sqlite")]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1 and f"no store at {tmp_path}/typo.sqlite" in result.output, result.output
        assert "cannot create" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_merge_into_an_empty_postgres_database(tmp_path, postgres_url):
    """`facebench merge … --into postgresql://…` took any server database for an existing store and opened it
    read-only to check its chunks: an empty database (a new store) was refused, "no facebench results there"."""
    shard = tmp_path / "shard-1.sqlite"
    with Store(shard) as db:
        _run(db)
    result = CliRunner().invoke(main, ["merge", str(shard), "--into", postgres_url])
    assert result.exit_code == 0 and "1 runs from 1 stores merged into" in result.output, result.output
    with Store(postgres_url, read_only=True) as db:
        assert [r.key for r in db.runs()] == ["k"] and len(db.items("k")) == 2


def test_two_copies_into_one_store_at_once_neither_fails_nor_duplicates(tmp_path, store_location):
    """`import_run` decided new/merged, then wrote, outside any lock: two copies (or merges) into one store at
    once both inserted the same run and one died with a UNIQUE violation (IntegrityError, on both engines)."""
    source = tmp_path / "source.sqlite"
    with Store(source) as db:
        for k in range(30):
            db.start_run(f"k{k}", "m", "p", "h", "f", "tflite", CARD, {})
            db.add_items(f"k{k}", [ItemResult(f"i{i}", None, None, 0.1, 0.2, 0.3) for i in range(3)])
            db.put_device_result({"key": f"d{k}", "model": "m", "device": "x", "status": "ok", "finished": 1.0,
                                  "op_profile": [{"node_type": "C", "name": "c", "avg_ms": 1.0}] * 3})
    Store(store_location).close()
    start, errors, counts = threading.Barrier(4), [], []

    def copy() -> None:
        try:
            with Store(source, read_only=True) as src, Store(store_location) as dst:
                start.wait()
                counts.append(copy_store(src, dst))
        except Exception as exc:  # noqa: BLE001 - the test reports it
            errors.append(repr(exc))

    threads = [threading.Thread(target=copy) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sum(c["new"] for c in counts) == 30 and sum(c["unchanged"] for c in counts) == 90
    with Store(store_location, read_only=True) as db:
        assert len(db.runs(status=None)) == 30 and all(len(db.items(f"k{k}")) == 3 for k in range(30))
        assert len(db.device_results()) == 30 and len(db.device_op_profile("d7")) == 3


def test_claims_on_a_shared_server_use_its_clock_not_each_hosts(postgres_url, monkeypatch):
    """Claims were stamped and judged stale by each client's clock: on a server shared by several machines, a
    host whose clock ran behind (here an hour) wrote heartbeats that every other host took for stale, and its
    cell was taken over and computed twice."""
    import facebench.results.store as store_module

    real_time = time.time
    with Store(postgres_url) as behind, Store(postgres_url) as other:
        monkeypatch.setattr(store_module.time, "time", lambda: real_time() - 3600)
        assert behind.claim_cell("cell", "t1", 1, "host-a", 600.0, lambda pid, host: False) is None
        behind.heartbeat_claims("t1")
        monkeypatch.setattr(store_module.time, "time", real_time)
        held = other.claim_cell("cell", "t2", 2, "host-b", 600.0, lambda pid, host: False)
        assert held is not None and held.token == "t1" and abs(held.heartbeat - real_time()) < 60


def test_a_store_path_in_the_home_folder_that_the_shell_did_not_expand(tmp_path, monkeypatch):
    """$FACEBENCH_STORE="~/fb.sqlite" (a quoted .env line) or sqlite:///~/fb.sqlite named a folder "~" in the
    working directory: reading commands found no store, `run` made a new one there."""
    home, work = tmp_path / "home", tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    with Store(home / "fb.sqlite") as db:
        _run(db)
    assert parse_location("~/fb.sqlite") == parse_location("sqlite:///~/fb.sqlite") == ("sqlite", home / "fb.sqlite")
    runner = CliRunner()
    info = runner.invoke(main, ["store", "info", "sqlite:///~/fb.sqlite"])
    assert info.exit_code == 0 and "runs: 1 (1 complete)" in info.output, info.output
    board = runner.invoke(main, ["leaderboard"], env={"FACEBENCH_STORE": "~/fb.sqlite"})
    assert board.exit_code == 0, board.output
    with Store("~/fb.sqlite") as db:
        db.mark_used("k")
    assert list(work.iterdir()) == []
