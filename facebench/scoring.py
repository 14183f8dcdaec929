"""Turn a protocol's predictions into its numbers.

Each metric named in a protocol file maps to a scorer
``(protocol, samples, predictions) -> (metrics, per_item)``; ``predictions``
maps item keys to a Prediction, or None where the adapter failed. A failed
item is scored as an empty answer (its faces count as missed), never dropped:
dropping it would flatter the model.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np

from facebench.metrics.detection import (
    IGNORED, TRUE_POSITIVE, average_precision, match_image, precision_recall,
)
from facebench.protocol import Protocol
from facebench.types import Prediction, Sample


def score_ap(protocol: Protocol, samples: Sequence[Sample], predictions: Mapping[str, Prediction | None]):
    iou = float(protocol.options.get("iou_threshold", 0.5))
    all_scores, all_labels, per_item = [], [], {}
    n_faces = 0
    for sample in samples:
        pred = predictions.get(sample.id)
        dets = pred.detections if pred is not None and pred.detections is not None else ()
        boxes = np.array([d.box.as_array() for d in dets]).reshape(-1, 4)
        scores = np.array([d.score for d in dets], dtype=np.float64)
        gt = [f.box.as_array() for f in sample.faces] + [b.as_array() for b in sample.ignore]
        ignore = np.array([False] * len(sample.faces) + [True] * len(sample.ignore))
        labels = match_image(boxes, scores, np.array(gt).reshape(-1, 4), ignore, iou)
        n_faces += len(sample.faces)
        all_scores.append(scores)
        all_labels.append(labels)
        per_item[sample.id] = {"tp": int(np.sum(labels == TRUE_POSITIVE)),
                               "fp": int(np.sum(labels == 0)),
                               "ignored": int(np.sum(labels == IGNORED)),
                               "faces": len(sample.faces)}
    scores = np.concatenate(all_scores) if all_scores else np.zeros(0)
    labels = np.concatenate(all_labels) if all_labels else np.zeros(0, np.int8)
    precision, recall = precision_recall(scores, labels, n_faces)
    tp = int(np.sum(labels == TRUE_POSITIVE))
    counted = int(np.sum(labels != IGNORED))
    metrics = {
        "ap50": average_precision(precision, recall),
        "recall": tp / n_faces if n_faces else 0.0,
        "precision": tp / counted if counted else 0.0,
        "faces": n_faces,
        "detections": counted,
    }
    return metrics, per_item


SCORERS: dict[str, Callable] = {"ap": score_ap}


def score(protocol: Protocol, samples, predictions):
    try:
        scorer = SCORERS[protocol.metric]
    except KeyError:
        raise ValueError(f"{protocol.source}: unknown metric {protocol.metric!r}; known: {', '.join(SCORERS)}") from None
    return scorer(protocol, samples, predictions)
