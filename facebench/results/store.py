"""The results store: one SQLite file holding every run and every item.

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
measurement's key. Tables added after the first release are created when an
older store is opened for writing; a read-only older store reads as having none.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

import numpy as np

from facebench.errors import FacebenchError
from facebench.types import Box, Detection, ItemResult, Landmarks, Prediction, StageOutput

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    protocol TEXT NOT NULL,
    protocol_hash TEXT NOT NULL,
    dataset_fingerprint TEXT NOT NULL,
    runtime TEXT NOT NULL,
    card TEXT NOT NULL,
    status TEXT NOT NULL,
    metrics TEXT,
    curves TEXT,
    environment TEXT,
    n_items INTEGER,
    n_failures INTEGER,
    started REAL,
    finished REAL,
    key_parts TEXT,
    used REAL
);
CREATE TABLE IF NOT EXISTS items (
    run_key TEXT NOT NULL REFERENCES runs(key) ON DELETE CASCADE,
    item TEXT NOT NULL,
    error TEXT,
    prediction TEXT,
    item_metrics TEXT,
    preprocess_s REAL,
    forward_s REAL,
    postprocess_s REAL,
    PRIMARY KEY (run_key, item)
);
CREATE TABLE IF NOT EXISTS chunks (
    run_key TEXT NOT NULL REFERENCES runs(key) ON DELETE CASCADE,
    chunk INTEGER NOT NULL,
    n_chunks INTEGER NOT NULL,
    n_items INTEGER NOT NULL,
    finished REAL,
    PRIMARY KEY (run_key, chunk)
);
CREATE TABLE IF NOT EXISTS device_results (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    device TEXT NOT NULL,
    status TEXT NOT NULL,
    record TEXT NOT NULL,
    finished REAL
);
CREATE TABLE IF NOT EXISTS device_op_profiles (
    key TEXT NOT NULL REFERENCES device_results(key) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    node_type TEXT NOT NULL,
    name TEXT NOT NULL,
    avg_ms REAL NOT NULL,
    percent REAL,
    times_called INTEGER,
    PRIMARY KEY (key, position)
);
CREATE TABLE IF NOT EXISTS device_probes (
    device TEXT PRIMARY KEY,
    record TEXT NOT NULL,
    probed REAL
);
CREATE TABLE IF NOT EXISTS claims (
    cell TEXT PRIMARY KEY,
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    token TEXT NOT NULL,
    since REAL NOT NULL,
    heartbeat REAL NOT NULL
);
"""


RUN_COLUMNS = ("key, model, protocol, protocol_hash, dataset_fingerprint, runtime, card, status, metrics, environment,"
               " n_items, n_failures, started, finished, key_parts, used")
# columns added after the first release: an older store gets them when it is opened
ADDED_RUN_COLUMNS = (("curves", "TEXT"), ("key_parts", "TEXT"), ("used", "REAL"))


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


@dataclass
class Claim:
    """A run computing a cell now: its process, host and run token, since when, last heartbeat."""

    cell: str
    pid: int
    host: str
    token: str
    since: float
    heartbeat: float


class StoreError(FacebenchError, RuntimeError):
    """A results store that is not one, is corrupt, or is read-only and was written; names the file."""


def _writable(path: Path) -> bool:
    # SQLite writes a journal beside the file: the folder must be writable too (False on a read-only mount)
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)


def _open_read_only(path: Path) -> sqlite3.Connection:
    """``path`` opened with ``mode=ro``; where SQLite cannot even make its shared-memory file (a read-only
    folder or mount) the file is read as ``immutable``. Writes raise :class:`StoreError`."""
    uri = "file:" + quote(str(path.resolve())) + "?mode=ro"
    db = sqlite3.connect(uri, uri=True, timeout=30)
    try:
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError as exc:
        if "unable to open" not in str(exc):
            db.close()
            raise
        db.close()
        db = sqlite3.connect(uri + "&immutable=1", uri=True, timeout=30)
    return cast(sqlite3.Connection, _ReadOnlyConnection(db, path))


