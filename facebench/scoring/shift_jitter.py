"""Run a model on shifted copies of photos and measure BlazeFace's jitter.

Input: samples carrying ``attributes["source"]`` (which photo) and
``attributes["shift"]`` (dx, dy in pixels; (0, 0) for the reference copy),
such as the embedded ``mini`` dataset's ``shifted`` split. For each photo the
prediction on every shifted copy is compared with the one on the unshifted
copy (:func:`facebench.metrics.jitter.shift_jitter`), normalised by the
annotated inter-ocular distance.

Detectors: the detection with the best IoU against the photo's first
annotated face is followed (box centre, box size and keypoints). Landmark
models get that face's box and are followed on every point.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from facebench.adapter import Adapter
from facebench.metric_specs import SPECS
from facebench.metrics.detection import box_iou
from facebench.metrics.jitter import detection_points, shift_jitter
from facebench.metrics.landmarks import normaliser
from facebench.run.harness import Item, run_adapter
from facebench.types import Prediction, Sample, detection_arrays, face_key

MIN_IOU = SPECS["jitter"].options["min_iou"].default  # the record's, for callers outside a protocol


@dataclass(frozen=True)
class PhotoJitter:
    source: str
    jitter: float | None  # fraction of the inter-ocular distance; None when the face was missed
    copies: int
    missed: int


def _points(prediction: Prediction | None, sample: Sample, task: str, min_iou: float = MIN_IOU):
    if prediction is None:
        return None, None
    if task == "landmarks":
        if prediction.landmarks is None:
            return None, None
        return prediction.landmarks.points[:, :2], None
    dets = prediction.detections
    if not dets:
        return None, None
    ious = box_iou(detection_arrays(prediction)[0], sample.faces[0].box.as_array())[:, 0]
    best = int(np.argmax(ious))
    if ious[best] < min_iou:
        return None, None
    return detection_points(dets[best].box.as_array(), dets[best].keypoints)


def item_key(sample: Sample, task: str) -> str:
    """The harness's key for what is followed in a copy: the image, or its first face."""
    return sample.id if task == "detector" else face_key(sample.id, 0)


def run_shift_jitter(adapter: Adapter, samples: Sequence[Sample]) -> list[PhotoJitter]:
    """Jitter per source photo, in the order the photos first appear."""
    task = adapter.card.task
    items = [Item(item_key(s, task), s, s.faces[0].box if task == "landmarks" else None) for s in samples if s.faces]
    results = {r.key: r.prediction for r in run_adapter(adapter, items)}
    return photo_jitter(samples, results, task)


def photo_jitter(samples: Sequence[Sample], predictions: Mapping[str, Prediction | None], task: str,
                 min_iou: float = MIN_IOU) -> list[PhotoJitter]:
    """Jitter per source photo from predictions keyed as the harness keys them."""
    by_source: dict[str, list[Sample]] = {}
    for s in samples:
        if s.faces:
            by_source.setdefault(s.attributes["source"], []).append(s)
    out = []
    for source, copies in by_source.items():
        reference = next((s for s in copies if tuple(s.attributes["shift"]) == (0.0, 0.0)), None)
        if reference is None:
            raise ValueError(f"photo {source!r} has no unshifted copy (shift (0, 0))")
        ref_points, moves = _points(predictions.get(item_key(reference, task)), reference, task, min_iou)
        landmarks = reference.faces[0].landmarks
        if landmarks is None:
            raise ValueError(f"photo {source!r}: its unshifted copy has no ground-truth landmarks "
                             "(the inter-ocular distance normalises the jitter)")
        iod = float(normaliser(landmarks.points[None, :, :2], "inter-ocular", landmarks.scheme)[0])
        shifted = [s for s in copies if s is not reference]
        points, offsets = [], []
        for s in shifted:
            p, _ = _points(predictions.get(item_key(s, task)), s, task, min_iou)
            if p is not None and ref_points is not None and p.shape == ref_points.shape:
                points.append(p)
                offsets.append(s.attributes["shift"])
        missed = len(shifted) - len(points)
        jitter = shift_jitter(ref_points, np.array(points), np.array(offsets), iod, moves) if points else None
        out.append(PhotoJitter(source, jitter, len(shifted), missed))
    return out
