"""The face box a landmark model is given, as its protocol says (``[face_box]``).

``ground-truth``: the dataset's box (each loader documents its rule),
grown by ``margin`` (a fraction of the box's width and height added on every
side). ``detector``: the box of a registered detector's best-overlapping
detection (IoU >= ``min_iou`` with the ground-truth box); a face the detector
misses is a failed item with that reason, so it counts against the pipeline
as it would in use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from facebench.harness import Item, ItemResult, items_for, run_adapter
from facebench.metrics.detection import box_iou
from facebench.protocol import FaceBox
from facebench.types import Box


def grown(box: Box, margin: float) -> Box:
    dx, dy = margin * box.width, margin * box.height
    return Box(box.x0 - dx, box.y0 - dy, box.x1 + dx, box.y1 + dy)


def face_box_items(rule: FaceBox, items: Sequence[Item],
                   threads: int = 1) -> tuple[list[Item], list[ItemResult]]:
    """Landmark items with their boxes replaced by the rule's, and failed results for faces it cannot box."""
    if rule.source == "ground-truth":
        if not rule.margin:
            return list(items), []
        return [replace(item, face_box=grown(item.face_box, rule.margin)) for item in items], []
    from facebench import registry

    detector = registry.resolve(rule.detector)()
    detector.load(threads=threads)  # the detector's own runtime, whatever the landmark model runs on
    samples = list({item.sample.id: item.sample for item in items}.values())
    found = {r.key: r for r in run_adapter(detector, items_for("detector", samples))}
    kept, missed = [], []
    for item in items:
        result = found[item.sample.id]
        dets = () if result.prediction is None else result.prediction.detections or ()
        reason = f"detector {rule.detector} failed: {result.error}" if result.error else None
        if dets:
            ious = box_iou(np.array([d.box.as_array() for d in dets]), item.face_box.as_array()[None])[:, 0]
            best = int(np.argmax(ious))
            if ious[best] >= rule.min_iou:
                kept.append(replace(item, face_box=dets[best].box))
                continue
        missed.append(ItemResult(item.key, None, reason or f"detector {rule.detector} found no face at "
                                 f"IoU >= {rule.min_iou} with the annotated box"))
    return kept, missed
