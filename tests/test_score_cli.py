"""`facebench score`: prediction files from other tools, scored against ground-truth files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from scipy.io import savemat

from facebench.cli import main

from conftest import SHARED

WIDER_GT = SHARED / "wider-face-val-gt"


def _cells(items):
    out = np.empty((len(items), 1), dtype=object)
    for i, item in enumerate(items):
        out[i, 0] = item
    return out


def write_wider_gt(folder, events):
    """Eval-tool .mat files for ``events``: {event: {image: (boxes xywh, {setting: 1-based idx})}}."""
    folder.mkdir(parents=True, exist_ok=True)
    names = list(events)
    main_mat = {
        "event_list": _cells([np.array([e]) for e in names]),
        "file_list": _cells([_cells([np.array([img]) for img in events[e]]) for e in names]),
        "face_bbx_list": _cells([_cells([np.asarray(b, np.int32) for b, _ in events[e].values()]) for e in names]),
    }
    savemat(folder / "wider_face_val.mat", main_mat)
    for setting in ("easy", "medium", "hard"):
        gt_list = _cells([_cells([np.asarray(k[setting], np.uint16).reshape(-1, 1) for _, k in events[e].values()])
                          for e in names])
        savemat(folder / f"wider_{setting}_val.mat", {**main_mat, "gt_list": gt_list})


def write_wider_pred(folder, event, image, rows):
    (folder / event).mkdir(parents=True, exist_ok=True)
    body = "".join(f"{x} {y} {w} {h} {s}\n" for x, y, w, h, s in rows)
    (folder / event / f"{image}.txt").write_text(f"{image}\n{len(rows)}\n{body}")


@pytest.fixture
def wider_case(tmp_path):
    gt = {"0--Parade": {"a": ([[0, 0, 20, 20], [100, 0, 20, 20]], {"easy": [1], "medium": [1, 2], "hard": [1, 2]}),
                        "b": ([[10, 10, 30, 30]], {"easy": [1], "medium": [1], "hard": [1]})},
          "1--Handshaking": {"c": ([[50, 50, 10, 10]], {"easy": [], "medium": [], "hard": [1]})}}
    write_wider_gt(tmp_path / "gt", gt)
    pred = tmp_path / "pred"
    write_wider_pred(pred, "0--Parade", "a", [(0, 0, 20, 20, 0.9), (100, 0, 20, 20, 0.8), (300, 300, 5, 5, 0.1)])
    write_wider_pred(pred, "0--Parade", "b", [(10, 10, 30, 30, 0.7)])
    return tmp_path


def test_score_wider_from_files(wider_case):
    result = CliRunner().invoke(main, ["score", "wider", "--gt", str(wider_case / "gt"),
                                       "--pred", str(wider_case / "pred"), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    # image c has no prediction: its face is a miss in hard, and it is reported
    assert data["missing"] == ["1--Handshaking/c"] and data["unknown"] == []
    assert data["ap"]["easy"] == pytest.approx(1.0) and data["ap"]["medium"] == pytest.approx(1.0)
    assert data["ap"]["hard"] == pytest.approx(3 / 4)
    assert "1 images without a prediction" in result.stderr


def test_score_wider_reports_unknown_and_malformed_files(wider_case):
    pred = wider_case / "pred"
    write_wider_pred(pred, "9--Press", "zzz", [(0, 0, 5, 5, 0.5)])
    result = CliRunner().invoke(main, ["score", "wider", "--gt", str(wider_case / "gt"), "--pred", str(pred), "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["unknown"] == ["9--Press/zzz"]
    assert "not in the ground truth" in result.stderr
    bad = pred / "0--Parade" / "b.txt"
    bad.write_text("b\n1\n10 10 thirty 30 0.7\n")
    result = CliRunner().invoke(main, ["score", "wider", "--gt", str(wider_case / "gt"), "--pred", str(pred)])
    assert result.exit_code == 1
    assert f"{bad}:3" in result.output and "not numbers" in result.output
    bad.write_text("b\n2\n10 10 30 30 0.7\n")
    result = CliRunner().invoke(main, ["score", "wider", "--gt", str(wider_case / "gt"), "--pred", str(pred)])
    assert result.exit_code == 1 and f"{bad}:2: count says 2" in result.output


@pytest.mark.shared
@pytest.mark.skipif(not WIDER_GT.is_dir(), reason=f"{WIDER_GT} absent (real WIDER val ground truth)")
def test_score_wider_on_the_real_ground_truth(tmp_path):
    from facebench.datasets.wider import read_wider_eval_gt

    gt = read_wider_eval_gt(WIDER_GT)
    rng = np.random.default_rng(0)
    for key, boxes in zip(gt.keys, gt.boxes):
        event, image = key.split("/")
        scores = 0.5 + 0.5 * rng.random(len(boxes))
        write_wider_pred(tmp_path, event, image, [(*b, s) for b, s in zip(boxes.astype(int), scores)])
    result = CliRunner().invoke(main, ["score", "wider", "--gt", str(WIDER_GT), "--pred", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["predicted_images"] == 3226 and data["detections"] == 39708 and not data["missing"]
    # every face found; only hard loses its two unrecallable faces (a repeated box and a negative width)
    assert data["ap"]["easy"] == pytest.approx(1.0, abs=1e-3) and data["ap"]["hard"] < 1.0


def _write_fddb_folds(folder, ellipses):
    folder.mkdir()
    names = list(ellipses)
    for k in range(1, 11):
        mine = names[k - 1::10]
        (folder / f"FDDB-fold-{k:02d}.txt").write_text("".join(n + "\n" for n in mine))
        text = "".join(f"{n}\n{len(ellipses[n])}\n" + "".join(" ".join(map(str, e)) + "  1\n" for e in ellipses[n])
                       for n in mine)
        (folder / f"FDDB-fold-{k:02d}-ellipseList.txt").write_text(text)


def test_score_fddb_from_files(tmp_path):
    ellipses = {f"2002/08/11/big/img_{i}": [(20.0, 15.0, 0.0, 50.0 + i, 60.0)] for i in range(12)}
    _write_fddb_folds(tmp_path / "folds", ellipses)
    # rectangles exactly on the ellipse boxes for 10 images, one far-off detection, and one ellipse
    lines = []
    for i in range(10):
        lines += [f"2002/08/11/big/img_{i}", "1", f"{30 + i} 45 40 30 0.9"]
    lines += ["2002/08/11/big/img_10", "1", "20 15 0 62 60 0.8"]
    lines += ["2002/08/11/big/img_11", "1", "500 500 40 30 0.95"]
    pred = tmp_path / "out.txt"
    pred.write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(main, ["score", "fddb", "--gt", str(tmp_path / "folds"), "--pred", str(pred),
                                       "--fp", "0", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    # the highest-scoring detection is the false positive, so at 0 FP nothing is found yet
    assert data["tpr_at_fp"] == 0.0 and data["roc"]["tp"][-1] == 11 and data["roc"]["fp"][-1] == 1
    pred.write_text("2002/08/11/big/img_0\n2\n30 45 40 30 0.9\n")
    result = CliRunner().invoke(main, ["score", "fddb", "--gt", str(tmp_path / "folds"), "--pred", str(pred)])
    assert result.exit_code == 1 and f"{pred}:4" in result.output


def _write_pts(path, points):
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(f"{x + 1:.6f} {y + 1:.6f}\n" for x, y in points)
    path.write_text(f"version: 1\nn_points: {len(points)}\n{{\n{body}}}\n")


def test_score_landmarks_pts_folders_with_missing_and_unknown(tmp_path):
    rng = np.random.default_rng(0)
    gt = rng.uniform(50, 250, (4, 68, 2))
    iod = np.linalg.norm(gt[:, 36] - gt[:, 45], axis=1)
    for i in range(4):
        _write_pts(tmp_path / "gt" / f"img{i}.pts", gt[i])
    for i in range(3):  # img3 has no prediction
        _write_pts(tmp_path / "pred" / f"img{i}.pts", gt[i] + [0.02 * iod[i], 0])
    _write_pts(tmp_path / "pred" / "stray.pts", gt[0])
    result = CliRunner().invoke(main, ["score", "landmarks", "--gt", str(tmp_path / "gt"),
                                       "--pred", str(tmp_path / "pred"), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["scheme"] == "ibug68" and data["missing"] == ["img3"] and data["unknown"] == ["stray"]
    assert data["nme"] == pytest.approx(0.02, abs=1e-6) and data["nme_faces"] == 3
    assert data["fr"] == pytest.approx(0.25)  # the missing face fails
    text = CliRunner().invoke(main, ["score", "landmarks", "--gt", str(tmp_path / "gt"),
                                     "--pred", str(tmp_path / "pred")])
    assert "NME 2.000%" in text.stdout and "FR@0.08 25.00%" in text.stdout


def test_score_landmarks_npy_rows_with_yaw_bins_and_bad_input(tmp_path):
    rng = np.random.default_rng(1)
    gt = rng.uniform(0, 200, (6, 68, 2))
    np.save(tmp_path / "gt.npy", np.transpose(gt, (0, 2, 1)))  # (F, 2, N) as 3DDFA stores it
    box = np.sqrt(np.ptp(gt[..., 0], axis=1) * np.ptp(gt[..., 1], axis=1))
    np.save(tmp_path / "pred.npy", gt + (0.01 * np.arange(1, 7) * box)[:, None, None] * np.array([1.0, 0.0]))
    np.save(tmp_path / "yaw.npy", np.array([0, 10, 45, -50, 70, -89.0]))
    result = CliRunner().invoke(main, ["score", "landmarks", "--gt", str(tmp_path / "gt.npy"), "--pred",
                                       str(tmp_path / "pred.npy"), "--norm", "box", "--yaw", str(tmp_path / "yaw.npy"),
                                       "--json"])
    assert result.exit_code == 0, result.output
    bins = json.loads(result.stdout)["yaw_bins"]
    assert bins["[0,30]"] == pytest.approx(0.015) and bins["(60,90]"] == pytest.approx(0.055)
    assert bins["balanced"] == pytest.approx((0.015 + 0.035 + 0.055) / 3)
    np.save(tmp_path / "short.npy", gt[:5])
    result = CliRunner().invoke(main, ["score", "landmarks", "--gt", str(tmp_path / "gt.npy"), "--pred",
                                       str(tmp_path / "short.npy")])
    assert result.exit_code == 1 and "5 faces" in result.output and "gt.npy has 6" in result.output
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.pts").write_text("version: 1\nn_points: 68\n{\n1 2\n}\n")
    result = CliRunner().invoke(main, ["score", "landmarks", "--gt", str(tmp_path / "bad"),
                                       "--pred", str(tmp_path / "bad")])
    assert result.exit_code == 1 and "x.pts" in result.output and "68 points" in result.output
