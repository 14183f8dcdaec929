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
from facebench.metrics.early_exit import stop_stage
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


def stage_errors(protocol: Protocol, samples: Sequence[Sample], predictions: Mapping[str, Prediction | None]):
    """Per-face NME and estimate after every stage of a cascade: keys, (F, S), (F, S).

    Faces whose prediction failed or has no stages are left out (and counted
    by the caller); the normaliser is the protocol's, from the ground truth."""
    norm = protocol.options.get("norm", "inter-ocular")
    keys, errors, estimates = [], [], []
    for sample in samples:
        for k, face in enumerate(sample.faces):
            key = f"{sample.id}#{k}"
            pred = predictions.get(key)
            if face.landmarks is None or pred is None or not pred.stages:
                continue
            gt = face.landmarks.points[:, :2]
            dst = face.landmarks.scheme
            shared = shared_points(pred.stages[0].landmarks.scheme, dst)
            mapped = np.stack([convert(st.landmarks.points[:, :2], st.landmarks.scheme, dst)[shared]
                               for st in pred.stages])
            scale = normaliser(gt[None], norm, dst)
            errors.append(nme(mapped, np.broadcast_to(gt[shared], mapped.shape), np.repeat(scale, len(mapped))))
            estimates.append([st.estimated_error for st in pred.stages])
            keys.append(key)
    if len({len(e) for e in errors}) > 1:
        raise ValueError("predictions have different numbers of stages")
    if not keys:
        return keys, np.zeros((0, 0)), np.zeros((0, 0))
    return keys, np.array(errors), np.array(estimates)


def stage_costs(card) -> tuple[np.ndarray, str]:
    """Cost of each stage from a card: MACs, or counted operations where the card gives those."""
    if card is not None and card.macs:
        return np.array(list(card.macs.values()), dtype=np.float64), "MACs"
    ops = (card.options.get("stage_operations") if card is not None else None) or {}
    if not ops:
        raise ValueError("the early-exit protocol needs a card with a cost per stage (macs or stage_operations)")
    return np.array(list(ops.values()), dtype=np.float64), "operations"


def operating_points(protocol: Protocol, card=None) -> list[float]:
    """Thresholds T_s to report: the card's own where it gives them (an estimate is
    in its model's units: MuSiCa's predicts NME, others measure an update),
    else the protocol's."""
    if card is not None and card.options.get("operating_points"):
        return [float(t) for t in card.options["operating_points"]]
    return [float(t) for t in protocol.options.get("operating_points", ())]


def score_early_exit(protocol: Protocol, samples: Sequence[Sample], predictions: Mapping[str, Prediction | None],
                     card=None):
    """Accuracy vs cost of a cascade that stops early (:mod:`facebench.metrics.early_exit`).

    Options: ``norm``, ``operating_points`` (thresholds T_s on the model's own
    estimate; a card's own ``operating_points`` take precedence), ``failure_threshold``, ``repeats`` and ``seed`` of the random
    baseline. Per operating point: the policy's NME, mean stages and cost,
    the random assignment of the same stage counts, and the oracle at the same
    mean cost."""
    from facebench.metrics.early_exit import early_exit_curves

    opts = protocol.options
    keys, errors, estimates = stage_errors(protocol, samples, predictions)
    if not keys:
        raise ValueError(f"{protocol.source}: no face has a staged prediction (is the model a cascade?)")
    costs, unit = stage_costs(card)
    if len(costs) != errors.shape[1]:
        raise ValueError(f"the card gives {len(costs)} stage costs; the predictions have {errors.shape[1]} stages")
    curves = early_exit_curves(errors, estimates, costs, failure_threshold=float(opts.get("failure_threshold", 0.08)),
                               repeats=int(opts.get("repeats", 50)), seed=int(opts.get("seed", 0)))
    metrics = {"faces": len(keys), "stages": errors.shape[1], "cost_unit": unit,
               "nme_first": float(errors[:, 0].mean()), "nme_last": float(errors[:, -1].mean()),
               "cost_last": float(costs.sum())}
    oracle = curves[curves.method == "oracle"].sort_values("macs")
    for k, t in enumerate(operating_points(protocol, card), start=1):
        stop = stop_stage(estimates, float(t))
        spent = np.cumsum(costs)[stop]
        counts = np.bincount(stop, minlength=errors.shape[1])
        # random: the expectation over assignments with the same stage counts
        random = float((counts * errors.mean(axis=0)).sum() / len(keys))
        metrics.update({f"T{k}": float(t), f"nme@T{k}": float(errors[np.arange(len(keys)), stop].mean()),
                        f"stages@T{k}": float(stop.mean() + 1), f"cost@T{k}": float(spent.mean()),
                        f"random@T{k}": random,
                        f"oracle@T{k}": float(np.interp(spent.mean(), oracle.macs, oracle.nme))})
    per_item = {k: {"nme": e.tolist(), "estimate": s.tolist()} for k, e, s in zip(keys, errors, estimates)}
    return metrics, per_item


SCORERS: dict[str, Callable] = {"ap": score_ap, "nme": score_nme, "early_exit": score_early_exit}


def score(protocol: Protocol, samples, predictions, card=None):
    try:
        scorer = SCORERS[protocol.metric]
    except KeyError:
        raise ValueError(f"{protocol.source}: unknown metric {protocol.metric!r}; known: {', '.join(SCORERS)}") from None
    if scorer is score_early_exit:
        return scorer(protocol, samples, predictions, card)
    return scorer(protocol, samples, predictions)
