"""Scorers of the rendered benchmark (:mod:`facebench.datasets.rendered`): error against one controlled
factor, and jitter along sequences whose true motion is known.

Samples say their factor in ``attributes`` (``factor``, ``value``, ``neutral``; sequences:
``sequence``, ``frame``) and which landmarks the scan hides (``visible``, the depth test).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from facebench.metrics.detection import box_iou
from facebench.metrics.landmarks import nme, normaliser
from facebench.metrics.sweeps import breaking_points, factor_curve, sequence_jitter
from facebench.protocol import Protocol
from facebench.scoring.base import Score
from facebench.types import Prediction, Sample

POINTS = ("visible-inner", "visible", "all")
INNER = np.arange(17, 68)  # iBUG-68 without the jaw contour: the scan's jaw line is anatomical, not a silhouette


def _scored_points(sample: Sample, rule: str, n_points: int) -> np.ndarray:
    """(N,) bool: the ground-truth points ``rule`` compares for this sample."""
    if rule not in POINTS:
        raise ValueError(f"points must be one of {', '.join(POINTS)}, not {rule!r}")
    mask = np.ones(n_points, bool)
    if rule != "all":
        mask &= np.asarray(sample.attributes.get("visible", [True] * n_points), bool)
    if rule == "visible-inner":
        inner = np.zeros(n_points, bool)
        inner[INNER[INNER < n_points]] = True
        mask &= inner
    return mask


def _landmark_errors(protocol: Protocol, samples: Sequence[Sample], predictions, opts, card):
    """Per face: the sample, the NME over its scored points by the whole ground truth's normaliser
    (NaN: no answer), and the number of points compared."""
    from facebench.scoring.landmarks import paired_landmarks

    keys, gt, pred, faces_of, compared, scheme, labelled = paired_landmarks(protocol, samples, predictions, card)
    norms = normaliser(gt, opts["norm"], scheme)
    scored = np.stack([_scored_points(s, opts["points"], gt.shape[1]) for s in faces_of]) & labelled
    compared_mask = np.zeros(gt.shape[1], bool)
    compared_mask[compared] = True
    scored &= compared_mask
    missing = np.isnan(np.where(scored[..., None], pred, 0.0)).any(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        errors = nme(np.nan_to_num(pred), gt, norms, visible=scored)
    errors[missing] = np.nan
    return keys, faces_of, errors, scored.sum(axis=1)


def _detected(sample: Sample, prediction: Prediction | None, iou_threshold: float) -> float:
    """1.0 when a detection overlaps the face at ``iou_threshold`` or more, 0.0 when none does (a failed item
    too: an empty answer)."""
    if prediction is None or not prediction.detections:
        return 0.0
    boxes = np.array([d.box.as_array() for d in prediction.detections])
    iou = box_iou(boxes, sample.faces[0].box.as_array()[None])
    return float((iou >= iou_threshold).any())


def score_sweep_nme(protocol: Protocol, samples: Sequence[Sample], predictions: Mapping[str, Prediction | None],
                    opts: Mapping, card=None) -> Score:
    """:func:`score_sweep` of landmark NME (the ``sweep_nme`` record)."""
    return score_sweep(protocol, samples, predictions, {**opts, "measure": "nme"}, card)


def score_sweep_detection(protocol: Protocol, samples: Sequence[Sample],
                          predictions: Mapping[str, Prediction | None], opts: Mapping, card=None) -> Score:
    """:func:`score_sweep` of the detection rate (the ``sweep_detection`` record)."""
    return score_sweep(protocol, samples, predictions, {**opts, "measure": "detection"}, card)


def score_sweep(protocol: Protocol, samples: Sequence[Sample], predictions: Mapping[str, Prediction | None],
                opts: Mapping, card=None) -> Score:
    """Per factor (``attributes['factor']``), the measure at each of its values, and where it breaks.

    ``measure = "nme"`` (landmark models): NME over the points ``points`` names, normalised by
    ``norm`` of the whole ground truth; a value breaks when its mean NME passes ``threshold`` or more
    than half its faces got no answer. ``measure = "detection"`` (detectors): the fraction of faces
    found at IoU ``iou_threshold``; a value breaks when it falls below ``threshold``. Metrics:
    ``nme`` or ``detected`` over every face, ``failed``, and per factor ``{factor}_breaks_low`` /
    ``_high`` (the first value below / above the neutral one that breaks; absent: none does) and
    ``{factor}_at_neutral``. ``curves['sweep']`` holds each factor's curve for the figure. A face none of
    whose compared points is visible is ``unscored`` (counted, and marked so per item), not failed."""
    measure, threshold = opts["measure"], float(opts["threshold"])
    unscored = 0
    left_out: dict = {}  # per item: the unscored faces, marked so (the gallery does not call them failures)
    if measure == "nme":
        keys, faces_of, values, points = _landmark_errors(protocol, samples, predictions, opts, card)
        countable = points > 0  # a face none of whose compared points is visible has nothing to score
        unscored = int((~countable).sum())
        left_out = {k: {"factor": str(f.attributes.get("factor", "")),
                        "value": float(f.attributes.get("value", np.nan)), "nme": None, "points": 0, "unscored": True}
                    for k, f, c in zip(keys, faces_of, countable) if not c}
        keys = [k for k, c in zip(keys, countable) if c]
        faces_of = [f for f, c in zip(faces_of, countable) if c]
        values, points = values[countable], points[countable]

        def fails(metric: float, failed: float) -> bool:
            return bool(failed > 0.5 or not metric <= threshold)
    elif measure == "detection":
        keys = [s.id for s in samples]
        faces_of = list(samples)
        values = np.array([_detected(s, predictions.get(s.id), float(opts["iou_threshold"])) for s in samples])
        points = np.zeros(len(samples), int)

        def fails(metric: float, failed: float) -> bool:
            return bool(not metric >= threshold)
    else:
        raise ValueError(f"{protocol.source}: measure must be nme or detection, not {measure!r}")
    factors = np.array([str(s.attributes.get("factor", "")) for s in faces_of])
    settings = np.array([float(s.attributes.get("value", np.nan)) for s in faces_of])
    metrics: dict = {}
    if measure == "nme":
        answered = ~np.isnan(values)
        metrics["nme"] = float(values[answered].mean()) if answered.any() else float("nan")
        metrics["failed"] = int((~answered).sum())
        metrics["unscored"] = unscored  # faces whose compared points the head hides: left out, not failed
    else:
        metrics["detected"] = float(values.mean()) if len(values) else float("nan")
    metrics["faces"] = len(values)
    curves: dict = {}
    for factor in sorted(set(factors)):
        chosen = factors == factor
        neutral = float(faces_of[int(np.flatnonzero(chosen)[0])].attributes.get("neutral", 0.0))
        curve = factor_curve(settings[chosen], values[chosen])
        low, high = breaking_points(curve, neutral, fails)
        at = np.flatnonzero(curve.values == neutral)
        metrics[f"{factor}_at_neutral"] = float(curve.metric[at[0]]) if at.size else float("nan")
        if low is not None:
            metrics[f"{factor}_breaks_low"] = low
        if high is not None:
            metrics[f"{factor}_breaks_high"] = high
        curves[factor] = {"values": curve.values.tolist(), "metric": curve.metric.tolist(),
                          "failed": curve.failed.tolist(), "neutral": neutral, "breaks": [low, high]}
    per_item = {key: {"factor": str(f), "value": float(v), measure: (None if np.isnan(e) else float(e)),
                      **({"points": int(p)} if measure == "nme" else {})}
                for key, f, v, e, p in zip(keys, factors, settings, values, points)}
    per_item.update(left_out)
    return Score(metrics, per_item, {"sweep": {"measure": measure, "threshold": threshold, "factors": curves}})


def score_sequence_jitter(protocol: Protocol, samples: Sequence[Sample],
                          predictions: Mapping[str, Prediction | None], opts: Mapping, card=None) -> Score:
    """Jitter along each sequence (``attributes['sequence']``, frames by ``attributes['frame']``) with the
    true motion removed (:func:`facebench.metrics.sweeps.sequence_jitter`), over the face box size
    (``sqrt(w h)`` of the ground-truth box). Landmark models: the points ``points`` names; detectors:
    the best-overlapping box's corners. ``jitter`` is the mean over sequences; a frame without an
    answer (or, for a detector, without a box at IoU ``min_iou``) breaks its two pairs and is counted
    in ``failed``."""
    if card is None:
        raise ValueError(f"{protocol.source}: sequence jitter needs the model's card (detector or landmarks)")
    by_sequence: dict[str, list[Sample]] = {}
    for sample in samples:
        by_sequence.setdefault(str(sample.attributes.get("sequence")), []).append(sample)
    metrics: dict = {}
    per_item: dict = {}
    values, failed = [], 0
    for name, frames in sorted(by_sequence.items()):
        frames.sort(key=lambda s: int(s.attributes.get("frame", 0)))
        truth, predicted, norm = _sequence_arrays(frames, predictions, card, opts)
        missing = int(np.isnan(predicted).any(axis=(1, 2)).sum())
        jitter, pairs = sequence_jitter(predicted, truth, norm)
        metrics[f"{name}_jitter"] = jitter
        values.append(jitter)
        failed += missing
        per_item[name] = {"jitter": None if np.isnan(jitter) else jitter, "frames": len(frames), "pairs": pairs,
                          "failed": missing}
    finite = [v for v in values if not np.isnan(v)]
    metrics = {"jitter": float(np.mean(finite)) if finite else float("nan"), "sequences": len(values),
               "failed": failed, **metrics}
    return Score(metrics, per_item)


def _sequence_arrays(frames: list[Sample], predictions, card, opts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(truth, predicted, norm) of one sequence: (T, P, 2), (T, P, 2) with NaN frames where no answer, (T,)."""
    from facebench.schemes import convert, shared_points
    from facebench.types import face_key

    truth, predicted, norm = [], [], []
    for sample in frames:
        face = sample.faces[0]
        norm.append(float(np.sqrt(max(face.box.width, 0.0) * max(face.box.height, 0.0))))
        if card.task == "landmarks":
            assert face.landmarks is not None
            gt = face.landmarks.points[:, :2]
            mask = _scored_points(sample, opts["points"], len(gt))
            prediction = predictions.get(face_key(sample.id, 0))
            guess = np.full_like(gt, np.nan)
            if prediction is not None and prediction.landmarks is not None:
                shared = shared_points(prediction.landmarks.scheme, face.landmarks.scheme)
                guess = convert(prediction.landmarks.points[:, :2], prediction.landmarks.scheme,
                                face.landmarks.scheme)
                keep = np.zeros(len(gt), bool)
                keep[shared] = True
                mask &= keep
            # the same points in every frame: a point hidden in any frame of the sequence is left out below
            truth.append(np.where(mask[:, None], gt, np.nan))
            predicted.append(guess)
        else:
            gt_box = face.box.as_array()
            truth.append(gt_box.reshape(2, 2))
            prediction = predictions.get(sample.id)
            guess = np.full((2, 2), np.nan)
            if prediction is not None and prediction.detections:
                boxes = np.array([d.box.as_array() for d in prediction.detections])
                iou = box_iou(boxes, gt_box[None])[:, 0]
                best = int(np.argmax(iou))
                if iou[best] >= float(opts["min_iou"]):
                    guess = boxes[best].reshape(2, 2)
            predicted.append(guess)
    truth_arr, predicted_arr = np.stack(truth), np.stack(predicted)
    if card.task == "landmarks":  # compare the points scored in every frame of the sequence
        always = np.isfinite(truth_arr).all(axis=(0, 2))
        truth_arr, predicted_arr = truth_arr[:, always], predicted_arr[:, always]
    return truth_arr, predicted_arr, np.array(norm)
