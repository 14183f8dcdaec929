"""Detection metrics: IoU, per-image matching with ignored faces, and AP.

Pure numpy functions over arrays of corner-format boxes (x0, y0, x1, y1) in
the continuous pixel convention of :mod:`facebench.types` (areas without
"+1").

Matching follows the PASCAL VOC devkit: detections are visited by decreasing
score (ties keep input order: the sort is stable); each takes the ground-truth
face of highest IoU; at IoU >= threshold it is a true positive if that face is
unmatched, a false positive if it is already taken, and *ignored* (counted
neither way) if the face is marked ignore; below the threshold it is a false
positive.
"""

from __future__ import annotations

import numpy as np

TRUE_POSITIVE, FALSE_POSITIVE, IGNORED = 1, 0, -1


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (N, M) between (N, 4) and (M, 4) boxes."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ix0 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy0 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix1 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def match_image(det_boxes: np.ndarray, det_scores: np.ndarray, gt_boxes: np.ndarray,
                gt_ignore: np.ndarray | None = None, iou_threshold: float = 0.5) -> np.ndarray:
    """Label each detection TRUE_POSITIVE, FALSE_POSITIVE or IGNORED (input order)."""
    det_boxes = np.asarray(det_boxes, dtype=np.float64).reshape(-1, 4)
    gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    n_det, n_gt = len(det_boxes), len(gt_boxes)
    ignore = np.zeros(n_gt, bool) if gt_ignore is None else np.asarray(gt_ignore, bool)
    labels = np.full(n_det, FALSE_POSITIVE, dtype=np.int8)
    if n_det == 0 or n_gt == 0:
        return labels
    iou = box_iou(det_boxes, gt_boxes)
    taken = np.zeros(n_gt, bool)
    for d in np.argsort(-np.asarray(det_scores, dtype=np.float64), kind="stable"):
        g = int(np.argmax(iou[d]))
        if iou[d, g] < iou_threshold:
            continue
        if ignore[g]:
            labels[d] = IGNORED
        elif not taken[g]:
            labels[d] = TRUE_POSITIVE
            taken[g] = True
    return labels


def precision_recall(scores: np.ndarray, labels: np.ndarray, n_positives: int) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative precision and recall over detections sorted by decreasing score.

    Ignored detections are dropped first; ties keep input order.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    keep = labels != IGNORED
    order = np.argsort(-scores[keep], kind="stable")
    tp = (labels[keep][order] == TRUE_POSITIVE).astype(np.float64)
    tp_cum = np.cumsum(tp)
    fp_cum = np.cumsum(1.0 - tp)
    recall = tp_cum / max(n_positives, 1)
    precision = tp_cum / np.maximum(tp_cum + fp_cum, np.finfo(np.float64).eps)
    return precision, recall


def average_precision(precision: np.ndarray, recall: np.ndarray) -> float:
    """VOC all-point AP: area under the monotone precision envelope."""
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))
