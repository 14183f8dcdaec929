"""Honest leaderboard rows: one row per (model, protocol id, protocol hash, dataset fingerprint), stale
protocols kept apart, built-in ids not reusable, the published figures checked against their sources,
papers' rows in their own block, and AP with pycocotools' detection cap."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from facebench.metrics.detection import evaluate_detections
from facebench.protocol import ProtocolError, builtin_protocols, get_protocol
from facebench.report.leaderboard import latest_runs, leaderboard_rows, render
from facebench.report.reported import (
    OTHER_DATA,
    PROTOCOL_DATA,
    SEED,
    published,
    reported,
)
from facebench.results.store import Store

from conftest import SHARED
from pycocotools_reference import pycocotools_ap50

REPORTED_DIR = SHARED / "reported"
MINI_NME = Path(__file__).resolve().parent.parent / "protocols" / "mini-nme.toml"


# --- protocol files may not reuse a built-in id -----------------------------------------------------------

def test_a_file_reusing_a_builtin_id_with_other_content_is_refused(tmp_path):
    path = tmp_path / "mine.toml"
    changed = MINI_NME.read_text().replace("threshold = 0.08", "threshold = 0.10")
    assert changed != MINI_NME.read_text()
    path.write_text(changed)
    builtin = builtin_protocols()["mini-nme"].content_hash
    with pytest.raises(ProtocolError, match=rf"mine\.toml: id 'mini-nme' is a built-in protocol; this file's content "
                                            rf"differs \(hash \w+ vs {builtin}\): give it another id"):
        get_protocol(str(path))
    path.write_text("# the same content, other layout\n" + MINI_NME.read_text())
    assert get_protocol(str(path)).content_hash == builtin
    path.write_text(MINI_NME.read_text().replace('id = "mini-nme"', 'id = "mini-nme-010"')
                    .replace("threshold = 0.08", "threshold = 0.10"))
    assert get_protocol(str(path)).id == "mini-nme-010"


# --- row keys, stale protocols, several copies of a dataset ----------------------------------------------

def _add_run(store: Store, path: Path, key: str, model: str, protocol: str, phash: str, fingerprint: str,
             metrics: dict, n_items: int, finished: float) -> None:
    store.start_run(key, model, protocol, phash, fingerprint, "tflite", {"name": model, "macs": {"m": 1_000_000}}, {})
    store.complete_run(key, metrics, {}, n_items, 0)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE runs SET finished = ? WHERE key = ?", (finished, key))


def _store(tmp_path) -> tuple[Store, Path]:
    path = tmp_path / "s.sqlite"
    return Store(path), path


def test_rows_are_keyed_on_protocol_hash_and_dataset_fingerprint(tmp_path):
    nme = builtin_protocols()["mini-nme"]
    store, path = _store(tmp_path)
    with store:
        # a full copy, then a 3-face debug copy later: both stay, each its own row
        _add_run(store, path, "full", "face-mesh", "mini-nme", nme.content_hash, "fp-full-2500",
                 {"nme": 0.05, "faces": 2500, "framing": "ground-truth tight-68", "points": 68}, 2500, 100.0)
        _add_run(store, path, "debug", "face-mesh", "mini-nme", nme.content_hash, "fp-debug-3",
                 {"nme": 0.01, "faces": 3}, 3, 200.0)
        # an older card on the full copy: replaced by the newer run of the same key
        _add_run(store, path, "old-card", "face-mesh", "mini-nme", nme.content_hash, "fp-full-2500",
                 {"nme": 0.07, "faces": 2500}, 2500, 50.0)
        # a run of an earlier content of the protocol (or of a user's file that reused the id)
        _add_run(store, path, "stale", "face-mesh", "mini-nme", "0123456789abcdef", "fp-full-2500",
                 {"nme": 0.001, "faces": 2500}, 2500, 300.0)
        assert {r.key for r in latest_runs(store.runs())} == {"full", "debug", "stale"}
        rows = leaderboard_rows(store, "mini-nme", include_reported=False)
        current = leaderboard_rows(store, "mini-nme", include_reported=False, include_stale=False)
    measured = {r["run_key"]: r for r in rows if r["kind"] == "measured"}
    assert set(measured) == {"full", "debug"} and [r["run_key"] for r in current] == ["debug", "full"]
    assert [(r["run_key"], r["status"]) for r in rows if r["kind"] == "stale"] == [("stale", "stale protocol")]
    assert measured["full"]["faces"] == 2500 and measured["debug"]["faces"] == 3
    assert measured["full"]["framing"] == "ground-truth tight-68" and measured["full"]["points"] == 68
    assert measured["debug"]["framing"] == "" and measured["debug"]["points"] is None
    md = render(rows, "md")
    assert "### Measured here" in md and "### Stale protocol (not current)" in md
    header = next(line for line in md.splitlines() if line.startswith("| model | kind | nme (%) |"))
    assert "| framing |" in header and "| dataset (faces) |" in header
    assert "| fp-full-2500 (2500 faces) |" in md and "| fp-debug-3 (3 faces) |" in md
    assert "| ground-truth tight-68 |" in md
    stale_line = next(line for line in md.splitlines() if "| stale protocol |" in line)
    assert "| 0.10 |" in stale_line and "protocol 0123456789abcdef: stale protocol" in stale_line
    # the stale row never reaches the measured table
    measured_block = md.split("### Stale protocol")[0]
    assert "| 0.10 |" not in measured_block and "| 5.00 |" in measured_block  # NME in %


def test_a_protocol_files_runs_are_checked_against_the_file_given(tmp_path):
    from facebench.cli import main

    proto = tmp_path / "mine.toml"
    proto.write_text(MINI_NME.read_text().replace('id = "mini-nme"', 'id = "mine"'))
    mine = get_protocol(str(proto))
    store, path = _store(tmp_path)
    with store:
        _add_run(store, path, "now", "face-mesh", "mine", mine.content_hash, "fp", {"nme": 0.05, "faces": 4}, 4, 2.0)
        _add_run(store, path, "before", "face-mesh", "mine", "ffffffffffffffff", "fp", {"nme": 0.04, "faces": 4}, 4,
                 1.0)
    out = CliRunner().invoke(main, ["leaderboard", "--store", str(path), "-p", str(proto), "--format", "json"])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.output)["rows"]
    assert {(r["run_key"], r["status"]) for r in rows if r["kind"] != "reported"} == {
        ("now", "current"), ("before", "stale protocol")}
    # without the file the content cannot be checked: both shown, marked so
    out = CliRunner().invoke(main, ["leaderboard", "--store", str(path), "-p", "mine", "--format", "json"])
    assert {r["status"] for r in json.loads(out.output)["rows"]} == {"protocol file not given"}


# --- reported rows -------------------------------------------------------------------------------------

SCORER_KEYS = {"nme", "fr", "auc", "common_nme", "challenging_nme", "yaw[0,30]", "yaw(30,60]", "yaw(60,90]",
               "yawbalanced", "easy", "medium", "hard", "tpr@1000", "tpr@500", "tpr@100", "ap50", "jitter", "all",
               "lips", "eyes"} | {f"{s}_{k}" for s in ("pose", "expression", "illumination", "makeup", "occlusion",
                                                    "blur") for k in ("nme", "fr", "auc")}


def test_reported_rows_sit_on_the_protocol_they_were_measured_on():
    protocols = builtin_protocols()
    rows = reported()
    assert len(SEED) == 12 and len(rows) > 90
    for r in rows:
        assert r.protocol in protocols or r.protocol in OTHER_DATA, r
        assert set(r.metrics) <= SCORER_KEYS, r
        assert all(0 <= v <= 1 for v in r.metrics.values()), r  # fractions
        if r.protocol in PROTOCOL_DATA:
            assert r.dataset and r.source
    # BlazeFace's paper figures were measured on its own front-camera set: not on the mini photos
    assert not [r for r in rows
                if r.model.startswith("BlazeFace (paper)") and r.protocol in ("mini-ap50", "jitter-shift")]
    assert {r.protocol for r in SEED if r.model == "BlazeFace (paper)"} == {"blazeface-paper-front-camera"}
    counts: dict[str, int] = {}
    for r in published():
        counts[r.protocol] = counts.get(r.protocol, 0) + 1
    assert set(counts) == {"300w-io", "300w-ip", "wflw-io", "aflw2000-3d", "cofw-io", "wider-ap50", "fddb-roc"}
    # disagreements stay separate rows: HRNet on 300-W from its README and from STAR's table
    hrnet = sorted(round(r.metrics["nme"], 4) for r in published() if r.model == "HRNet" and r.protocol == "300w-io")
    assert hrnet == [0.0332, 0.0334]
    # every WIDER figure names its test setting; settings are groups, never one mixed table
    assert all(r.group for r in published() if r.protocol == "wider-ap50")
    assert any(r.image_read for r in published()) and not all(r.image_read for r in published())


def _shared_rows() -> list[dict]:
    rows = []
    for path in sorted(REPORTED_DIR.glob("*.csv")):
        with path.open(newline="", encoding="utf-8") as f:
            rows += [dict(row, shared_file=path.name) for row in csv.DictReader(f)]
    return rows


def _shipped_lines() -> list[dict]:
    from importlib import resources

    text = resources.files("facebench.report").joinpath("reported_results.csv").read_text(encoding="utf-8")
    return list(csv.DictReader(text.splitlines()))


SHARED_METRIC = {  # facebench metric -> the shared files' label (prefix)
    "nme": ("NME_full", "NME"), "common_nme": ("NME_common",), "challenging_nme": ("NME_challenging",),
    "fr": ("FR@0.1_full", "FR@0.1"), "auc": ("AUC@0.1_full", "AUC@0.1"),
    "yaw[0,30]": ("NME_yaw_0_30",), "yaw(30,60]": ("NME_yaw_30_60",), "yaw(60,90]": ("NME_yaw_60_90",),
    "yawbalanced": ("NME_mean",), "easy": ("AP_easy",), "medium": ("AP_medium",), "hard": ("AP_hard",),
    "tpr@1000": ("TPR@1000FP",), "gflops": ("GFLOPs",), "params": ("Params",),
}


def _shared_labels(metric: str) -> tuple[str, ...]:
    if metric in SHARED_METRIC:
        return SHARED_METRIC[metric]
    subset, kind = metric.rsplit("_", 1)
    return ({"nme": f"NME_{subset}", "fr": f"FR@0.1_{subset}", "auc": f"AUC@0.1_{subset}"}[kind],)


@pytest.mark.shared
@pytest.mark.skipif(not REPORTED_DIR.is_dir(), reason="../shared/data/reported is not beside the checkout")
def test_every_shipped_figure_is_its_sources_figure():
    """Each shipped line has a shared row with the same method, variant, source, normalisation text,
    image mark and metric, whose value converted to a fraction (percent / 100) is the shipped value."""
    shared = _shared_rows()
    lines = _shipped_lines()
    assert len(lines) + 42 == len(shared) == 414  # 42 left out, each with a reason (benchmarks/import_reported.py)
    used = set()
    for line in lines:
        candidates = [i for i, s in enumerate(shared)
                      if (s["method"], s["variant"], s["source_title"], s["source_location"], s["normalisation"],
                          s["shared_file"]) == (line["method"], line["variant"], line["source_title"],
                                                line["source_location"], line["normalisation"], line["shared_file"])
                      and s["metric"].split(" ")[0] in _shared_labels(line["metric"])]
        matched = []
        for i in candidates:
            s = shared[i]
            value = float(s["value"])
            if line["unit"] == "fraction":
                value = value / 100 if "%" in s["unit"] else value
                assert "%" in s["unit"] or "fraction" in s["unit"], s
            elif line["unit"] == "count":
                value *= 1e6
            if abs(value - float(line["value"])) <= 1e-12 * max(1.0, abs(value)):
                matched.append(i)
        assert matched, f"no shared row gives {line}"
        i = next((i for i in matched if i not in used), matched[0])
        used.add(i)
        assert (line["image_read"] == "1") == shared[i]["quote"].startswith("[transcribed from image"), line
    assert len(used) == len(lines)  # one shared row per shipped line


@pytest.mark.shared
@pytest.mark.skipif(not REPORTED_DIR.is_dir(), reason="../shared/data/reported is not beside the checkout")
def test_the_shipped_file_is_what_the_generator_gives():
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    result = subprocess.run([sys.executable, str(root / "benchmarks" / "import_reported.py"), "--check",
                             "--shared", str(REPORTED_DIR)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "372 figures kept" in result.stdout and "42 left out" in result.stdout


def test_reported_rows_are_a_separate_block_with_data_points_and_delta(tmp_path):
    ap = builtin_protocols()["mini-ap50"]
    io_ = builtin_protocols()["300w-io"]
    store, path = _store(tmp_path)
    with store:
        _add_run(store, path, "b", "blazeface-short", "mini-ap50", ap.content_hash, "fp", {"ap50": 0.75, "faces": 4},
                 4, 1.0)
        _add_run(store, path, "m", "face-mesh", "300w-io", io_.content_hash, "fp3",
                 {"nme": 0.04, "faces": 689, "framing": "ground-truth tight-68 -> face-mesh crop", "points": 68}, 689,
                 1.0)
        rows = leaderboard_rows(store)
    md = render(rows, "md")
    mini = md.split("## mini-ap50")[1].split("\n## ")[0]
    assert "BlazeFace (paper)" not in mini and "98.61" not in mini
    front = md.split("## blazeface-paper-front-camera")[1].split("\n## ")[0]
    assert "BlazeFace (paper)" in front and "98.61" in front and "front-camera" in front
    section = md.split("## 300w-io")[1].split("\n## ")[0]
    measured, rep = section.split("### Reported (not measured here)")
    assert "| face-mesh | measured | " in measured and "HRNet" not in measured
    assert "ground-truth tight-68 -> face-mesh crop" in measured
    hrnet = next(line for line in rep.splitlines()
                 if line.startswith("| HRNet | reported | 2.91 | 5.11 | 3.34 |"))
    assert "nme -0.0066 vs best measured (face-mesh)" in hrnet
    assert "| 300-W test set: common 554 + challenging 135 = 689 faces | 68 |" in hrnet
    # WIDER: one labelled block per test setting
    assert "### Reported (not measured here): test setting VGA (640x480) input" in md
    assert "### Reported (not measured here): test setting multi-scale" in md
    html_out = render(rows, "html")
    assert 'data-block="reported"' in html_out and '<tr class="reported">' in html_out
    csv_out = render([r for r in rows if r["kind"] == "measured"], "csv")
    assert csv_out.splitlines()[0].startswith("protocol,model,kind,")


def test_same_family_delta(tmp_path):
    from facebench.report.leaderboard import Row, versus_measured

    protocol = builtin_protocols()["attention-regions"]
    measured = [Row("attention-mesh", "attention-regions", "measured", metrics={"all": 0.02}),
                Row("dlib-68", "attention-regions", "measured", metrics={"all": 0.01})]
    row = Row("Attention Mesh (paper)", "attention-regions", "reported", metrics={"all": 0.0311})
    text = versus_measured(row, measured, protocol)
    assert text == "all +0.0211 vs best measured (dlib-68); +0.0111 vs same family (attention-mesh)"


# --- AP with pycocotools' per-image detection cap --------------------------------------------------------

def _crowded(seed: int):
    rng = np.random.default_rng(seed)
    gts, dets, scores = [], [], []
    for n_faces, n_dets in ((40, 160), (5, 30), (60, 240)):
        xy = rng.uniform(0, 900, (n_faces, 2))
        wh = rng.uniform(8, 60, (n_faces, 2))
        gt = np.concatenate([xy, xy + wh], axis=1)
        pick = rng.integers(0, n_faces, n_dets)
        jitter = rng.normal(0, 0.2, (n_dets, 4)) * np.repeat(wh[pick], 2, axis=1)
        det = gt[pick] + jitter
        det[:, 2:] = np.maximum(det[:, 2:], det[:, :2] + 1)
        gts.append(gt)
        dets.append(det)
        scores.append(rng.uniform(0, 1, n_dets).round(2))  # ties, as real scores have
    return gts, dets, scores


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_max_detections_equals_pycocotools_maxdets(seed):
    gts, dets, scores = _crowded(seed)
    assert max(len(d) for d in dets) > 100
    capped = evaluate_detections(gts, dets, scores, rule="coco", ap="coco101", max_detections=100)
    uncapped = evaluate_detections(gts, dets, scores, rule="coco", ap="coco101")
    assert capped.ap == pytest.approx(pycocotools_ap50(gts, dets, scores, max_dets=100), abs=1e-12)
    assert uncapped.ap == pytest.approx(pycocotools_ap50(gts, dets, scores, max_dets=10_000), abs=1e-12)
    assert capped.ap != uncapped.ap
    # the dropped detections are labelled IGNORED, in input order
    assert [int(np.sum(lab != -1) <= 100) for lab in capped.labels] == [1, 1, 1]


def test_max_detections_is_a_protocol_option(tmp_path):
    from facebench.scoring import score
    from facebench.types import Box, Detection, Face, Prediction, Sample

    path = tmp_path / "capped.toml"
    path.write_text('id = "capped"\ntitle = "t"\ndataset = "mini"\ntask = "detector"\nmetric = "ap"\n'
                    '[options]\niou_threshold = 0.5\nrule = "coco"\nap_method = "coco101"\nmax_detections = 2\n')
    protocol = get_protocol(str(path))
    assert protocol.options["max_detections"] == 2
    bad = tmp_path / "bad.toml"
    bad.write_text(path.read_text().replace("max_detections = 2", 'max_detections = "2"'))
    with pytest.raises(ProtocolError, match="options.max_detections must be int"):
        get_protocol(str(bad))
    face = Face(box=Box(0, 0, 10, 10))
    sample = Sample(id="a", faces=(face,), image=lambda: np.zeros((20, 20, 3), np.uint8))
    # the true detection has the lowest of three scores: a cap of 2 drops it
    dets = (Detection(Box(50, 50, 60, 60), 0.9), Detection(Box(70, 70, 80, 80), 0.8), Detection(Box(0, 0, 10, 10), 0.7))
    metrics, per_item = score(protocol, [sample], {"a": Prediction(detections=dets)})
    assert metrics["ap50"] == 0.0 and per_item["a"]["ignored"] == 1
