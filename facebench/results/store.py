"""The results store: one SQLite file holding every run and every item.

A run is keyed by what its numbers depend on: the model card, the runtime,
the protocol's content hash and the dataset fingerprint. Items are written
batch by batch, each batch in one transaction, so an interrupted run (Ctrl-C,
kill) leaves a readable store and the next run only does the items that are
missing. A run is marked complete, with its metrics, in a last transaction.
Device-farm measurements (one per model, device, settings and repeat) and the
latest probe of each device live in the same file, so the leaderboard shows
phone latency next to accuracy.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

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
    finished REAL
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
CREATE TABLE IF NOT EXISTS device_results (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    device TEXT NOT NULL,
    status TEXT NOT NULL,
    record TEXT NOT NULL,
    finished REAL
);
CREATE TABLE IF NOT EXISTS device_probes (
    device TEXT PRIMARY KEY,
    record TEXT NOT NULL,
    probed REAL
);
"""


RUN_COLUMNS = ("key, model, protocol, protocol_hash, dataset_fingerprint, runtime, card, status, metrics, environment,"
               " n_items, n_failures, started, finished")


def run_key(card: dict, runtime: str, protocol_hash: str, dataset_fingerprint: str) -> str:
    payload = json.dumps([card, runtime, protocol_hash, dataset_fingerprint], sort_keys=True)
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


class Store:
    """One SQLite file of runs, items and device measurements (see the module docstring).

    A run's life: :meth:`start_run` (status running), :meth:`add_items` per
    batch, :meth:`complete_run` with metrics, per-item numbers and curves. A
    reader uses :meth:`runs`, :meth:`items`, :meth:`item_metrics` and
    :meth:`curves`. Use it as a context manager, one per process or thread.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(runs)")}
        if "curves" not in columns:  # a store written before curves were kept
            try:
                with self._db:
                    self._db.execute("ALTER TABLE runs ADD COLUMN curves TEXT")
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
                  runtime: str, card: dict, environment: dict) -> None:
        with self._db:
            self._db.execute(
                "INSERT INTO runs (key, model, protocol, protocol_hash, dataset_fingerprint, runtime, card, status,"
                " environment, started) VALUES (?, ?, ?, ?, ?, ?, ?, 'running', ?, ?)"
                " ON CONFLICT(key) DO UPDATE SET status = 'running', environment = excluded.environment",
                (key, model, protocol, protocol_hash, fingerprint, runtime, json.dumps(card),
                 json.dumps(environment), time.time()))

    def delete_run(self, key: str) -> None:
        with self._db:
            self._db.execute("DELETE FROM items WHERE run_key = ?", (key,))
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

    def item_keys(self, key: str) -> set[str]:
        return {item for (item,) in self._db.execute("SELECT item FROM items WHERE run_key = ?", (key,))}

    def failures(self, key: str) -> list[tuple[str, str]]:
        rows = self._db.execute("SELECT item, error FROM items WHERE run_key = ? AND error IS NOT NULL", (key,))
        return [(item, error) for item, error in rows]

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

    def put_device_result(self, record: dict) -> None:
        """One farm measurement (see :class:`facebench.farm.bench.Measurement`), replacing an older one."""
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO device_results (key, model, device, status, record, finished)"
                             " VALUES (?, ?, ?, ?, ?, ?)", (record["key"], record["model"], record["device"],
                                                            record["status"], json.dumps(record), record["finished"]))

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


def _run(row) -> Run:
    (key, model, protocol, phash, fp, runtime, card, status, metrics, env, n_items, n_fail, started, finished) = row
    return Run(key, model, protocol, phash, fp, runtime, json.loads(card), status,
               json.loads(metrics) if metrics else None, json.loads(env) if env else None,
               n_items, n_fail, started, finished)


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
