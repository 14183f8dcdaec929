"""Detection metrics: IoU, matching with ignored faces, and AP in three flavours.

Pure numpy functions over corner-format boxes (x0, y0, x1, y1) in the
continuous pixel convention of :mod:`facebench.types` (areas without "+1";
``plus_one=True`` gives the legacy inclusive-pixel areas of MATLAB tools).

Matching rules (detections visited by decreasing score, ties in input order):

* ``"voc"`` (PASCAL VOC devkit): a detection takes the face of highest IoU
  (first on ties); at IoU > threshold it is a true positive if that face is
  still free, a false positive if already taken, and *ignored* (counted
  neither way) if the face is marked ignore ("difficult"); otherwise a false
  positive. The devkit's strict ">" is kept.
* ``"coco"`` (pycocotools ``COCOeval.evaluateImg``): a detection takes the
  free face of highest IoU >= threshold, preferring faces that count over
  ignored ones (ties go to the later face, as in pycocotools); a detection
  matched to an ignored face is ignored. Ignored faces are matched at most
  once (pycocotools' non-crowd ignore).

AP flavours over the ranked detections: ``"voc"`` all-point (area under the
monotone precision envelope), ``"voc07"`` 11-point (mean of the envelope at
recall 0, 0.1, ..., 1), ``"coco101"`` (pycocotools: envelope sampled at 101
recall points, precision TP / (TP + FP + eps)).

A minimum face area (``min_area``, in pixels squared) marks smaller faces
ignored and ignores unmatched detections smaller than it, as pycocotools does
with its area ranges: a detector is not penalised for finding faces the
protocol does not count.

``max_detections`` keeps each image's highest-scoring detections (ties in
input order) and drops the rest before matching, as pycocotools' ``maxDets``
does; dropped detections are labelled IGNORED. The default, None, keeps every
detection.

What "equals pycocotools" means, exactly: ``rule="coco", ap="coco101"`` gives
the AP that ``COCOeval`` (``iouType="bbox"``) computes with ``iouThrs = [t]``,
one category, every face ``iscrowd = 0`` (an ignored face behaves as
pycocotools' ``ignore`` flag, never as a crowd region), ``areaRng = [[min_area,
1e10]]`` (``min_area`` 0 by default: every face counts) and ``maxDets =
[max_detections]``, read as the mean of ``eval["precision"]`` over its 101
recall points. pycocotools' own default is ``maxDets = 100`` per image;
facebench's default is no cap, i.e. pycocotools with ``maxDets`` raised above
the largest per-image detection count. Pass ``max_detections=100`` for
pycocotools' default. The tests check both to 1e-12 (bit-exact in practice).
IoU uses continuous areas (no "+1"), as pycocotools' ``maskUtils.iou`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

TRUE_POSITIVE, FALSE_POSITIVE, IGNORED = 1, 0, -1
RULES = ("voc", "coco")
AP_METHODS = ("voc", "voc07", "coco101")


def box_iou(a: np.ndarray, b: np.ndarray, plus_one: bool = False) -> np.ndarray:
    """IoU matrix (N, M) between (N, 4) and (M, 4) boxes."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    one = 1.0 if plus_one else 0.0
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]) + one
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]) + one
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    area_a = (a[:, 2] - a[:, 0] + one) * (a[:, 3] - a[:, 1] + one)
    area_b = (b[:, 2] - b[:, 0] + one) * (b[:, 3] - b[:, 1] + one)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def corners_from_xywh(xywh: np.ndarray) -> np.ndarray:
    """(n, >=4) rows starting x, y, w, h -> (n, 4) corners x, y, x + w, y + h."""
    xywh = np.asarray(xywh, dtype=np.float64)
    xywh = xywh.reshape(-1, xywh.shape[-1] if xywh.ndim == 2 else 4)
    return np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:4]], axis=1)