class _ReadOnlyConnection:
    """A connection that reads and refuses every write with a :class:`StoreError` naming the file."""

    _READS = ("select", "with", "pragma table_info", "pragma index_list", "explain")

    def __init__(self, db: sqlite3.Connection, path: Path):
        self._real, self._path = db, path

    def _check(self, sql: str) -> None:
        if not sql.lstrip().lower().startswith(self._READS):
            raise StoreError(f"{self._path} is read-only (file or folder not writable, or a read-only mount): "
                             "this command writes results; copy the store somewhere writable and pass --store")

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        self._check(sql)
        return self._real.execute(sql, *args)

    def executemany(self, sql: str, *args: Any) -> sqlite3.Cursor:
        self._check(sql)
        return self._real.executemany(sql, *args)

    def executescript(self, sql: str) -> sqlite3.Cursor:
        self._check(sql)
        return self._real.executescript(sql)

    def __enter__(self):
        return self._real.__enter__()

    def __exit__(self, *exc):
        return self._real.__exit__(*exc)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def _check_facebench_store(db: sqlite3.Connection, path: Path) -> None:
    """Refuse another program's SQLite database (facebench must not add its tables to it) or a damaged one."""
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if tables and "runs" not in tables:
        raise StoreError(f"{path}: not a facebench store (an SQLite database with tables "
                         f"{', '.join(sorted(tables)[:5])}): move it aside or name another with --store")
    if "runs" in tables:
        columns = {row[1] for row in db.execute("PRAGMA table_info(runs)")}
        missing = {"key", "model", "protocol", "protocol_hash", "dataset_fingerprint", "status"} - columns
        if missing:  # a table of the same name, another program's
            raise StoreError(f"{path}: not a facebench store (its runs table lacks {', '.join(sorted(missing))}): "
                             "move it aside or name another with --store")
        db.execute("SELECT count(*) FROM runs").fetchone()  # a damaged file fails here, not mid-report


