"""WIDER FACE evaluation, reproducing the official eval tool (``wider_eval.m``).

The procedure, per setting (easy / medium / hard):

1. Scores are min-max normalised over every prediction of the dataset.
2. In each image, the faces listed in the setting's ``gt_list`` count; every
   other face is ignored. Each prediction is matched to its highest-IoU face
   (IoU on inclusive pixel boxes: x1 = x + w, areas (w + 1)(h + 1), as the
   tool's ``boxoverlap``). At IoU >= 0.5 on an ignored face it stops being a
   proposal; on a counted face it recalls that face if no earlier prediction
   did. Images without faces or without predictions are skipped (their faces
   still count as missed).
3. At 1,000 thresholds ``1 - t / 1000`` the predictions scoring at or above
   the threshold give precision = recalled faces / proposals and recall =
   recalled faces / counted faces; AP is the VOC all-point area under that
   curve.

Where this can differ from the MATLAB tool, deliberately:

* Predictions are sorted by score within each image (stable, so ties keep file
  order). The tool walks them in file order and takes the *last* one above a
  threshold as the cut, so an unsorted file silently changes its result; on
  files sorted by descending score, as detectors write them, the two agree.
* If every prediction has the same score the tool divides 0 by 0 and scores
  nothing (AP 0); here such predictions count at every threshold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from facebench.metrics.detection import (
    average_precision,
    corners_from_xywh,
    overlap_pairs,
)

SETTINGS = ("easy", "medium", "hard")


@dataclass(frozen=True)
class WiderCurve:
    """One setting's result: AP and the curve at each threshold."""

    ap: float
    thresholds: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    faces: int


def evaluate_wider(gt_boxes: Sequence[np.ndarray], kept: Mapping[str, Sequence[np.ndarray]],
                   predictions: Sequence[np.ndarray | None], iou_threshold: float = 0.5,
                   n_thresholds: int = 1000) -> dict[str, WiderCurve]:
    """Official-procedure WIDER AP per setting.

    ``gt_boxes[i]`` is image i's (n, 4) boxes as (x, y, w, h); ``kept[setting][i]``
    the 0-based indices of the faces that count in that setting;
    ``predictions[i]`` an (m, 5) array of (x, y, w, h, score), or None/empty.
    """
    n_images = len(gt_boxes)
    if len(predictions) != n_images or any(len(k) != n_images for k in kept.values()):
        raise ValueError("gt_boxes, predictions and every kept list need one entry per image")
    preds = [np.zeros((0, 5)) if p is None else np.asarray(p, dtype=np.float64).reshape(-1, 5)
             for p in predictions]
    scores = np.concatenate([p[:, 4] for p in preds]) if preds else np.zeros(0)
    if not np.all(np.isfinite(scores)):
        raise ValueError("prediction scores must be finite")
    lo, hi = (scores.min(), scores.max()) if scores.size else (0.0, 1.0)

    # Per prediction (shared by all settings), in per-image score order: its
    # normalised score and its best face (global index) at IoU >= threshold.
    # Predictions in images without faces are dropped, as the tool skips those images.
    gts = [np.asarray(g, dtype=np.float64).reshape(-1, 4) for g in gt_boxes]
    n_gt = np.array([len(g) for g in gts], np.int64)
    offsets = np.r_[0, np.cumsum(n_gt)[:-1]].astype(np.int64)
    preds = [p if len(g) else p[:0] for p, g in zip(preds, gts)]
    det_img = np.repeat(np.arange(n_images), [len(p) for p in preds])
    raw = np.concatenate(preds) if preds else np.zeros((0, 5))
    norm_scores = (raw[:, 4] - lo) / (hi - lo) if hi > lo else np.ones(len(raw))
    order = np.lexsort((np.arange(len(raw)), -norm_scores, det_img))
    raw, norm_scores = raw[order], norm_scores[order]
    per_image = np.split(corners_from_xywh(raw), np.cumsum([len(p) for p in preds])[:-1]) if preds else []
    pairs = overlap_pairs([corners_from_xywh(g) for g in gts], per_image, iou_threshold, plus_one=True)
    best_face, _ = pairs.best_per_detection(len(raw))
    hit = best_face >= 0

    thresholds = 1 - np.arange(1, n_thresholds + 1) / n_thresholds
    # A prediction counts at threshold t (0-based) iff score >= thresholds[t],
    # i.e. for t >= first[p]: thresholds decrease with t.
    first = n_thresholds - np.searchsorted(thresholds[::-1], norm_scores, side="right")

    out = {}
    for setting, kept_lists in kept.items():
        idx = [np.asarray(k, dtype=np.int64).reshape(-1) for k in kept_lists]
        counts = np.zeros(int(n_gt.sum()), bool)
        if idx:
            counts[np.concatenate(idx) + np.repeat(offsets, [len(k) for k in idx])] = True
        n_faces = int(sum(len(k) for k in idx))
        on_counted = hit & counts[best_face]
        proposal = ~(hit & ~counts[best_face])
        recalled = np.zeros(len(best_face), bool)
        claims = np.flatnonzero(on_counted)
        _, first_claim = np.unique(best_face[claims], return_index=True)
        recalled[claims[first_claim]] = True
        n_props = np.cumsum(np.bincount(first, weights=proposal, minlength=n_thresholds + 1))[:n_thresholds]
        n_tp = np.cumsum(np.bincount(first, weights=recalled, minlength=n_thresholds + 1))[:n_thresholds]
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = n_tp / n_props
        recall = n_tp / max(n_faces, 1)
        out[setting] = WiderCurve(ap=average_precision(precision, recall, "voc"), thresholds=thresholds,
                                  precision=precision, recall=recall, faces=n_faces)
    return out