def box_area(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def match_image(det_boxes: np.ndarray, det_scores: np.ndarray, gt_boxes: np.ndarray,
                gt_ignore: np.ndarray | None = None, iou_threshold: float = 0.5, rule: str = "voc",
                min_area: float | None = None) -> np.ndarray:
    """Label each detection TRUE_POSITIVE, FALSE_POSITIVE or IGNORED (input order)."""
    result = evaluate_detections([gt_boxes], [det_boxes], [det_scores],
                                 None if gt_ignore is None else [gt_ignore],
                                 iou_threshold=iou_threshold, rule=rule, min_area=min_area)
    return result.labels[0]


@dataclass(frozen=True)
class OverlapPairs:
    """Every (detection, face) pair of the same image with IoU >= a minimum.

    Indices are into the concatenation of all images' detections and faces.
    """

    det: np.ndarray
    face: np.ndarray
    iou: np.ndarray

    def best_per_detection(self, n_det: int) -> tuple[np.ndarray, np.ndarray]:
        """Per detection: its face of highest IoU (first on ties; -1 if none) and that IoU."""
        best_face = np.full(n_det, -1, np.int64)
        best_iou = np.zeros(n_det)
        if self.det.size:
            order = np.lexsort((self.face, -self.iou, self.det))
            first = order[np.r_[True, self.det[order][1:] != self.det[order][:-1]]]
            best_face[self.det[first]] = self.face[first]
            best_iou[self.det[first]] = self.iou[first]
        return best_face, best_iou


def overlap_pairs(gt_boxes: Sequence[np.ndarray], det_boxes: Sequence[np.ndarray], min_iou: float,
                  plus_one: bool = False) -> OverlapPairs:
    """All same-image pairs with IoU >= ``min_iou`` (> 0), without an all-pairs matrix.

    IoU >= t needs an x-overlap of at least t times either width, so a face
    of width w_f can only pair with a detection (x0, x1, width w) if its x0 lies
    in [x0 + t*w - min(max w_f, w/t), x1 - t*w] (widths inclusive with
    ``plus_one``). Faces are sorted by x0 within each image and each detection
    is compared with that window only: crowded images cost what overlaps.
    """
    if not 0 < min_iou <= 1:
        raise ValueError("overlap_pairs needs a minimum IoU in (0, 1]")
    gt_n = np.array([len(g) for g in gt_boxes], np.int64)
    det_n = np.array([len(d) for d in det_boxes], np.int64)
    empty = OverlapPairs(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    if gt_n.sum() == 0 or det_n.sum() == 0:
        return empty
    one = 1.0 if plus_one else 0.0
    G = np.concatenate([np.asarray(g, np.float64).reshape(-1, 4) for g in gt_boxes]).T.copy()  # (4, n)
    D = np.concatenate([np.asarray(d, np.float64).reshape(-1, 4) for d in det_boxes]).T.copy()
    gt_img = np.repeat(np.arange(len(gt_n)), gt_n)
    det_img = np.repeat(np.arange(len(det_n)), det_n)
    g_w, g_h = G[2] - G[0] + one, G[3] - G[1] + one
    d_w, d_h = D[2] - D[0] + one, D[3] - D[1] + one
    max_w = np.zeros(len(gt_n))
    np.maximum.at(max_w, gt_img, g_w)
    # one sorted key over all images: image-major, then x0 (margins of one pixel absorb rounding)
    span = 4.0 * (np.abs(G).max() + np.abs(D).max() + max_w.max() + 4.0)
    order = np.lexsort((G[0], gt_img))
    key = gt_img[order] * span + G[0, order]
    reach = np.minimum(max_w[det_img], d_w / min_iou)
    lo = np.searchsorted(key, det_img * span + D[0] + min_iou * d_w - reach - 1.0, side="left")
    hi = np.searchsorted(key, det_img * span + D[2] + one - min_iou * d_w + 1.0, side="right")
    counts = np.maximum(hi - lo, 0)
    total = int(counts.sum())
    if total == 0:
        return empty
    det_idx = np.repeat(np.arange(D.shape[1]), counts)
    face_idx = order[np.arange(total) + np.repeat(lo - (np.cumsum(counts) - counts), counts)]
    iw = np.minimum(D[2, det_idx], G[2, face_idx]) - np.maximum(D[0, det_idx], G[0, face_idx]) + one
    ih = np.minimum(D[3, det_idx], G[3, face_idx]) - np.maximum(D[1, det_idx], G[1, face_idx]) + one
    np.maximum(iw, 0, out=iw)
    np.maximum(ih, 0, out=ih)
    inter = iw * ih
    union = (d_w * d_h)[det_idx] + (g_w * g_h)[face_idx] - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    keep = iou >= min_iou
    return OverlapPairs(det_idx[keep], face_idx[keep], iou[keep])


@dataclass(frozen=True)
class DetectionResult:
    """Dataset-level detection evaluation.

    ``labels`` are per image in input order; ``precision``/``recall`` follow
    the counted (non-ignored) detections of all images ranked by score.
    """

    ap: float
    precision: np.ndarray
    recall: np.ndarray
    labels: list[np.ndarray]
    n_faces: int
    true_positives: int
    false_positives: int


def evaluate_detections(gt_boxes: Sequence[np.ndarray], det_boxes: Sequence[np.ndarray],
                        det_scores: Sequence[np.ndarray], gt_ignore: Sequence[np.ndarray] | None = None, *,
                        iou_threshold: float = 0.5, rule: str = "voc", ap: str = "voc",
                        min_area: float | Sequence[float] | None = None,
                        max_detections: int | None = None) -> DetectionResult:
    """Match every image and compute AP over the whole set (lists are per image).

    ``min_area`` is one value or one per image (e.g. a fraction of each image's area).
    ``max_detections`` caps the detections per image (see the module doc); None: no cap.
    """
    if max_detections is not None:
        return _capped(gt_boxes, det_boxes, det_scores, gt_ignore, int(max_detections), iou_threshold=iou_threshold,
                       rule=rule, ap=ap, min_area=min_area)
    if rule not in RULES:
        raise ValueError(f"unknown matching rule {rule!r}; known: {', '.join(RULES)}")
    if ap not in AP_METHODS:
        raise ValueError(f"unknown AP method {ap!r}; known: {', '.join(AP_METHODS)}")
    if not (len(gt_boxes) == len(det_boxes) == len(det_scores)):
        raise ValueError("gt_boxes, det_boxes and det_scores need one entry per image")
    gts = [np.asarray(g, dtype=np.float64).reshape(-1, 4) for g in gt_boxes]
    dets = [np.asarray(d, dtype=np.float64).reshape(-1, 4) for d in det_boxes]
    scores = [np.asarray(s, dtype=np.float64).reshape(-1) for s in det_scores]
    if gt_ignore is None:
        ignores = [np.zeros(len(g), bool) for g in gts]
    else:
        ignores = [np.asarray(i, bool).reshape(-1) for i in gt_ignore]
    for i, (d, s, g, ig) in enumerate(zip(dets, scores, gts, ignores)):
        if len(d) != len(s) or len(g) != len(ig):
            raise ValueError(f"image {i}: {len(d)} boxes but {len(s)} scores, or {len(g)} faces but {len(ig)} flags")
    if min_area is not None:
        min_areas = np.broadcast_to(np.asarray(min_area, dtype=np.float64), (len(gts),))
        ignores = [ig | (box_area(g) < m) for g, ig, m in zip(gts, ignores, min_areas)]

    all_scores = np.concatenate(scores) if scores else np.zeros(0)
    ignore = np.concatenate(ignores) if ignores else np.zeros(0, bool)
    det_img = np.repeat(np.arange(len(dets)), [len(d) for d in dets])
    # rank within each image by score, ties in input order
    rank = np.lexsort((np.arange(len(all_scores)), -all_scores, det_img))
    pairs = overlap_pairs(gts, dets, min(iou_threshold, 1 - 1e-10) if rule == "coco" else iou_threshold)
    match = _match_voc if rule == "voc" else _match_coco
    labels_flat = match(pairs, rank, ignore, len(all_scores), iou_threshold)
    if min_area is not None and len(all_scores):
        small = box_area(np.concatenate(dets)) < np.repeat(min_areas, [len(d) for d in dets])
        labels_flat[(labels_flat == FALSE_POSITIVE) & small] = IGNORED
    labels = np.split(labels_flat, np.cumsum([len(d) for d in dets])[:-1]) if dets else []

    n_faces = int((~ignore).sum())
    precision, recall = precision_recall(all_scores, labels_flat, n_faces, coco_eps=(ap == "coco101"))
    return DetectionResult(
        ap=average_precision(precision, recall, ap), precision=precision, recall=recall, labels=labels,
        n_faces=n_faces, true_positives=int(np.sum(labels_flat == TRUE_POSITIVE)),
        false_positives=int(np.sum(labels_flat == FALSE_POSITIVE)))


def _capped(gt_boxes, det_boxes, det_scores, gt_ignore, cap: int, **kwargs) -> DetectionResult:
    """Evaluate each image's ``cap`` highest-scoring detections; the others are labelled IGNORED."""
    if cap < 1:
        raise ValueError(f"max_detections must be at least 1, not {cap}")
    kept, boxes, scores = [], [], []
    for d, s in zip(det_boxes, det_scores):
        d = np.asarray(d, dtype=np.float64).reshape(-1, 4)
        s = np.asarray(s, dtype=np.float64).reshape(-1)
        if len(d) != len(s):
            raise ValueError(f"{len(d)} boxes but {len(s)} scores")
        keep = np.sort(np.lexsort((np.arange(len(s)), -s))[:cap])  # pycocotools: stable sort by score, first cap
        kept.append(keep)
        boxes.append(d[keep])
        scores.append(s[keep])
    result = evaluate_detections(gt_boxes, boxes, scores, gt_ignore, max_detections=None, **kwargs)
    labels = []
    for keep, sub, s in zip(kept, result.labels, det_scores):
        full = np.full(np.asarray(s).reshape(-1).shape[0], IGNORED, dtype=np.int8)
        full[keep] = sub
        labels.append(full)
    return DetectionResult(ap=result.ap, precision=result.precision, recall=result.recall, labels=labels,
                           n_faces=result.n_faces, true_positives=result.true_positives,
                           false_positives=result.false_positives)


def _match_voc(pairs: OverlapPairs, rank, ignore, n_det, threshold):
    labels = np.full(n_det, FALSE_POSITIVE, dtype=np.int8)
    best, best_iou = pairs.best_per_detection(n_det)
    hit = (best >= 0) & (best_iou > threshold)
    face_ignored = np.zeros(n_det, bool)
    face_ignored[hit] = ignore[best[hit]]
    labels[hit & face_ignored] = IGNORED
    # a free face goes to the first detection (by score) that claims it
    claims = rank[(hit & ~face_ignored)[rank]]
    _, first = np.unique(best[claims], return_index=True)
    labels[claims[first]] = TRUE_POSITIVE
    return labels


def _match_coco(pairs: OverlapPairs, rank, ignore, n_det, threshold):
    """pycocotools' greedy matching, vectorised where no detection has a choice."""
    labels = np.full(n_det, FALSE_POSITIVE, dtype=np.int8)
    if pairs.det.size == 0:
        return labels
    options = np.bincount(pairs.det, minlength=n_det)
    # faces all of whose candidate detections have that face as their only option
    shared = np.zeros(int(pairs.face.max()) + 1, bool)
    shared[pairs.face[options[pairs.det] > 1]] = True
    simple_pair = ~shared[pairs.face]
    # simple faces go to their first candidate by score
    position = np.empty(n_det, np.int64)
    position[rank] = np.arange(n_det)
    simple = np.flatnonzero(simple_pair)
    order = simple[np.argsort(position[pairs.det[simple]], kind="stable")]
    _, first = np.unique(pairs.face[order], return_index=True)
    winners = order[first]
    labels[pairs.det[winners]] = np.where(ignore[pairs.face[winners]], IGNORED, TRUE_POSITIVE)
    # the rest: the literal greedy loop, detections in score order
    rest = np.flatnonzero(~simple_pair)
    if rest.size:
        taken = set()
        by_det: dict[int, list[tuple[float, int]]] = {}
        for p in rest[np.lexsort((pairs.face[rest], position[pairs.det[rest]]))]:
            by_det.setdefault(int(pairs.det[p]), []).append((float(pairs.iou[p]), int(pairs.face[p])))
        for d, cands in by_det.items():
            for want_ignored in (False, True):
                best = None
                for iou, face in cands:  # faces in input order; ">=" hands ties to the later one
                    if bool(ignore[face]) == want_ignored and face not in taken and (best is None or iou >= best[0]):
                        best = (iou, face)
                if best is not None:
                    taken.add(best[1])
                    labels[d] = IGNORED if want_ignored else TRUE_POSITIVE
                    break
    return labels


def precision_recall(scores: np.ndarray, labels: np.ndarray, n_positives: int,
                     coco_eps: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative precision and recall over detections ranked by decreasing score.

    Ignored detections are dropped first; ties keep input order. Precision is
    TP / max(TP + FP, eps) (VOC) or, with ``coco_eps``, TP / (TP + FP + eps)
    (pycocotools), which differ in the last digit at one detection.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    keep = labels != IGNORED
    order = np.argsort(-scores[keep], kind="stable")
    tp = (labels[keep][order] == TRUE_POSITIVE).astype(np.float64)
    tp_cum = np.cumsum(tp)
    fp_cum = np.cumsum(1.0 - tp)
    recall = tp_cum / max(n_positives, 1)
    if coco_eps:
        precision = tp_cum / (tp_cum + fp_cum + np.spacing(1))
    else:
        precision = tp_cum / np.maximum(tp_cum + fp_cum, np.finfo(np.float64).eps)
    return precision, recall


def average_precision(precision: np.ndarray, recall: np.ndarray, method: str = "voc") -> float:
    """AP from a ranked precision/recall curve; see the module doc for ``method``."""
    precision = np.nan_to_num(np.asarray(precision, dtype=np.float64), nan=0.0)
    recall = np.asarray(recall, dtype=np.float64)
    if method == "voc":
        mrec = np.concatenate([[0.0], recall, [1.0]])
        mpre = np.concatenate([[0.0], precision, [0.0]])
        mpre = np.maximum.accumulate(mpre[::-1])[::-1]
        steps = np.nonzero(mrec[1:] != mrec[:-1])[0]
        return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))
    if method == "voc07":
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):  # the devkit's grid, float quirks included
            p = precision[recall >= t]
            ap += (p.max() if p.size else 0.0) / 11.0
        return float(ap)
    if method == "coco101":
        envelope = np.maximum.accumulate(precision[::-1])[::-1]
        thresholds = np.linspace(0.0, 1.0, 101)
        idx = np.searchsorted(recall, thresholds, side="left")
        sampled = np.where(idx < envelope.size, envelope[np.minimum(idx, max(envelope.size - 1, 0))]
                           if envelope.size else 0.0, 0.0)
        return float(np.mean(sampled))
    raise ValueError(f"unknown AP method {method!r}; known: {', '.join(AP_METHODS)}")
