"""Landmark scorers: NME with CED/FR/AUC and its subsets, and the Attention Mesh per-region table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from facebench.errors import FacebenchError
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
from facebench.scoring.base import Score
from facebench.types import Prediction, Sample, face_key


class GroundTruthError(FacebenchError, ValueError):
    """The ground truth cannot be scored as the protocol says; the message names the faces and files."""


def score_nme(protocol: Protocol, samples: Sequence[Sample], predictions: Mapping[str, Prediction | None],
              opts: Mapping, card=None) -> Score:
    """NME per face with CED/FR/AUC, per subset and yaw bin as the options say (the ``nme`` record).

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
    norm, threshold = opts["norm"], float(opts["threshold"])
    keys, gt, pred, faces_of, compared, scheme, visible = paired_landmarks(protocol, samples, predictions, card)
    missing = np.isnan(pred[:, compared]).any(axis=(1, 2))
    norms = _normaliser(protocol, gt, norm, scheme, visible, keys, faces_of)
    labelled = visible[:, compared]
    errors = nme(np.nan_to_num(pred[:, compared]), gt[:, compared], norms, visible=labelled)
    errors[missing] = np.inf
    metrics = summarise_with_failures(errors, missing, threshold)
    metrics["failed"] = int(missing.sum())
    metrics["points"] = len(compared)
    groups: dict[str, np.ndarray] = {}
    if opts["subset_attribute"] is not None:
        attr = opts["subset_attribute"]
        values = np.array([str(s.attributes.get(attr, "")) for s in faces_of])
        groups.update({v: values == v for v in sorted(set(values))})
    for flag in opts["subset_flags"]:
        groups[flag] = np.array([bool(s.attributes.get(flag)) for s in faces_of])
    for name, row in grouped(errors, groups, threshold, failed=missing).items():
        metrics.update({f"{name}_{k}": v for k, v in row.items()})
    if opts["yaw_attribute"] is not None:
        yaw = np.array([float(s.attributes[opts["yaw_attribute"]]) for s in faces_of])
        metrics.update({f"yaw{k}": v for k, v in balanced_yaw_nme(errors, yaw, missing).items()})
    per_item = {k: {"nme": None, "failed": True} if m else {"nme": float(e), "points": int(n)}
                for k, e, m, n in zip(keys, errors, missing, labelled.sum(axis=1))}
    return Score(metrics, per_item)


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


def paired_landmarks(protocol: Protocol, samples: Sequence[Sample], predictions: Mapping[str, Prediction | None],
                     card=None):
    """Every annotated face with its prediction mapped onto the ground truth's scheme.

    Returns keys, ground truth (F, P, 2), predictions (F, P, 2; NaN where the
    model failed or its scheme lacks a point), the face's sample, the indices
    of the compared points (the card's scheme decides them when no face has a
    prediction), the ground truth's scheme and which ground-truth points are
    labelled (F, P)."""
    keys, gts, preds, faces_of, compared, labelled, schemes = [], [], [], [], None, [], set()
    for sample in samples:
        for k, face in enumerate(sample.faces):
            if face.landmarks is None:
                continue
            schemes.add(face.landmarks.scheme)
            key = face_key(sample.id, k)
            prediction = predictions.get(key)
            gt = face.landmarks.points[:, :2]
            mapped = np.full_like(gt, np.nan)
            if prediction is not None and prediction.landmarks is not None:
                src, dst = prediction.landmarks.scheme, face.landmarks.scheme
                shared = shared_points(src, dst)
                if compared is not None and shared != compared:
                    raise ValueError(f"{key}: predictions mix landmark schemes")
                if protocol.points == "all" and len(shared) != len(gt):
                    raise ValueError(f"{key}: {protocol.source} compares all {len(gt)} points of {dst}; "
                                     f"a {src} prediction gives {len(shared)} of them")
                compared = shared
                mapped = convert(prediction.landmarks.points[:, :2], src, dst)
            keys.append(key)
            gts.append(gt)
            preds.append(mapped)
            faces_of.append(sample)
            vis = getattr(face.landmarks, "visible", None)
            labelled.append(np.ones(len(gt), bool) if vis is None else np.asarray(vis, bool))
    if not keys:
        raise ValueError(f"{protocol.source}: no annotated landmarks in the dataset")
    if len(schemes) > 1 or (protocol.scheme and schemes != {protocol.scheme}):
        raise ValueError(f"{protocol.source}: the protocol's scheme is {protocol.scheme}; the dataset's is "
                         f"{', '.join(sorted(schemes))}")
    (scheme,) = schemes
    gt, pred = np.stack(gts), np.stack(preds)
    if compared is None:  # every face failed: count the points the model would have been scored on
        compared = shared_points(card.scheme, scheme) if card is not None else list(range(gt.shape[1]))
    return keys, gt, pred, faces_of, compared, scheme, np.stack(labelled)


def score_regions(protocol: Protocol, samples: Sequence[Sample], predictions: Mapping[str, Prediction | None],
                  opts: Mapping, card=None) -> Score:
    """The Attention Mesh table: NME over all compared points (``norm``) and per
    region (``regions``: lips, eyes, ...), each region normalised by its own
    corners (:data:`facebench.metrics.landmarks.REGIONS`) over the points of it
    the prediction's scheme shares with the ground truth's."""
    threshold = float(opts["threshold"])
    keys, gt, pred, faces_of, compared, scheme, visible = paired_landmarks(protocol, samples, predictions, card)
    missing = np.isnan(pred[:, compared]).any(axis=(1, 2))
    ok = ~missing
    errors = {"all": nme(np.nan_to_num(pred[:, compared]), gt[:, compared],
                         _normaliser(protocol, gt, opts["norm"], scheme, visible, keys, faces_of),
                         visible=visible[:, compared])}
    metrics: dict = {"faces": len(keys), "failed": int(missing.sum()), "points": len(compared)}
    for region in opts["regions"]:
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
    return Score(metrics, per_item)


def check_ground_truth(protocol: Protocol, samples: Sequence[Sample], opts: Mapping) -> None:
    """Raise GroundTruthError, naming the faces and files, where the ground truth does not label the points
    the protocol's normaliser needs: called before a model runs, so no work is spent on a set that cannot
    be scored."""
    norm = opts["norm"]
    faces = [(face_key(s.id, k), s, f.landmarks, f.landmarks.visible) for s in samples for k, f in enumerate(s.faces)
             if f.landmarks is not None and f.landmarks.visible is not None]
    if not faces:
        return
    gt = np.stack([lm.points[:, :2] for _, _, lm, _ in faces])
    visible = np.stack([vis for _, _, _, vis in faces])
    _normaliser(protocol, gt, norm, faces[0][2].scheme, visible, [k for k, _, _, _ in faces],
                [s for _, s, _, _ in faces])