class Store:
    """One SQLite file of runs, items and device measurements (see the module docstring).

    A run's life: :meth:`start_run` (status running), :meth:`add_items` per
    batch, :meth:`complete_run` with metrics, per-item numbers and curves. A
    reader uses :meth:`runs`, :meth:`items`, :meth:`item_metrics` and
    :meth:`curves`. Use it as a context manager, one per process or thread.
    """

    def __init__(self, path: str | Path, read_only: bool | None = None):
        """Open (or create) the store at ``path``. ``read_only`` None: read-only when the file exists but
        cannot be written (its mode, its folder, a read-only mount), so ``leaderboard`` and ``report`` still
        work; a write to a read-only store is a :class:`StoreError`. A file that is not a facebench store
        (another SQLite database, random bytes, a truncated copy) is a :class:`StoreError` naming it."""
        self.path = Path(path)
        if read_only is None:
            read_only = self.path.exists() and not _writable(self.path)
        self.read_only = read_only
        if not read_only and not self.path.exists():
            folder = next((p for p in (self.path.parent, *self.path.parent.parents) if p.exists()), None)
            if folder is not None and not os.access(folder, os.W_OK | os.X_OK):
                raise StoreError(f"cannot create the store {self.path}: {folder} is not writable; "
                                 "name a store in a writable folder with --store")
        existed = self.path.exists()
        try:
            if read_only:
                self._db = _open_read_only(self.path)
                _check_facebench_store(self._db, self.path)
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=30)
            _check_facebench_store(self._db, self.path)
            self._open_writable()
        except sqlite3.DatabaseError as exc:
            if getattr(self, "_db", None) is not None:
                self._db.close()
            if "locked" in str(exc) or "busy" in str(exc):
                raise
            if not existed:
                raise StoreError(f"cannot create the store {self.path} ({exc}): is its folder writable? "
                                 "Name another with --store") from None
            raise StoreError(f"{self.path}: not a facebench store, or corrupt ({exc}): move it aside "
                             "(the next run starts a new store there) or name another with --store") from None
        except StoreError:
            if getattr(self, "_db", None) is not None:
                self._db.close()
            raise

    def _open_writable(self) -> None:
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(runs)")}
        for column, kind in ADDED_RUN_COLUMNS:
            if column not in columns:  # a store written before the column was kept
                try:
                    with self._db:
                        self._db.execute(f"ALTER TABLE runs ADD COLUMN {column} {kind}")
                except sqlite3.OperationalError as exc:  # another process upgraded it first
                    if "duplicate column" not in str(exc):
                        raise

    def close(self):
        self._db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def get_run(self, key: str) -> Run | None:
        row = self._db.execute(f"SELECT {RUN_COLUMNS} FROM runs WHERE key = ?", (key,)).fetchone()
        return _run(row) if row else None

    def runs(self, status: str | None = "complete") -> list[Run]:
        where = " WHERE status = ?" if status else ""
        query = f"SELECT {RUN_COLUMNS} FROM runs{where} ORDER BY protocol, model"
        return [_run(r) for r in self._db.execute(query, (status,) if status else ())]

    def start_run(self, key: str, model: str, protocol: str, protocol_hash: str, fingerprint: str,
                  runtime: str, card: dict, environment: dict, key_parts: dict | None = None) -> None:
        now = time.time()
        with self._db:
            self._db.execute(
                "INSERT INTO runs (key, model, protocol, protocol_hash, dataset_fingerprint, runtime, card, status,"
                " environment, started, key_parts, used) VALUES (?, ?, ?, ?, ?, ?, ?, 'running', ?, ?, ?, ?)"
                " ON CONFLICT(key) DO UPDATE SET status = 'running', environment = excluded.environment,"
                " key_parts = excluded.key_parts, used = excluded.used",
                (key, model, protocol, protocol_hash, fingerprint, runtime, json.dumps(card),
                 json.dumps(environment), now, None if key_parts is None else json.dumps(key_parts, sort_keys=True),
                 now))

    def mark_used(self, key: str) -> None:
        """Note that a command reused this run now (see :meth:`runs_used_since`)."""
        with self._db:
            self._db.execute("UPDATE runs SET used = ? WHERE key = ?", (time.time(), key))

    def runs_used_since(self, since: float) -> list[Run]:
        """Runs computed, resumed or reused since ``since`` (a ``time.time()``): what one command touched."""
        query = f"SELECT {RUN_COLUMNS} FROM runs WHERE used >= ? ORDER BY used"
        return [_run(r) for r in self._db.execute(query, (since,))]

    def delete_run(self, key: str) -> None:
        with self._db:
            self._db.execute("DELETE FROM items WHERE run_key = ?", (key,))
            self._db.execute("DELETE FROM chunks WHERE run_key = ?", (key,))
            self._db.execute("DELETE FROM runs WHERE key = ?", (key,))

    def add_items(self, key: str, results: Iterable[ItemResult]) -> None:
        rows = [(key, r.key, r.error, None if r.prediction is None else json.dumps(encode_prediction(r.prediction)),
                 r.preprocess_s, r.forward_s, r.postprocess_s) for r in results]
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO items (run_key, item, error, prediction, preprocess_s, forward_s,"
                " postprocess_s) VALUES (?, ?, ?, ?, ?, ?, ?)", rows)

    def items(self, key: str) -> list[ItemResult]:
        rows = self._db.execute(
            "SELECT item, error, prediction, preprocess_s, forward_s, postprocess_s FROM items WHERE run_key = ?",
            (key,))
        return [ItemResult(item, None if pred is None else decode_prediction(json.loads(pred)), error, pre, fwd, post)
                for item, error, pred, pre, fwd, post in rows]

    def item_metrics(self, key: str) -> dict[str, dict]:
        """Each scored item's own numbers, as the protocol's scorer stored them."""
        rows = self._db.execute("SELECT item, item_metrics FROM items WHERE run_key = ? AND item_metrics IS NOT NULL",
                                (key,))
        return {item: json.loads(m) for item, m in rows}

    def forward_times(self, key: str) -> np.ndarray:
        """Seconds of forward pass per successful item (a batch's time shared among its items)."""
        rows = self._db.execute("SELECT forward_s FROM items WHERE run_key = ? AND error IS NULL", (key,))
        return np.array([f for (f,) in rows if f is not None], dtype=np.float64)

    def delete_items(self, key: str, items: Iterable[str]) -> None:
        """Forget these items' outcomes (failed items to be run again); the run is running again."""
        with self._db:
            self._db.executemany("DELETE FROM items WHERE run_key = ? AND item = ?", [(key, i) for i in items])
            self._db.execute("UPDATE runs SET status = 'running' WHERE key = ?", (key,))

    def item_keys(self, key: str) -> set[str]:
        return {item for (item,) in self._db.execute("SELECT item FROM items WHERE run_key = ?", (key,))}

    def failures(self, key: str) -> list[tuple[str, str]]:
        rows = self._db.execute("SELECT item, error FROM items WHERE run_key = ? AND error IS NOT NULL", (key,))
        return [(item, error) for item, error in rows]

    def record_chunk(self, key: str, chunk: int, n_chunks: int, n_items: int) -> None:
        """Chunk ``chunk`` (0-based) of ``n_chunks`` of a run of ``n_items`` items is stored (a shard's part;
        ``facebench merge`` checks that every chunk of a run came)."""
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO chunks (run_key, chunk, n_chunks, n_items, finished)"
                             " VALUES (?, ?, ?, ?, ?)", (key, chunk, n_chunks, n_items, time.time()))

    def chunks(self, key: str) -> dict[int, tuple[int, int]]:
        """The stored chunks of a run: chunk -> (n_chunks, n_items) (empty for a run not split)."""
        try:
            rows = self._db.execute("SELECT chunk, n_chunks, n_items FROM chunks WHERE run_key = ?", (key,))
            return {chunk: (n, items) for chunk, n, items in rows}
        except sqlite3.OperationalError as exc:  # a read-only store written before chunks were kept
            if "no such table" in str(exc):
                return {}
            raise

    def curves(self, key: str) -> dict:
        """Curves the scorer kept for plots (precision-recall, ...), by name."""
        row = self._db.execute("SELECT curves FROM runs WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row and row[0] else {}

    def complete_run(self, key: str, metrics: dict, per_item: dict[str, dict], n_items: int, n_failures: int,
                     curves: dict | None = None) -> None:
        with self._db:
            self._db.executemany("UPDATE items SET item_metrics = ? WHERE run_key = ? AND item = ?",
                                 [(json.dumps(m), key, item) for item, m in per_item.items()])
            self._db.execute(
                "UPDATE runs SET status = 'complete', metrics = ?, curves = ?, n_items = ?, n_failures = ?,"
                " finished = ? WHERE key = ?",
                (json.dumps(metrics), json.dumps(curves or {}), n_items, n_failures, time.time(), key))

    def import_run(self, source: Store, key: str) -> str:
        """Copy run ``key`` of ``source`` (row, items with their per-item numbers, chunks) into this store:
        ``new`` (it was not here), ``completed`` (here but not complete, complete there), ``improved`` (complete
        here, and items that failed here succeeded there: the run is running again, to be scored anew) or
        ``merged`` (items and chunks added; a stored success is never replaced by a failure)."""
        columns = RUN_COLUMNS + ", curves"
        row = source._db.execute(f"SELECT {columns} FROM runs WHERE key = ?", (key,)).fetchone()
        if row is None:
            raise StoreError(f"{source.path}: no run {key}")
        items = source._db.execute(
            "SELECT run_key, item, error, prediction, item_metrics, preprocess_s, forward_s, postprocess_s FROM items"
            " WHERE run_key = ?", (key,)).fetchall()
        mine = self.get_run(key)
        outcome = "new" if mine is None else "merged"
        if mine is not None and mine.status == "complete":
            failed_here = {item for item, _ in self.failures(key)}
            if any(row[1] in failed_here and row[2] is None for row in items):  # its metrics counted them failed
                outcome = "improved"
        # items that succeeded here and failed there: the source's metrics counted them failed
        better_here = mine is not None and bool({r[1] for r in items if r[2] is not None}
                                                & (self.item_keys(key) - {i for i, _ in self.failures(key)}))
        with self._db:
            if mine is None:
                self._db.execute(f"INSERT INTO runs ({columns}) VALUES ({', '.join('?' * len(row))})", row)
            elif mine.status != "complete" and row[7] == "complete" and not better_here:
                self._db.execute("UPDATE runs SET status = 'complete', metrics = ?, n_items = ?, n_failures = ?,"
                                 " finished = ?, curves = ? WHERE key = ?", (row[8], row[10], row[11], row[13],
                                                                            row[16], key))
                outcome = "completed"
            elif outcome == "improved":
                self._db.execute("UPDATE runs SET status = 'running' WHERE key = ?", (key,))
            self._db.executemany(
                "INSERT INTO items (run_key, item, error, prediction, item_metrics, preprocess_s, forward_s,"
                " postprocess_s) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(run_key, item) DO UPDATE SET"
                " error = excluded.error, prediction = excluded.prediction, item_metrics = excluded.item_metrics,"
                " preprocess_s = excluded.preprocess_s, forward_s = excluded.forward_s,"
                " postprocess_s = excluded.postprocess_s WHERE items.error IS NOT NULL AND excluded.error IS NULL",
                items)
            self._db.executemany("INSERT OR REPLACE INTO chunks (run_key, chunk, n_chunks, n_items, finished)"
                                 " VALUES (?, ?, ?, ?, ?)",
                                 [(key, c, n, m, None) for c, (n, m) in source.chunks(key).items()])
        return outcome

    def import_device_results(self, source: Store) -> int:
        """Copy ``source``'s farm measurements (with op profiles) and probes that are newer than this
        store's; returns how many measurements were copied."""
        mine = {r["key"]: r.get("finished") or 0 for r in self.device_results()}
        copied = 0
        for record in source.device_results():
            if record["key"] not in mine or (record.get("finished") or 0) > mine[record["key"]]:
                self.put_device_result({**record, "op_profile": source.device_op_profile(record["key"])})
                copied += 1
        probed = dict(self._db.execute("SELECT device, probed FROM device_probes").fetchall())
        rows = source._db.execute("SELECT device, record, probed FROM device_probes").fetchall()
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO device_probes (device, record, probed) VALUES (?, ?, ?)",
                                 [r for r in rows if r[0] not in probed or (r[2] or 0) > (probed[r[0]] or 0)])
        return copied

    def put_device_result(self, record: dict) -> None:
        """One farm measurement (see :class:`facebench.farm.bench.Measurement`), replacing an older one.

        Its ``op_profile`` rows go to the op-profile table (:meth:`device_op_profile`), not the record."""
        record = dict(record)
        ops = record.pop("op_profile", None) or []
        record["op_profile_rows"] = len(ops)
        with self._db:
            self._db.execute("DELETE FROM device_op_profiles WHERE key = ?", (record["key"],))
            self._db.execute("INSERT OR REPLACE INTO device_results (key, model, device, status, record, finished)"
                             " VALUES (?, ?, ?, ?, ?, ?)", (record["key"], record["model"], record["device"],
                                                            record["status"], json.dumps(record), record["finished"]))
            self._db.executemany(
                "INSERT INTO device_op_profiles (key, position, node_type, name, avg_ms, percent, times_called)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(record["key"], i, op["node_type"], op["name"], op["avg_ms"], op.get("percent"),
                  op.get("times_called")) for i, op in enumerate(ops)])

    def device_op_profile(self, key: str) -> list[dict]:
        """A measurement's op profile in run order: node_type, name, avg_ms, percent, times_called."""
        try:
            rows = self._db.execute("SELECT node_type, name, avg_ms, percent, times_called FROM device_op_profiles"
                                    " WHERE key = ? ORDER BY position", (key,)).fetchall()
        except sqlite3.OperationalError as exc:  # a read-only store written before op profiles were kept
            if "no such table" in str(exc):
                return []
            raise
        return [dict(zip(("node_type", "name", "avg_ms", "percent", "times_called"), r)) for r in rows]

    def device_results(self, model: str | None = None, status: str | None = None) -> list[dict]:
        query, args = "SELECT record FROM device_results WHERE 1", []
        for column, value in (("model", model), ("status", status)):
            if value is not None:
                query += f" AND {column} = ?"
                args.append(value)
        return [json.loads(r) for (r,) in self._db.execute(query + " ORDER BY finished", args)]

    def put_probe(self, device: str, record: dict) -> None:
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO device_probes (device, record, probed) VALUES (?, ?, ?)",
                             (device, json.dumps(record), time.time()))

    def probes(self) -> dict[str, dict]:
        return {d: json.loads(r) for d, r in self._db.execute("SELECT device, record FROM device_probes")}

    # Cell claims: which ``facebench run`` computes a cell now (see facebench/results/isolation.py).

    def claim_cell(self, cell: str, token: str, pid: int, host: str, stale_s: float,
                   is_dead: Callable[[int, str], bool]) -> Claim | None:
        """Claim ``cell`` for the run ``token``: None when it is now ours, else the live claim that holds it.

        A claim is taken over when its heartbeat is older than ``stale_s`` seconds or
        ``is_dead(pid, host)`` says its owner is gone; the check and the write are one
        transaction (BEGIN IMMEDIATE), so two runs never both win a cell."""
        now = time.time()
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            row = self._db.execute("SELECT cell, pid, host, token, since, heartbeat FROM claims WHERE cell = ?",
                                   (cell,)).fetchone()
            if row is not None:
                held = Claim(*row)
                if held.token != token and held.heartbeat >= now - stale_s and not is_dead(held.pid, held.host):
                    return held
            self._db.execute("INSERT OR REPLACE INTO claims (cell, pid, host, token, since, heartbeat)"
                             " VALUES (?, ?, ?, ?, ?, ?)", (cell, pid, host, token, now, now))
        return None

    def heartbeat_claims(self, token: str) -> None:
        """The run ``token`` is alive: refresh its claims."""
        with self._db:
            self._db.execute("UPDATE claims SET heartbeat = ? WHERE token = ?", (time.time(), token))

    def release_claim(self, cell: str, token: str) -> None:
        with self._db:
            self._db.execute("DELETE FROM claims WHERE cell = ? AND token = ?", (cell, token))

    def claims(self) -> list[Claim]:
        return [Claim(*r) for r in self._db.execute("SELECT cell, pid, host, token, since, heartbeat FROM claims")]


def _run(row) -> Run:
    (key, model, protocol, phash, fp, runtime, card, status, metrics, env, n_items, n_fail, started, finished,
     key_parts, used) = row
    return Run(key, model, protocol, phash, fp, runtime, json.loads(card), status,
               json.loads(metrics) if metrics else None, json.loads(env) if env else None,
               n_items, n_fail, started, finished, json.loads(key_parts) if key_parts else None, used)


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
