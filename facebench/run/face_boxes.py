"""The face box a landmark model is given, as its protocol's ``[face_box]`` says.

``ground-truth``: drawn from the face's ground-truth landmarks in the
model's box convention (:func:`facebench.run.framing.ground_truth_box`), grown
by ``margin``. ``detector``: the box of a detector's best-overlapping
detection (IoU >= ``min_iou`` with the annotated box); the detector is the
protocol's, else the card's own (``options["detector"]``). A face the
detector misses is a failed item with that reason, so it counts against the
pipeline as it would in use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from facebench.errors import FacebenchError
from facebench.metrics.detection import box_iou
from facebench.protocol import FaceBox
from facebench.run import activity
from facebench.run.framing import (
    FramingError,
    check_framing,
    describe,
    describe_detector,
    detector_face,
    ground_truth_face,
)
from facebench.run.harness import Item, ItemResult, items_for, run_adapter
from facebench.types import Box, Detection, ModelCard, detection_arrays


class FramingUnavailable(FacebenchError, ValueError):
    """A protocol's framing cannot be applied to a model (said before anything runs)."""


def grown(box: Box, margin: float) -> Box:
    dx, dy = margin * box.width, margin * box.height
    return Box(box.x0 - dx, box.y0 - dy, box.x1 + dx, box.y1 + dy)


def framing_detector(rule: FaceBox, card: ModelCard) -> str:
    """The detector a detector-framed protocol uses for this model."""
    detector = rule.detector or card.options.get("detector")
    if not detector:
        raise FramingUnavailable(f"{card.name}: the protocol frames faces with a detector, and neither it nor the "
                                 "card (options['detector']) names one")
    return str(detector)


def framing(rule: FaceBox, card: ModelCard, scheme: str | None) -> str:
    """What the box of every item of this (protocol, model) is, in words; raises FramingUnavailable
    when the framing cannot be applied (checked before running)."""
    if rule.source == "detector":
        name = framing_detector(rule, card)
        from facebench import registry

        try:
            detector = registry.resolve(name).card
        except registry.RegistryError as exc:
            raise FramingUnavailable(f"{card.name}: face_box.detector: {exc}") from None
        usable = registry.usability(name)
        if not usable.usable:  # a missing extra: said before running, with the fix
            fix = f": {usable.fix}" if usable.fix else ""
            raise FramingUnavailable(f"{card.name}: face_box.detector {name} cannot run here: {usable.reason}{fix}")
        if detector.task != "detector":
            raise FramingUnavailable(f"{card.name}: face_box.detector {name!r} is a {detector.task} model, "
                                     "not a detector")
        return describe_detector(name, detector.options.get("boxes"), card.box_convention)
    try:
        check_framing(card.box_convention, scheme or "ibug68")
    except FramingError as exc:
        raise FramingUnavailable(f"{card.name}: {exc}") from None
    return describe(card.box_convention) + (f", margin {rule.margin:g}" if rule.margin else "")


def face_box_items(rule: FaceBox, items: Sequence[Item], card: ModelCard,
                   threads: int = 1) -> tuple[list[Item], list[ItemResult]]:
    """Landmark items with the box the rule gives them, and failed results for faces it cannot box."""
    if rule.source == "ground-truth":
        kept, failed = [], []
        for item in items:
            if item.face is None or item.face.landmarks is None:
                failed.append(ItemResult(item.key, None, "no ground-truth landmarks to draw the face box from"))
                continue
            try:
                box = ground_truth_face(item.face.landmarks, card.box_convention)
            except FramingError as exc:
                failed.append(ItemResult(item.key, None, f"face box: {exc}"))
                continue
            if rule.margin and box is not None:
                box = replace(box, box=grown(box.box, rule.margin)) if isinstance(box, Detection) else \
                    grown(box, rule.margin)
            kept.append(replace(item, face_box=box))
        return kept, failed
    from facebench import registry

    name = framing_detector(rule, card)
    detector = registry.resolve(name)()
    boxes = detector.card.options.get("boxes")
    samples = list({item.sample.id: item.sample for item in items}.values())
    # a detector that hangs is a timeout of this cell's items, named as the framing detector's
    with activity.phase(f"framing detector {name}", [item.key for item in items]):
        detector.load(threads=threads)  # the detector's own runtime, whatever the landmark model runs on
        found = {r.key: r for r in run_adapter(detector, items_for("detector", samples), track=False)}
    kept, missed = [], []
    for item in items:
        result = found[item.sample.id]
        dets = () if result.prediction is None else result.prediction.detections or ()
        reason = f"detector {name} failed: {result.error}" if result.error else None
        annotated = item.face.box if item.face is not None else item.face_box
        if isinstance(annotated, Detection):
            annotated = annotated.box
        if dets and annotated is not None:
            ious = box_iou(detection_arrays(result.prediction)[0], annotated.as_array()[None])[:, 0]
            best = int(np.argmax(ious))
            if ious[best] >= rule.min_iou:
                kept.append(replace(item, face_box=detector_face(dets[best], boxes, card.box_convention)))
                continue
        missed.append(ItemResult(item.key, None, reason or f"detector {name} found no face at "
                                 f"IoU >= {rule.min_iou} with the annotated box"))
    return kept, missed
