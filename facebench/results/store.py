"""The results store: one database (an SQLite file, or a team's PostgreSQL) holding every run and every item.

A run is keyed by what its numbers depend on (:func:`run_key` of its key
parts: the model card, the adapter's code, its artifacts' hashes, the runtime,
the protocol's content hash, the dataset fingerprint and the framing); the
parts are stored with the run. Items are written
batch by batch, each batch in one transaction, so an interrupted run (Ctrl-C,
kill) leaves a readable store and the next run only does the items that are
missing. A run is marked complete, with its metrics, in a last transaction.
Device-farm measurements (one per model, device, settings and repeat) and the
latest probe of each device live in the same file, so the leaderboard shows
phone latency next to accuracy; a measurement's op profile (its separate
profiling pass) is a table of its own, one row per node, keyed by the
measurement's key. The schema is versioned (facebench/results/migrations.py):
opening a store for writing applies the migrations it lacks; a read-only older
store reads as having none of the tables added since. All SQL is here and in the
modules beside it; facebench/results/database.py hides SQLite from PostgreSQL.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facebench.results.database import (
    SQLITE,
    Database,
    StoreError,
    StoreLocation,
    open_database,
    parse_location,
    redact,
)
from facebench.results.migrations import STORE_TABLES, check_version, migrate
from facebench.types import Box, Detection, ItemResult, Landmarks, Prediction, StageOutput

RUN_COLUMNS = ("key, model, protocol, protocol_hash, dataset_fingerprint, runtime, card, status, metrics, environment,"
               " n_items, n_failures, started, finished, key_parts, used")


def run_key(parts: dict) -> str:
    """A run's key: the hash of its key parts (everything its numbers depend on, see
    :func:`facebench.results.evaluate.key_parts`)."""
    payload = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


@dataclass
class Run:
    key: str
    model: str
    protocol: str
    protocol_hash: str
    dataset_fingerprint: str
    runtime: str
    card: dict
    status: str
    metrics: dict | None
    environment: dict | None
    n_items: int | None
    n_failures: int | None
    started: float | None
    finished: float | None
    key_parts: dict | None = None  # what the key was made of (None for runs stored before it was kept)
    used: float | None = None  # when a command last computed or reused it
    kind: str | None = None  # None: measured by facebench's harness; "submitted": scored from uploaded predictions


@dataclass
class Claim:
    """A run computing a cell now: its process, host and run token, since when, last heartbeat."""

    cell: str
    pid: int
    host: str
    token: str
    since: float
    heartbeat: float


class Store:
    """One SQLite file of runs, items and device measurements (see the module docstring).

    A run's life: :meth:`start_run` (status running), :meth:`add_items` per
    batch, :meth:`complete_run` with metrics, per-item numbers and curves. A
    reader uses :meth:`runs`, :meth:`items`, :meth:`item_metrics` and
    :meth:`curves`. Use it as a context manager, one per process or thread.
    """

    def __init__(self, location: StoreLocation, read_only: bool | None = None):
        """Open (or create) the store at ``location``: a file path, ``sqlite:///path`` or
        ``postgresql://user@host/db`` (see facebench/results/database.py). ``read_only`` None: read-only when
        the file exists but cannot be written, so ``leaderboard`` and ``report`` still work; a write to a
        read-only store is a :class:`StoreError`. A database that is not a facebench store (another program's,
        random bytes, a truncated copy) is a :class:`StoreError` naming it. Opening for writing applies the
        schema migrations it lacks (facebench/results/migrations.py)."""
        dialect, target = parse_location(location)
        existed = dialect != SQLITE or Path(target).exists()
        self.location = redact(location)
        self.path: Path | None = Path(target) if dialect == SQLITE else None  # None for a server
        self._db: Database | None = None
        if read_only and not existed:  # read-only never makes a file: a source or a store to read is missing
            raise StoreError(f"no store at {self.location} (no such file): name an existing store")
        try:
            self._db = open_database(location, read_only)
            self.read_only = self._db.read_only
            # the catalogue is read once (a web server opens a store per request)
            tables = self._db.tables()
            have = self._db.columns("runs") if "runs" in tables else set()
            _check_facebench_store(self._db, tables, have)
            if self.read_only:
                check_version(self._db, tables)
                if "runs" not in tables:
                    raise StoreError(f"{self.location}: no facebench results there yet (an empty database): "
                                     "`facebench run --store …` or `facebench store copy` fills it")
            elif migrate(self._db, tables):
                tables, have = self._db.tables(), self._db.columns("runs")
            self._tables = tables
            # a read-only store from before a column was added reads it as NULL (kind: all measured here)
            self._run_columns = ", ".join(c if c in have or not have else "NULL"
                                          for c in (*RUN_COLUMNS.split(", "), "kind"))
            self._curves = "curves" if "curves" in have or not have else "NULL"
        except sqlite3.DatabaseError as exc:
            self._close_quietly()
            if "locked" in str(exc) or "busy" in str(exc):
                raise
            if not existed:
                raise StoreError(f"cannot create the store {self.location} ({exc}): is its folder writable? "
                                 "Name another with --store") from None
            raise StoreError(f"{self.location}: not a facebench store, or corrupt ({exc}): move it aside "
                             "(the next run starts a new store there) or name another with --store") from None
        except StoreError:
            self._close_quietly()
            raise
        except Exception as exc:  # noqa: BLE001 - a server's error (psycopg's classes) becomes one line
            self._close_quietly()
            if type(exc).__module__.split(".")[0] != "psycopg":
                raise
            raise StoreError(f"{self.location}: {str(exc).strip().splitlines()[0]}") from None

    @property
    def db(self) -> Database:
        """The connection (for the store's own data-access modules; other code uses the methods)."""
        assert self._db is not None
        return self._db

    def _close_quietly(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def close(self):
        self._close_quietly()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def get_run(self, key: str) -> Run | None:
        row = self.db.execute(f"SELECT {self._run_columns} FROM runs WHERE key = ?", (key,)).fetchone()
        return _run(row) if row else None

    def runs(self, status: str | None = "complete") -> list[Run]:
        where = " WHERE status = ?" if status else ""
        query = f"SELECT {self._run_columns} FROM runs{where} ORDER BY protocol, model"
        return [_run(r) for r in self.db.execute(query, (status,) if status else ())]

    def start_run(self, key: str, model: str, protocol: str, protocol_hash: str, fingerprint: str,
                  runtime: str, card: dict, environment: dict, key_parts: dict | None = None,
                  kind: str | None = None) -> None:
        """``kind``: None for a run facebench's harness measures; ``submitted`` for one scored from a team's
        uploaded predictions (the submission service)."""
        now = time.time()
        with self.db.transaction():
            self.db.execute(
                "INSERT INTO runs (key, model, protocol, protocol_hash, dataset_fingerprint, runtime, card, status,"
                " environment, started, key_parts, used, kind) VALUES (?, ?, ?, ?, ?, ?, ?, 'running', ?, ?, ?, ?, ?)"
                " ON CONFLICT(key) DO UPDATE SET status = 'running', environment = excluded.environment,"
                " key_parts = excluded.key_parts, used = excluded.used",
                (key, model, protocol, protocol_hash, fingerprint, runtime, json.dumps(card),
                 json.dumps(environment), now, None if key_parts is None else json.dumps(key_parts, sort_keys=True),
                 now, kind))

    def mark_used(self, key: str) -> None:
        """Note that a command reused this run now (see :meth:`runs_used_since`)."""
        with self.db.transaction():
            self.db.execute("UPDATE runs SET used = ? WHERE key = ?", (time.time(), key))

    def run_states(self) -> list[tuple[str, str, float | None, int | None, int | None]]:
        """(key, status, finished, n_items, n_failures) of every run, by key: what changes whenever a run's numbers
        do, read without decoding any run's JSON (a web server checks it on every request)."""
        rows = self.db.execute("SELECT key, status, finished, n_items, n_failures FROM runs ORDER BY key")
        return [(key, status, finished, n_items, n_failures) for key, status, finished, n_items, n_failures in rows]

    def runs_used_since(self, since: float) -> list[Run]:
        """Runs computed, resumed or reused since ``since`` (a ``time.time()``): what one command touched."""
        query = f"SELECT {self._run_columns} FROM runs WHERE used >= ? ORDER BY used"
        return [_run(r) for r in self.db.execute(query, (since,))]

    def delete_run(self, key: str) -> None:
        with self.db.transaction():
            self.db.execute("DELETE FROM items WHERE run_key = ?", (key,))
            self.db.execute("DELETE FROM chunks WHERE run_key = ?", (key,))
            self.db.execute("DELETE FROM runs WHERE key = ?", (key,))

    def add_items(self, key: str, results: Iterable[ItemResult]) -> None:
        rows = [(key, r.key, r.error, None if r.prediction is None else json.dumps(encode_prediction(r.prediction)),
                 r.preprocess_s, r.forward_s, r.postprocess_s) for r in results]
        with self.db.transaction():
            # a new outcome of an item replaces the old one, and the old one's scored numbers
            self.db.executemany(upsert("items", ("run_key", "item", "error", "prediction", "preprocess_s", "forward_s",
                                                 "postprocess_s"), ("run_key", "item"), item_metrics="NULL"), rows)

    def items(self, key: str) -> list[ItemResult]:
        rows = self.db.execute(
            "SELECT item, error, prediction, preprocess_s, forward_s, postprocess_s FROM items WHERE run_key = ?",
            (key,))
        return [ItemResult(item, None if pred is None else decode_prediction(json.loads(pred)), error, pre, fwd, post)
                for item, error, pred, pre, fwd, post in rows]

    def item_metrics(self, key: str) -> dict[str, dict]:
        """Each scored item's own numbers, as the protocol's scorer stored them."""
        rows = self.db.execute("SELECT item, item_metrics FROM items WHERE run_key = ? AND item_metrics IS NOT NULL",
                                (key,))
        return {item: json.loads(m) for item, m in rows}

    def forward_times(self, key: str) -> np.ndarray:
        """Seconds of forward pass per successful item (a batch's time shared among its items)."""
        rows = self.db.execute("SELECT forward_s FROM items WHERE run_key = ? AND error IS NULL", (key,))
        return np.array([f for (f,) in rows if f is not None], dtype=np.float64)

    def delete_items(self, key: str, items: Iterable[str]) -> None:
        """Forget these items' outcomes (failed items to be run again); the run is running again."""
        with self.db.transaction():
            self.db.executemany("DELETE FROM items WHERE run_key = ? AND item = ?", [(key, i) for i in items])
            self.db.execute("UPDATE runs SET status = 'running' WHERE key = ?", (key,))

    def item_keys(self, key: str) -> set[str]:
        return {item for (item,) in self.db.execute("SELECT item FROM items WHERE run_key = ?", (key,))}

    def failures(self, key: str) -> list[tuple[str, str]]:
        rows = self.db.execute("SELECT item, error FROM items WHERE run_key = ? AND error IS NOT NULL", (key,))
        return [(item, error) for item, error in rows]

    def record_chunk(self, key: str, chunk: int, n_chunks: int, n_items: int) -> None:
        """Chunk ``chunk`` (0-based) of ``n_chunks`` of a run of ``n_items`` items is stored (a shard's part;
        ``facebench merge`` checks that every chunk of a run came)."""
        with self.db.transaction():
            self.db.execute(_CHUNK_UPSERT, (key, chunk, n_chunks, n_items, time.time()))

    def chunks(self, key: str) -> dict[int, tuple[int, int]]:
        """The stored chunks of a run: chunk -> (n_chunks, n_items) (empty for a run not split)."""
        if "chunks" not in self._tables:  # a read-only store written before chunks were kept
            return {}
        rows = self.db.execute("SELECT chunk, n_chunks, n_items FROM chunks WHERE run_key = ?", (key,))
        return {chunk: (n, items) for chunk, n, items in rows}

    def curves(self, key: str) -> dict:
        """Curves the scorer kept for plots (precision-recall, ...), by name."""
        row = self.db.execute(f"SELECT {self._curves} FROM runs WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row and row[0] else {}

    def complete_run(self, key: str, metrics: dict, per_item: dict[str, dict], n_items: int, n_failures: int,
                     curves: dict | None = None) -> None:
        with self.db.transaction():
            self.db.executemany("UPDATE items SET item_metrics = ? WHERE run_key = ? AND item = ?",
                                 [(json.dumps(m), key, item) for item, m in per_item.items()])
            self.db.execute(
                "UPDATE runs SET status = 'complete', metrics = ?, curves = ?, n_items = ?, n_failures = ?,"
                " finished = ? WHERE key = ?",
                (json.dumps(metrics), json.dumps(curves or {}), n_items, n_failures, time.time(), key))

    def import_run(self, source: Store, key: str) -> str:
        """Copy run ``key`` of ``source`` (row, items with their per-item numbers, chunks) into this store:
        ``new`` (it was not here), ``completed`` (here but not complete, complete there), ``improved`` (complete
        here, and items that failed here succeeded there: the run is running again, to be scored anew),
        ``merged`` (items and chunks added; a stored success is never replaced by a failure) or ``unchanged``
        (everything it has is here already: nothing is written, so copying twice adds nothing)."""
        columns = RUN_COLUMNS + ", kind, curves"
        with _reading(source):
            row = source.db.execute(f"SELECT {source._run_columns}, {source._curves} FROM runs WHERE key = ?",
                                    (key,)).fetchone()
            if row is None:
                raise StoreError(f"{source.location}: no run {key}")
            items = source.db.execute(
                "SELECT run_key, item, error, prediction, item_metrics, preprocess_s, forward_s, postprocess_s"
                " FROM items WHERE run_key = ?", (key,)).fetchall()
            theirs_chunks = source.chunks(key)
        self.db.check_write("INSERT")  # a read-only target: one clear error, before any lock
        # decided and written under the run's lock: two copies or merges into one store at once never both
        # insert the run (and a run started meanwhile by `facebench run` is merged into, ON CONFLICT)
        with self.db.transaction(lock=f"run {key}"):
            mine = self.get_run(key)
            keys_here = self.item_keys(key) if mine is not None else set()
            failed_here = {item for item, _ in self.failures(key)} if mine is not None else set()
            succeeded_there = {r[1] for r in items if r[2] is None}
            failed_there = {r[1] for r in items if r[2] is not None}
            completes = mine is not None and mine.status != "complete" and row[7] == "complete"
            outcome = "new" if mine is None else "merged"
            if mine is not None and mine.status == "complete" and succeeded_there & failed_here:
                outcome = "improved"  # its metrics counted them failed
            # items that succeeded here and failed there: the source's metrics counted them failed
            better_here = bool(failed_there & (keys_here - failed_here))
            if (outcome == "merged" and not completes and succeeded_there | failed_there <= keys_here
                    and not succeeded_there & failed_here and set(theirs_chunks) <= set(self.chunks(key))):
                return "unchanged"
            if mine is None:
                self.db.execute(f"INSERT INTO runs ({columns}) VALUES ({', '.join('?' * len(row))})"
                                " ON CONFLICT (key) DO NOTHING", row)
            elif completes and not better_here:
                self.db.execute("UPDATE runs SET status = 'complete', metrics = ?, n_items = ?, n_failures = ?,"
                                 " finished = ?, curves = ? WHERE key = ?", (row[8], row[10], row[11], row[13],
                                                                            row[17], key))
                outcome = "completed"
            elif outcome == "improved":
                self.db.execute("UPDATE runs SET status = 'running' WHERE key = ?", (key,))
            self.db.executemany(
                "INSERT INTO items (run_key, item, error, prediction, item_metrics, preprocess_s, forward_s,"
                " postprocess_s) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(run_key, item) DO UPDATE SET"
                " error = excluded.error, prediction = excluded.prediction, item_metrics = excluded.item_metrics,"
                " preprocess_s = excluded.preprocess_s, forward_s = excluded.forward_s,"
                " postprocess_s = excluded.postprocess_s WHERE items.error IS NOT NULL AND excluded.error IS NULL",
                items)
            self.db.executemany(_CHUNK_UPSERT, [(key, c, n, m, None) for c, (n, m) in theirs_chunks.items()])
        return outcome

    def import_device_results(self, source: Store) -> int:
        """Copy ``source``'s farm measurements (with op profiles) and probes that are newer than this
        store's; returns how many measurements were copied."""
        mine = {r["key"]: r.get("finished") or 0 for r in self.device_results()}
        copied = 0
        with _reading(source):
            theirs = source.device_results()
        for record in theirs:
            if record["key"] not in mine or (record.get("finished") or 0) > mine[record["key"]]:
                with _reading(source):
                    ops = source.device_op_profile(record["key"])
                self.put_device_result({**record, "op_profile": ops})
                copied += 1
        probed = dict(self.db.execute("SELECT device, probed FROM device_probes").fetchall())
        with _reading(source):
            rows = source.db.execute("SELECT device, record, probed FROM device_probes").fetchall()
        with self.db.transaction():
            self.db.executemany(_PROBE_UPSERT,
                                [r for r in rows if r[0] not in probed or (r[2] or 0) > (probed[r[0]] or 0)])
        return copied

    def put_device_result(self, record: dict) -> None:
        """One farm measurement (see :class:`facebench.farm.bench.Measurement`), replacing an older one.

        Its ``op_profile`` rows go to the op-profile table (:meth:`device_op_profile`), not the record."""
        record = dict(record)
        ops = record.pop("op_profile", None) or []
        record["op_profile_rows"] = len(ops)
        with self.db.transaction(lock=f"device result {record['key']}"):  # two writers never interleave its rows
            self.db.execute("DELETE FROM device_op_profiles WHERE key = ?", (record["key"],))
            self.db.execute(upsert("device_results", ("key", "model", "device", "status", "record", "finished"),
                                   ("key",)), (record["key"], record["model"], record["device"],
                                                            record["status"], json.dumps(record), record["finished"]))
            self.db.executemany(
                "INSERT INTO device_op_profiles (key, position, node_type, name, avg_ms, percent, times_called)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(record["key"], i, op["node_type"], op["name"], op["avg_ms"], op.get("percent"),
                  op.get("times_called")) for i, op in enumerate(ops)])

    def device_op_profile(self, key: str) -> list[dict]:
        """A measurement's op profile in run order: node_type, name, avg_ms, percent, times_called."""
        if "device_op_profiles" not in self._tables:  # a read-only store written before op profiles were kept
            return []
        rows = self.db.execute("SELECT node_type, name, avg_ms, percent, times_called FROM device_op_profiles"
                               " WHERE key = ? ORDER BY position", (key,)).fetchall()
        return [dict(zip(("node_type", "name", "avg_ms", "percent", "times_called"), r)) for r in rows]

    def device_results(self, model: str | None = None, status: str | None = None) -> list[dict]:
        query, args = "SELECT record FROM device_results WHERE 1 = 1", []
        for column, value in (("model", model), ("status", status)):
            if value is not None:
                query += f" AND {column} = ?"
                args.append(value)
        return [json.loads(r) for (r,) in self.db.execute(query + " ORDER BY finished", args)]

    def put_probe(self, device: str, record: dict) -> None:
        with self.db.transaction():
            self.db.execute(_PROBE_UPSERT, (device, json.dumps(record), time.time()))

    def probes(self) -> dict[str, dict]:
        return {d: json.loads(r) for d, r in self.db.execute("SELECT device, record FROM device_probes")}

    # Cell claims: which ``facebench run`` computes a cell now (see facebench/results/isolation.py).

    def claim_cell(self, cell: str, token: str, pid: int, host: str, stale_s: float,
                   is_dead: Callable[[int, str], bool]) -> Claim | None:
        """Claim ``cell`` for the run ``token``: None when it is now ours, else the live claim that holds it.

        A claim is taken over when its heartbeat is older than ``stale_s`` seconds or
        ``is_dead(pid, host)`` says its owner is gone; the check and the write are one
        exclusive transaction, so two runs never both win a cell. Times are the store's clock (a server's, not
        each host's: a host whose clock is behind would look stale to the others)."""
        now = self.db.now()
        with self.db.transaction(exclusive=True):
            row = self.db.execute("SELECT cell, pid, host, token, since, heartbeat FROM claims WHERE cell = ?",
                                   (cell,)).fetchone()
            if row is not None:
                held = Claim(*row)
                if held.token != token and held.heartbeat >= now - stale_s and not is_dead(held.pid, held.host):
                    return held
            self.db.execute(upsert("claims", ("cell", "pid", "host", "token", "since", "heartbeat"), ("cell",)),
                            (cell, pid, host, token, now, now))
        return None

    def heartbeat_claims(self, token: str) -> None:
        """The run ``token`` is alive: refresh its claims."""
        with self.db.transaction():
            self.db.execute("UPDATE claims SET heartbeat = ? WHERE token = ?", (self.db.now(), token))

    def release_claim(self, cell: str, token: str) -> None:
        with self.db.transaction():
            self.db.execute("DELETE FROM claims WHERE cell = ? AND token = ?", (cell, token))

    def claims(self) -> list[Claim]:
        return [Claim(*r) for r in self.db.execute("SELECT cell, pid, host, token, since, heartbeat FROM claims")]


def copy_store(source: Store, target: Store) -> dict[str, int]:
    """Every run of ``source`` into ``target`` (:meth:`Store.import_run`, by run key) and its device measurements;
    counts by outcome (new, completed, improved, merged, unchanged) and ``device results``."""
    counts = dict.fromkeys(("new", "completed", "improved", "merged", "unchanged"), 0)
    with _reading(source):
        runs = source.runs(status=None)
    for run in runs:
        counts[target.import_run(source, run.key)] += 1
    return {**counts, "device results": target.import_device_results(source)}


@contextmanager
def _reading(source: Store) -> Iterator[None]:
    """Reading a source store (copy, merge): a damaged page of an SQLite file found only now (its first check
    reads the runs table) is a StoreError naming the file; what was copied before it stays copied."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        if source.db.dialect != SQLITE or "locked" in str(exc) or "busy" in str(exc):
            raise
        raise StoreError(f"{source.location}: corrupt, a part of it cannot be read ({str(exc)[:120]}); the runs copied "
                         "before it are in the target: restore the file from a backup, or copy what is "
                         "readable with sqlite3's .recover") from None


def upsert(table: str, columns: tuple[str, ...], keys: tuple[str, ...], **also: str) -> str:
    """``INSERT … ON CONFLICT (keys) DO UPDATE`` setting every other column (and ``also``: column -> SQL): the
    portable form of SQLite's ``INSERT OR REPLACE`` (PostgreSQL has no ``OR REPLACE``)."""
    sets = [f"{c} = excluded.{c}" for c in columns if c not in keys] + [f"{c} = {v}" for c, v in also.items()]
    return (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
            f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {', '.join(sets)}")


_CHUNK_UPSERT = upsert("chunks", ("run_key", "chunk", "n_chunks", "n_items", "finished"), ("run_key", "chunk"))
_PROBE_UPSERT = upsert("device_probes", ("device", "record", "probed"), ("device",))


def _check_facebench_store(db: Database, tables: set[str], runs_columns: set[str]) -> None:
    """Refuse another program's database (facebench must not add its tables to it) or a damaged one. On a
    server, other schemas of the search_path may hold other programs' tables (a ``runs`` too): a first schema
    without tables is where a new store is made. ``tables``, ``runs_columns``: the catalogue, just read."""
    missing: set[str] = set()
    if "runs" in tables:
        missing = {"key", "model", "protocol", "protocol_hash", "dataset_fingerprint", "status"} - runs_columns
        if not missing:
            if db.dialect == SQLITE:  # a damaged file fails here, not mid-report (a server checks its own pages)
                db.execute("SELECT count(*) FROM runs").fetchone()
            return
    here = db.tables_made_here()
    if missing and here:  # a table of the same name, another program's
        raise StoreError(f"{db.location}: not a facebench store (its runs table lacks "
                         f"{', '.join(sorted(missing))}): move it aside or name another with --store")
    if here and not here <= STORE_TABLES:  # only facebench's own names: a store another process is making
        raise StoreError(f"{db.location}: not a facebench store (a database with tables "
                         f"{', '.join(sorted(here)[:5])}): move it aside or name another with --store")


def _run(row) -> Run:
    (key, model, protocol, phash, fp, runtime, card, status, metrics, env, n_items, n_fail, started, finished,
     key_parts, used, kind) = row
    return Run(key, model, protocol, phash, fp, runtime, json.loads(card), status,
               json.loads(metrics) if metrics else None, json.loads(env) if env else None,
               n_items, n_fail, started, finished, json.loads(key_parts) if key_parts else None, used, kind)


def encode_prediction(p: Prediction) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if p.detections is not None:
        out["detections"] = [
            {"box": [d.box.x0, d.box.y0, d.box.x1, d.box.y1], "score": d.score,
             "keypoints": None if d.keypoints is None else np.asarray(d.keypoints).tolist()}
            for d in p.detections]
    if p.landmarks is not None:
        out["landmarks"] = {"scheme": p.landmarks.scheme, "points": p.landmarks.points.tolist()}
    if p.stages:
        out["stages"] = [{"scheme": s.landmarks.scheme, "points": s.landmarks.points.tolist(),
                          "estimated_error": s.estimated_error} for s in p.stages]
    return out


def decode_prediction(d: dict[str, Any]) -> Prediction:
    detections = None
    if "detections" in d:
        detections = tuple(
            Detection(Box(*x["box"]), x["score"], None if x["keypoints"] is None else np.array(x["keypoints"]))
            for x in d["detections"])
    landmarks = None
    if "landmarks" in d:
        landmarks = Landmarks(np.array(d["landmarks"]["points"]), d["landmarks"]["scheme"])
    stages = tuple(StageOutput(Landmarks(np.array(s["points"]), s["scheme"]), s["estimated_error"])
                   for s in d.get("stages", ()))
    return Prediction(detections=detections, landmarks=landmarks, stages=stages)
