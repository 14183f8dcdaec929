"""FDDB discrete ROC: best one-to-one matching, true positives against false positives.

FDDB's evaluator (``evaluate`` from the benchmark's site) rasterises its
ellipse annotations; facebench works on boxes, with this rule:

* an annotated ellipse (major radius a, minor radius b, angle theta, centre
  cx, cy) becomes the axis-aligned box that bounds it exactly: half-width
  sqrt(a² cos² θ + b² sin² θ), half-height sqrt(a² sin² θ + b² cos² θ);
* a detection given as an ellipse is converted the same way; a rectangle
  (left, top, width, height) is used as is.

Per image and per detection-score threshold, the detections scoring at or
above it are matched one-to-one to the faces by the assignment that maximises
the summed IoU (Hungarian, ``scipy.optimize.linear_sum_assignment``), as
FDDB's evaluator does with its region overlap ratio. A matched pair is a true
positive when its IoU exceeds 0.5 (the discrete score); every other
detection above the threshold is a false positive. The dataset curve sums the
images' counts at each threshold (the evaluator's ``Results::merge``).

Because the assignment maximises summed overlap, not the number of pairs over
0.5, adding a detection can lower an image's true-positive count (two weak
overlaps can outweigh one good one); the evaluator behaves the same way.
The remaining difference from it is geometric: IoU of boxes here, overlap of
rasterised regions there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from facebench.metrics.detection import box_iou


def ellipse_to_box(ellipses: np.ndarray) -> np.ndarray:
    """(n, 5) ellipses (a, b, theta, cx, cy) -> (n, 4) bounding boxes (x0, y0, x1, y1)."""
    e = np.asarray(ellipses, dtype=np.float64).reshape(-1, 5)
    a, b, theta, cx, cy = e.T
    c, s = np.cos(theta), np.sin(theta)
    hw = np.sqrt((a * c) ** 2 + (b * s) ** 2)
    hh = np.sqrt((a * s) ** 2 + (b * c) ** 2)
    return np.stack([cx - hw, cy - hh, cx + hw, cy + hh], axis=1)


@dataclass(frozen=True)
class FddbROC:
    """Discrete ROC over decreasing score thresholds."""

    thresholds: np.ndarray
    true_positives: np.ndarray
    false_positives: np.ndarray
    faces: int

    @property
    def tpr(self) -> np.ndarray:
        return self.true_positives / max(self.faces, 1)

    def tpr_at(self, false_positives: int) -> float:
        """Highest true-positive rate reached with at most that many false positives."""
        ok = self.false_positives <= false_positives
        return float(self.tpr[ok].max()) if ok.any() else 0.0


def image_counts(det_boxes: np.ndarray, det_scores: np.ndarray, gt_boxes: np.ndarray,
                 overlap: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image: its distinct thresholds (decreasing) and TP, FP at each."""
    det_boxes = np.asarray(det_boxes, dtype=np.float64).reshape(-1, 4)
    det_scores = np.asarray(det_scores, dtype=np.float64).reshape(-1)
    order = np.argsort(-det_scores, kind="stable")
    det_boxes, det_scores = det_boxes[order], det_scores[order]
    iou = box_iou(det_boxes, gt_boxes)
    thresholds = np.unique(det_scores)[::-1]
    tp = np.zeros(len(thresholds), np.int64)
    fp = np.zeros(len(thresholds), np.int64)
    for k, t in enumerate(thresholds):
        n = int(np.searchsorted(-det_scores, -t, side="right"))  # detections scoring >= t
        if len(gt_boxes):
            rows, cols = linear_sum_assignment(iou[:n], maximize=True)
            tp[k] = int(np.sum(iou[rows, cols] > overlap))
        fp[k] = n - tp[k]
    return thresholds, tp, fp


def evaluate_fddb(gt_boxes: Sequence[np.ndarray], det_boxes: Sequence[np.ndarray],
                  det_scores: Sequence[np.ndarray], overlap: float = 0.5) -> FddbROC:
    """Discrete ROC over a set of images (lists are per image)."""
    all_t, all_dtp, all_dfp = [], [], []
    faces = 0
    for gt, det, score in zip(gt_boxes, det_boxes, det_scores):
        gt = np.asarray(gt, dtype=np.float64).reshape(-1, 4)
        faces += len(gt)
        if len(np.asarray(score).reshape(-1)) == 0:
            continue
        t, tp, fp = image_counts(det, score, gt, overlap)
        # per-image curves are step functions of the threshold: store the steps
        all_t.append(t)
        all_dtp.append(np.diff(tp, prepend=0))
        all_dfp.append(np.diff(fp, prepend=0))
    if not all_t:
        return FddbROC(np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64), faces)
    t = np.concatenate(all_t)
    order = np.argsort(-t, kind="stable")
    t = t[order]
    tp = np.cumsum(np.concatenate(all_dtp)[order])
    fp = np.cumsum(np.concatenate(all_dfp)[order])
    last = np.r_[t[1:] != t[:-1], True]  # one point per distinct threshold
    return FddbROC(thresholds=t[last], true_positives=tp[last], false_positives=fp[last], faces=faces)
