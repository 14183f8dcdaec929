"""Detector scorers: AP at an IoU threshold, WIDER FACE's official AP, FDDB's discrete ROC."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from facebench.metrics.detection import (
    FALSE_POSITIVE,
    IGNORED,
    TRUE_POSITIVE,
    evaluate_detections,
)
from facebench.protocol import Protocol
from facebench.scoring.base import Score
from facebench.types import Prediction, Sample, detection_arrays


def score_ap(protocol: Protocol, samples: Sequence[Sample], predictions: Mapping[str, Prediction | None],
             opts: Mapping, card=None) -> Score:
    """AP at an IoU threshold; the options are the ``ap`` record's (:mod:`facebench.metric_specs`); see
    :mod:`facebench.metrics.detection` for what "equals pycocotools" means."""
    gts, ignores, boxes, scores = [], [], [], []
    for sample in samples:
        found, confidence = detection_arrays(predictions.get(sample.id))
        boxes.append(found)
        scores.append(confidence)
        labelled = [f.box.as_array() for f in sample.faces] + [b.as_array() for b in sample.ignore]
        gts.append(np.array(labelled).reshape(-1, 4))
        ignores.append(np.array([False] * len(sample.faces) + [True] * len(sample.ignore)))
    min_area = opts["min_area"]
    if opts["min_face_fraction"] is not None:
        min_area = [float(opts["min_face_fraction"]) * _image_area(s) for s in samples]
    result = evaluate_detections(gts, boxes, scores, ignores, iou_threshold=float(opts["iou_threshold"]),
                                 rule=opts["rule"], ap=opts["ap_method"], min_area=min_area,
                                 max_detections=opts["max_detections"])
    per_item = {}
    for sample, labels, ignore in zip(samples, result.labels, ignores):
        per_item[sample.id] = {"tp": int(np.sum(labels == TRUE_POSITIVE)), "fp": int(np.sum(labels == FALSE_POSITIVE)),
                               "ignored": int(np.sum(labels == IGNORED)), "faces": int(np.sum(~ignore))}
    counted = result.true_positives + result.false_positives
    metrics = {
        "ap50": result.ap,
        "recall": result.true_positives / result.n_faces if result.n_faces else 0.0,
        "precision": result.true_positives / counted if counted else 0.0,
        "faces": result.n_faces,
        "detections": counted,
    }
    return Score(metrics, per_item, {"pr": {"ap": _pr_curve(result.precision, result.recall)}})


def _pr_curve(precision, recall, points: int = 400) -> dict:
    """A precision-recall curve thinned to at most ``points`` points, for plots."""
    precision, recall = np.asarray(precision, dtype=np.float64), np.asarray(recall, dtype=np.float64)
    if len(recall):
        keep = np.unique(np.linspace(0, len(recall) - 1, min(points, len(recall))).round().astype(int))
    else:
        keep = []
    return {"precision": precision[keep].tolist(), "recall": recall[keep].tolist()}


def _image_area(sample: Sample) -> float:
    size = sample.attributes.get("image_size")
    if size is None:
        h, w = sample.image().shape[:2]
    else:
        w, h = size
    return float(w) * float(h)


def _detections_xywhs(prediction: Prediction | None) -> np.ndarray:
    """(D, 5) rows of x, y, w, h, score: the WIDER submission layout."""
    boxes, scores = detection_arrays(prediction)
    return np.column_stack([boxes[:, :2], boxes[:, 2:] - boxes[:, :2], scores])


def score_wider_ap(protocol: Protocol, samples: Sequence[Sample], predictions: Mapping[str, Prediction | None],
                   opts: Mapping, card=None) -> Score:
    """WIDER FACE AP per setting by the official procedure (:mod:`facebench.metrics.wider`).

    Needs samples with every face and ``attributes["kept"]`` (the ``wider-face``
    dataset's ``val`` split, read from the eval tool's ``.mat`` files)."""
    from facebench.metrics.wider import evaluate_wider

    settings = list(opts["settings"])
    if any("kept" not in s.attributes for s in samples):
        raise ValueError(f"{protocol.source}: the official WIDER evaluation needs the eval tool's "
                         "wider_{easy,medium,hard}_val.mat lists (the dataset's val split)")
    gt = [np.array([[f.box.x0, f.box.y0, f.box.width, f.box.height] for f in s.faces]).reshape(-1, 4) for s in samples]
    kept = {name: [np.asarray(s.attributes["kept"][name]) for s in samples] for name in settings}
    preds = [_detections_xywhs(predictions.get(s.id)) for s in samples]
    curves = evaluate_wider(gt, kept, preds, iou_threshold=float(opts["iou_threshold"]))
    metrics: dict = {name: curves[name].ap for name in settings}
    metrics.update({f"{name}_faces": curves[name].faces for name in settings})
    metrics["faces"] = sum(len(g) for g in gt)
    metrics["detections"] = int(sum(len(p) for p in preds))
    per_item = {s.id: {"detections": len(p)} for s, p in zip(samples, preds)}
    pr = {name: _pr_curve(curves[name].precision, curves[name].recall) for name in settings}
    return Score(metrics, per_item, {"pr": pr})


def score_roc(protocol: Protocol, samples: Sequence[Sample], predictions: Mapping[str, Prediction | None],
              opts: Mapping, card=None) -> Score:
    """FDDB discrete ROC (:mod:`facebench.metrics.fddb`): true-positive rate at each of
    ``false_positives``; faces are the ellipses' bounding boxes."""
    from facebench.metrics.fddb import evaluate_fddb

    gt = [np.array([f.box.as_array() for f in s.faces]).reshape(-1, 4) for s in samples]
    arrays = [detection_arrays(predictions.get(s.id)) for s in samples]
    boxes, scores = [b for b, _ in arrays], [c for _, c in arrays]
    roc = evaluate_fddb(gt, boxes, scores, overlap=float(opts["overlap"]))
    metrics: dict = {f"tpr@{int(n)}": roc.tpr_at(int(n)) for n in opts["false_positives"]}
    metrics.update({"faces": roc.faces, "detections": int(sum(len(b) for b in boxes))})
    return Score(metrics, {s.id: {"detections": len(b)} for s, b in zip(samples, boxes)})
