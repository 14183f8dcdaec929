"""Turn a protocol's predictions into its numbers.

Each metric named in a protocol file maps to a scorer
``(protocol, samples, predictions) -> (metrics, per_item)``; ``predictions``
maps item keys to a Prediction, or None where the adapter failed. A failed
item is scored as an empty answer (its faces count as missed), never dropped:
dropping it would flatter the model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from facebench.metrics.detection import (
    FALSE_POSITIVE,
    IGNORED,
    TRUE_POSITIVE,
    evaluate_detections,
)
from facebench.metrics.landmarks import (
    balanced_yaw_nme,
    grouped,
    nme,
    normaliser,
    summarise_with_failures,
)
from facebench.protocol import Protocol
from facebench.schemes import convert, shared_points
from facebench.types import Prediction, Sample


def score_ap(protocol: Protocol, samples: Sequence[Sample], predictions: Mapping[str, Prediction | None]):
    """AP at an IoU threshold; options ``iou_threshold``, ``rule`` (voc | coco),
    ``ap_method`` (voc | voc07 | coco101), and a minimum face size as ``min_area``
    (pixels squared) or ``min_face_fraction`` (of the image area)."""
    opts = protocol.options
    gts, ignores, boxes, scores = [], [], [], []
    for sample in samples:
        pred = predictions.get(sample.id)
        dets = pred.detections if pred is not None and pred.detections is not None else ()
        boxes.append(np.array([d.box.as_array() for d in dets]).reshape(-1, 4))
        scores.append(np.array([d.score for d in dets], dtype=np.float64))
        gts.append(np.array([f.box.as_array() for f in sample.faces] + [b.as_array() for b in sample.ignore]).reshape(-1, 4))
        ignores.append(np.array([False] * len(sample.faces) + [True] * len(sample.ignore)))
    min_area = opts.get("min_area")
    if "min_face_fraction" in opts:
        min_area = [float(opts["min_face_fraction"]) * _image_area(s) for s in samples]
    result = evaluate_detections(gts, boxes, scores, ignores, iou_threshold=float(opts.get("iou_threshold", 0.5)),
                                 rule=opts.get("rule", "voc"), ap=opts.get("ap_method", "voc"), min_area=min_area)
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
    return metrics, per_item


def _image_area(sample: Sample) -> float:
    size = sample.attributes.get("image_size")
    if size is None:
        h, w = sample.image().shape[:2]
    else:
        w, h = size
    return float(w) * float(h)


def score_nme(protocol: Protocol, samples: Sequence[Sample], predictions: Mapping[str, Prediction | None]):
    """NME per face with CED/FR/AUC; options ``norm`` (default inter-ocular),
    ``threshold`` (default 0.08), ``subset_attribute`` (report per value of
    that sample attribute, e.g. 300W's common / challenging), ``subset_flags``
    (report the faces with each named 0/1 attribute set, e.g. WFLW's six) and
    ``yaw_attribute`` (AFLW2000-3D bins, degrees, with their balanced mean).
    A face whose prediction failed counts as a failure (infinite NME) in FR
    and AUC; NME averages the faces that have a prediction.

    A prediction in another scheme is mapped onto the ground truth's
    (:mod:`facebench.schemes`) and compared on the shared points only; the
    metrics say how many (``points``). The normaliser always comes from the
    full ground truth."""
    opts = protocol.options
    norm, threshold = opts.get("norm", "inter-ocular"), float(opts.get("threshold", 0.08))
    keys, gts, preds, faces_of, compared = [], [], [], [], None
    for sample in samples:
        for k, face in enumerate(sample.faces):
            if face.landmarks is None:
                continue
            key = f"{sample.id}#{k}"
            pred = predictions.get(key)
            gt = face.landmarks.points[:, :2]
            mapped = np.full_like(gt, np.nan)
            if pred is not None and pred.landmarks is not None:
                src, dst = pred.landmarks.scheme, face.landmarks.scheme
                shared = shared_points(src, dst)
                if compared is not None and shared != compared:
                    raise ValueError(f"{key}: predictions mix landmark schemes")
                compared = shared
                mapped = convert(pred.landmarks.points[:, :2], src, dst)
            keys.append(key)
            gts.append(gt)
            preds.append(mapped)
            faces_of.append(sample)
    if not keys:
        raise ValueError(f"{protocol.source}: no annotated landmarks in the dataset")
    scheme = samples[0].faces[0].landmarks.scheme if samples and samples[0].faces else None
    gt, pred = np.stack(gts), np.stack(preds)
    compared = compared if compared is not None else list(range(gt.shape[1]))
    missing = np.isnan(pred[:, compared]).any(axis=(1, 2))
    norms = normaliser(gt, norm, scheme)
    errors = nme(np.nan_to_num(pred[:, compared]), gt[:, compared], norms)
    errors[missing] = np.inf
    metrics = summarise_with_failures(errors, missing, threshold)
    metrics["points"] = len(compared)
    if "subset_attribute" in opts:
        attr = opts["subset_attribute"]
        values = np.array([str(s.attributes.get(attr, "")) for s in faces_of])
        for name, row in grouped(errors, {v: values == v for v in sorted(set(values))}, threshold).items():
            metrics.update({f"{name}_{k}": v for k, v in row.items()})
    for flag in opts.get("subset_flags", ()):
        members = np.array([bool(s.attributes.get(flag)) for s in faces_of])
        row = grouped(errors, {flag: members}, threshold)[flag]
        metrics.update({f"{flag}_{k}": v for k, v in row.items()})
    if "yaw_attribute" in opts:
        yaw = np.array([float(s.attributes[opts["yaw_attribute"]]) for s in faces_of])
        metrics.update({f"yaw{k}": v for k, v in balanced_yaw_nme(errors, yaw).items()})
    per_item = {k: {"nme": None, "failed": True} if m else {"nme": float(e)}
                for k, e, m in zip(keys, errors, missing)}
    return metrics, per_item


SCORERS: dict[str, Callable] = {"ap": score_ap, "nme": score_nme}


def score(protocol: Protocol, samples, predictions):
    try:
        scorer = SCORERS[protocol.metric]
    except KeyError:
        raise ValueError(f"{protocol.source}: unknown metric {protocol.metric!r}; known: {', '.join(SCORERS)}") from None
    return scorer(protocol, samples, predictions)
