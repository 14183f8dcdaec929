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
from facebench.metrics.early_exit import stop_stage
from facebench.metrics.landmarks import (
    REGIONS,
    UnlabelledNormaliser,
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
    ``ap_method`` (voc | voc07 | coco101), a minimum face size as ``min_area``
    (pixels squared) or ``min_face_fraction`` (of the image area), and
    ``max_detections`` per image (absent: no cap; 100 is pycocotools' maxDets,
    see :mod:`facebench.metrics.detection` for what "equals pycocotools" means)."""
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
                                 rule=opts.get("rule", "voc"), ap=opts.get("ap_method", "voc"), min_area=min_area,
                                 max_detections=opts.get("max_detections"))
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
        "_pr": {"ap": _pr_curve(result.precision, result.recall)},  # kept for plots, not a column
    }
    return metrics, per_item


def _pr_curve(precision, recall, points: int = 400) -> dict:
    """A precision-recall curve thinned to at most ``points`` points, for plots."""
    precision, recall = np.asarray(precision, dtype=np.float64), np.asarray(recall, dtype=np.float64)
    keep = np.unique(np.linspace(0, len(recall) - 1, min(points, len(recall))).round().astype(int)) if len(recall) else []
    return {"precision": precision[keep].tolist(), "recall": recall[keep].tolist()}


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

    One rule for the whole set and for every subset and bin: NME averages
    the faces that have a prediction, and the failures are counted beside it
    (``failed``); FR and AUC count a failed face as a failure.

    A prediction in another scheme is mapped onto the ground truth's
    (:mod:`facebench.schemes`) and compared on the shared points only; the
    metrics say how many (``points``). Unlabelled ground-truth points
    (``Landmarks.visible``) are not scored: each face's NME is over its
    labelled compared points (``per_item[...]["points"]``). The normaliser
    always comes from the full ground truth; a face that does not label the
    normaliser's points is a ground-truth error naming it."""
    opts = protocol.options
    norm, threshold = opts.get("norm", "inter-ocular"), float(opts.get("threshold", 0.08))
    keys, gt, pred, faces_of, compared, scheme, visible = paired_landmarks(protocol, samples, predictions)
    missing = np.isnan(pred[:, compared]).any(axis=(1, 2))
    norms = _normaliser(protocol, gt, norm, scheme, visible, keys, faces_of)
    labelled = visible[:, compared]
    errors = nme(np.nan_to_num(pred[:, compared]), gt[:, compared], norms, visible=labelled)
    errors[missing] = np.inf
    metrics = summarise_with_failures(errors, missing, threshold)
    metrics["failed"] = int(missing.sum())
    metrics["points"] = len(compared)
    groups: dict[str, np.ndarray] = {}
    if "subset_attribute" in opts:
        attr = opts["subset_attribute"]
        values = np.array([str(s.attributes.get(attr, "")) for s in faces_of])
        groups.update({v: values == v for v in sorted(set(values))})
    for flag in opts.get("subset_flags", ()):
        groups[flag] = np.array([bool(s.attributes.get(flag)) for s in faces_of])
    for name, row in grouped(errors, groups, threshold, failed=missing).items():
        metrics.update({f"{name}_{k}": v for k, v in row.items()})
    if "yaw_attribute" in opts:
        yaw = np.array([float(s.attributes[opts["yaw_attribute"]]) for s in faces_of])
        metrics.update({f"yaw{k}": v for k, v in balanced_yaw_nme(errors, yaw, missing).items()})
    per_item = {k: {"nme": None, "failed": True} if m else {"nme": float(e), "points": int(n)}
                for k, e, m, n in zip(keys, errors, missing, labelled.sum(axis=1))}
    return metrics, per_item


def _normaliser(protocol: Protocol, gt, norm: str, scheme: str, visible, keys, faces_of) -> np.ndarray:
    """The protocol's normaliser per face; a face that does not label its points is named."""
    try:
        return normaliser(gt, norm, scheme, visible=visible)
    except UnlabelledNormaliser as exc:
        named = [f"{keys[f]} ({_where(faces_of[f])})" for f in exc.faces[:5]]
        raise GroundTruthError(f"{protocol.source}: ground truth does not label the points of normaliser {norm!r} "
                               f"for {len(exc.faces)} face(s): {'; '.join(named)}") from None


def _where(sample: Sample) -> str:
    path = getattr(sample.image, "path", None)
    return str(path) if path is not None else sample.image_key or sample.id


class GroundTruthError(ValueError):
    """The ground truth cannot be scored as the protocol says; the message names the faces and files."""


def paired_landmarks(protocol: Protocol, samples: Sequence[Sample], predictions: Mapping[str, Prediction | None]):
    """Every annotated face with its prediction mapped onto the ground truth's scheme.

    Returns keys, ground truth (F, P, 2), predictions (F, P, 2; NaN where the
    model failed or its scheme lacks a point), the face's sample, the indices
    of the compared points, the ground truth's scheme and which ground-truth
    points are labelled (F, P)."""
    keys, gts, preds, faces_of, compared, labelled = [], [], [], [], None, []
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
                if protocol.points == "all" and len(shared) != len(gt):
                    raise ValueError(f"{key}: {protocol.source} compares all {len(gt)} points of {dst}; "
                                     f"a {src} prediction gives {len(shared)} of them")
                compared = shared
                mapped = convert(pred.landmarks.points[:, :2], src, dst)
            keys.append(key)
            gts.append(gt)
            preds.append(mapped)
            faces_of.append(sample)
            vis = getattr(face.landmarks, "visible", None)
            labelled.append(np.ones(len(gt), bool) if vis is None else np.asarray(vis, bool))
    if not keys:
        raise ValueError(f"{protocol.source}: no annotated landmarks in the dataset")
    scheme = faces_of[0].faces[0].landmarks.scheme
    if protocol.scheme and scheme != protocol.scheme:
        raise ValueError(f"{protocol.source}: the protocol's scheme is {protocol.scheme}; the dataset's is {scheme}")
    gt, pred = np.stack(gts), np.stack(preds)
    compared = compared if compared is not None else list(range(gt.shape[1]))
    return keys, gt, pred, faces_of, compared, scheme, np.stack(labelled)


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


def score_regions(protocol: Protocol, samples: Sequence[Sample], predictions: Mapping[str, Prediction | None]):
    """The Attention Mesh table: NME over all compared points (``norm``) and per
    region (``regions``: lips, eyes, ...), each region normalised by its own
    corners (:data:`facebench.metrics.landmarks.REGIONS`) over the points of it
    the prediction's scheme shares with the ground truth's."""
    opts = protocol.options
    threshold = float(opts.get("threshold", 0.08))
    keys, gt, pred, faces_of, compared, scheme, visible = paired_landmarks(protocol, samples, predictions)
    missing = np.isnan(pred[:, compared]).any(axis=(1, 2))
    ok = ~missing
    errors = {"all": nme(np.nan_to_num(pred[:, compared]), gt[:, compared],
                         _normaliser(protocol, gt, opts.get("norm", "inter-ocular"), scheme, visible, keys, faces_of),
                         visible=visible[:, compared])}
    metrics: dict = {"faces": len(keys), "failed": int(missing.sum()), "points": len(compared)}
    for region in opts.get("regions", ("lips", "eyes")):
        parts = ("right-eye", "left-eye") if region == "eyes" else (region,)
        per_part = []
        for part in parts:
            try:
                points, corners = REGIONS[scheme][part]
            except KeyError:
                raise ValueError(f"{protocol.source}: region {part!r} is not defined for {scheme}") from None
            idx = [i for i in points if i in set(compared)]
            if not idx:
                raise ValueError(f"{protocol.source}: the predictions share no {part} point with {scheme}")
            per_part.append(nme(np.nan_to_num(pred[:, idx]), gt[:, idx],
                                _normaliser(protocol, gt, corners, scheme, visible, keys, faces_of),
                                visible=visible[:, idx]))
            metrics[f"{part}_points"] = len(idx)
        errors[region] = np.mean(per_part, axis=0)
    for name, e in errors.items():
        metrics[name] = float(e[ok].mean()) if ok.any() else float("nan")
    metrics["fr"] = summarise_with_failures(np.where(missing, np.inf, errors["all"]), missing, threshold)["fr"]
    per_item = {k: ({"failed": True} if m else {name: float(e[i]) for name, e in errors.items()})
                for i, (k, m) in enumerate(zip(keys, missing))}
    return metrics, per_item


def _detections_xywhs(prediction: Prediction | None) -> np.ndarray:
    dets = prediction.detections if prediction is not None and prediction.detections is not None else ()
    rows = [[*d.box.as_array()[:2], d.box.width, d.box.height, d.score] for d in dets]
    return np.array(rows, dtype=np.float64).reshape(-1, 5)


def score_wider_ap(protocol: Protocol, samples: Sequence[Sample], predictions: Mapping[str, Prediction | None]):
    """WIDER FACE AP per setting by the official procedure (:mod:`facebench.metrics.wider`).

    Needs samples with every face and ``attributes["kept"]`` (the ``wider-face``
    dataset's ``val`` split, read from the eval tool's ``.mat`` files)."""
    from facebench.metrics.wider import evaluate_wider

    settings = list(protocol.options.get("settings", ("easy", "medium", "hard")))
    if any("kept" not in s.attributes for s in samples):
        raise ValueError(f"{protocol.source}: the official WIDER evaluation needs the eval tool's "
                         "wider_{easy,medium,hard}_val.mat lists (the dataset's val split)")
    gt = [np.array([[f.box.x0, f.box.y0, f.box.width, f.box.height] for f in s.faces]).reshape(-1, 4) for s in samples]
    kept = {name: [np.asarray(s.attributes["kept"][name]) for s in samples] for name in settings}
    preds = [_detections_xywhs(predictions.get(s.id)) for s in samples]
    curves = evaluate_wider(gt, kept, preds, iou_threshold=float(protocol.options.get("iou_threshold", 0.5)))
    metrics: dict = {name: curves[name].ap for name in settings}
    metrics["_pr"] = {name: _pr_curve(curves[name].precision, curves[name].recall) for name in settings}
    metrics.update({f"{name}_faces": curves[name].faces for name in settings})
    metrics["faces"] = sum(len(g) for g in gt)
    metrics["detections"] = int(sum(len(p) for p in preds))
    per_item = {s.id: {"detections": len(p)} for s, p in zip(samples, preds)}
    return metrics, per_item


def score_roc(protocol: Protocol, samples: Sequence[Sample], predictions: Mapping[str, Prediction | None]):
    """FDDB discrete ROC (:mod:`facebench.metrics.fddb`): true-positive rate at each of
    ``false_positives`` (default 1000); faces are the ellipses' bounding boxes."""
    from facebench.metrics.fddb import evaluate_fddb

    gt = [np.array([f.box.as_array() for f in s.faces]).reshape(-1, 4) for s in samples]
    preds = [predictions.get(s.id) for s in samples]
    dets = [p.detections if p is not None and p.detections is not None else () for p in preds]
    boxes = [np.array([d.box.as_array() for d in ds]).reshape(-1, 4) for ds in dets]
    scores = [np.array([d.score for d in ds], dtype=np.float64) for ds in dets]
    roc = evaluate_fddb(gt, boxes, scores, overlap=float(protocol.options.get("overlap", 0.5)))
    metrics: dict = {f"tpr@{int(n)}": roc.tpr_at(int(n)) for n in protocol.options.get("false_positives", (1000,))}
    metrics.update({"faces": roc.faces, "detections": int(sum(len(b) for b in boxes))})
    return metrics, {s.id: {"detections": len(b)} for s, b in zip(samples, boxes)}


def score_jitter(protocol: Protocol, samples: Sequence[Sample], predictions: Mapping[str, Prediction | None],
                 card=None):
    """BlazeFace's shifted-copies jitter (:mod:`facebench.shift_jitter`), for
    detectors and landmark models alike (the card says which)."""
    from facebench.shift_jitter import photo_jitter

    if card is None:
        raise ValueError(f"{protocol.source}: the jitter metric needs the model's card (detector or landmarks)")
    per_photo = photo_jitter(samples, predictions, card.task, float(protocol.options.get("min_iou", 0.3)))
    values = np.array([p.jitter for p in per_photo if p.jitter is not None])
    metrics = {"jitter": float(values.mean()) if values.size else float("nan"),
               "jitter_median": float(np.median(values)) if values.size else float("nan"),
               "photos": len(per_photo), "missed": int(sum(p.missed for p in per_photo)),
               "unfollowed": int(sum(p.jitter is None for p in per_photo))}
    per_item = {p.source: {"jitter": p.jitter, "copies": p.copies, "missed": p.missed} for p in per_photo}
    return metrics, per_item


SCORERS: dict[str, Callable] = {"ap": score_ap, "wider_ap": score_wider_ap, "roc": score_roc, "nme": score_nme,
                                "regions": score_regions, "jitter": score_jitter, "early_exit": score_early_exit}
NEEDS_CARD = (score_early_exit, score_jitter)


def score(protocol: Protocol, samples, predictions, card=None):
    try:
        scorer = SCORERS[protocol.metric]
    except KeyError:
        raise ValueError(f"{protocol.source}: unknown metric {protocol.metric!r}; known: {', '.join(SCORERS)}") from None
    if scorer in NEEDS_CARD:
        return scorer(protocol, samples, predictions, card)
    return scorer(protocol, samples, predictions)
