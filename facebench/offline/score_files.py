"""Score prediction files against ground-truth files, with no adapter involved.

The functions behind ``facebench score``: each reads the files, pairs
predictions with ground truth by image, runs the metric, and returns a plain
dict. Pairing is strict and visible: a prediction for an image the ground
truth lacks is listed under ``unknown``; an image with no prediction is
scored as an empty answer (its faces are misses) and listed under ``missing``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from facebench.datasets.fddb import read_fddb_folds
from facebench.datasets.wider import read_wider_eval_gt
from facebench.metrics import landmarks as lm
from facebench.metrics.detection import corners_from_xywh
from facebench.metrics.fddb import ellipse_to_box, evaluate_fddb
from facebench.metrics.wider import SETTINGS, evaluate_wider
from facebench.offline.prediction_files import (
    PredictionFileError,
    read_fddb_predictions,
    read_landmarks,
    read_wider_predictions,
)
from facebench.schemes import scheme_for_size


def score_wider(gt_dir: str | Path, pred_dir: str | Path) -> dict:
    """Easy / medium / hard AP of a WIDER submission folder (official procedure)."""
    gt = read_wider_eval_gt(gt_dir)
    preds = read_wider_predictions(pred_dir)
    # "event/image" as written; else the image name alone (WIDER image names are unique)
    known = set(gt.keys)
    by_image = {k.split("/", 1)[1]: k for k in gt.keys}
    matched: dict[str, np.ndarray] = {}
    unknown = []
    for key, rows in preds.items():
        target = key if key in known else by_image.get(key.split("/", 1)[1])
        if target is None:
            unknown.append(key)
        else:
            matched[target] = rows
    missing = [k for k in gt.keys if k not in matched]
    curves = evaluate_wider(gt.boxes, gt.kept, [matched.get(k) for k in gt.keys])
    return {"ap": {s: curves[s].ap for s in SETTINGS}, "faces": {s: curves[s].faces for s in SETTINGS},
            "images": len(gt.keys), "predicted_images": len(matched),
            "detections": int(sum(len(v) for v in matched.values())),
            "unknown": unknown, "missing": missing}


def score_fddb(gt_dir: str | Path, pred_path: str | Path, false_positives: int = 1000) -> dict:
    """FDDB discrete ROC summary: TPR at ``false_positives``, and the curve."""
    gt = read_fddb_folds(gt_dir)
    preds = read_fddb_predictions(pred_path)
    unknown = [k for k in preds if k not in gt]
    missing = [k for k in gt if k not in preds]
    names = list(gt)
    det_boxes, det_scores = [], []
    for name in names:
        rows = preds.get(name, np.zeros((0, 5)))
        det_boxes.append(ellipse_to_box(rows[:, :5]) if rows.shape[1] == 6 else corners_from_xywh(rows))
        det_scores.append(rows[:, -1])
    roc = evaluate_fddb([ellipse_to_box(gt[n]) for n in names], det_boxes, det_scores)
    return {"tpr_at_fp": roc.tpr_at(false_positives), "fp": false_positives, "faces": roc.faces,
            "images": len(names), "detections": int(sum(len(s) for s in det_scores)),
            "roc": {"threshold": roc.thresholds.tolist(), "tp": roc.true_positives.tolist(),
                    "fp": roc.false_positives.tolist()},
            "unknown": unknown, "missing": missing}


def score_landmarks(gt_path: str | Path, pred_path: str | Path, norm: str = "inter-ocular",
                    scheme: str | None = None, threshold: float = 0.08, yaw_path: str | Path | None = None) -> dict:
    """NME, FR and AUC of predicted landmarks; optional AFLW2000-3D yaw bins."""
    gt_names, gt = read_landmarks(gt_path)
    pred_names, pred = read_landmarks(pred_path)
    unknown: list[str] = []
    if gt_names is None or pred_names is None:
        if len(gt) != len(pred):
            raise PredictionFileError(f"{pred_path}: {len(pred)} faces, ground truth {gt_path} has {len(gt)} "
                                      "(arrays are matched row by row)")
        missing: list[str] = []
        pred_full = pred
    else:
        index = {n: i for i, n in enumerate(pred_names)}
        known = set(gt_names)
        unknown = [n for n in pred_names if n not in known]
        missing = [n for n in gt_names if n not in index]
        pred_full = np.stack([pred[index[n]] if n in index else np.full(gt.shape[1:], np.nan) for n in gt_names])
    if pred_full.shape[1:] != gt.shape[1:]:
        raise PredictionFileError(f"{pred_path}: {pred_full.shape[1]} points per face, ground truth has {gt.shape[1]}")
    scheme = scheme or scheme_for_size(gt.shape[1])
    absent = np.isnan(pred_full).any(axis=(1, 2))
    errors = lm.nme(np.nan_to_num(pred_full, nan=0.0), gt, norm, scheme)
    errors[absent] = np.inf
    result: dict[str, Any] = {"scheme": scheme, "norm": norm, **lm.summarise_with_failures(errors, absent, threshold),
              "threshold": threshold, "unknown": unknown, "missing": missing}
    if yaw_path is not None:
        yaw = np.load(yaw_path).reshape(-1)
        if yaw.shape[0] != len(errors):
            raise PredictionFileError(f"{yaw_path}: {yaw.shape[0]} yaw angles for {len(errors)} faces")
        result["yaw_bins"] = lm.balanced_yaw_nme(errors, yaw)  # degrees, as AFLW2000-3D.pose.npy stores them
    return result
