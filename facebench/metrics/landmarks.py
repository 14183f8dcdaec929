"""Landmark metrics: NME with named normalisers, CED, failure rate and AUC.

Pure numpy functions over arrays of shape (F, N, 2): F faces, N points, (x, y).

* Per-face NME is the mean over points of the Euclidean error divided by that
  face's normaliser; a dataset's NME is the mean over faces.
* A normaliser is chosen by name and resolved against the landmark scheme, so
  "inter-ocular" means outer eye corners on iBUG-68 (36, 45) and on WFLW-98
  (60, 72) alike. Every normaliser is computed from the *ground truth*.
* CED, FR and AUC at threshold T use xs = 0, 1e-4, ..., T (``n = round(T /
  step)`` intervals). CED(x) is the fraction of faces with NME <= x, FR = 1 -
  CED(T) and AUC = ``scipy.integrate.simpson(CED, x=xs) / T``. The widely
  copied ``np.arange(0, T + step, step)`` overshoots by one point for T = 0.05
  and 0.07 (its last x is T + 1e-4); here the grid ends at T exactly, which
  is the stated definition and agrees with that code for T = 0.08 and 0.10.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.integrate import simpson

from facebench.errors import FacebenchError
from facebench.schemes import MEDIAPIPE_LEFT_EYE, MEDIAPIPE_LIPS, MEDIAPIPE_RIGHT_EYE, scheme_for_size

# Per scheme: named index pairs (distance between two points) and centres
# (distance between the means of two point groups). 0-based indices.
_PAIRS: dict[str, dict[str, tuple[int, int]]] = {
    "ibug68": {"inter-ocular": (36, 45), "right-eye-corners": (36, 39), "left-eye-corners": (42, 45),
               "mouth-corners": (48, 54)},
    "wflw98": {"inter-ocular": (60, 72), "inter-pupil": (96, 97), "right-eye-corners": (60, 64),
               "left-eye-corners": (68, 72), "mouth-corners": (76, 82)},
    "cofw29": {"inter-ocular": (8, 9), "inter-pupil": (16, 17)},
    "mediapipe468": {"inter-ocular": (33, 263), "right-eye-corners": (33, 133), "left-eye-corners": (362, 263),
                     "mouth-corners": (61, 291)},
    "mediapipe478": {"inter-ocular": (33, 263), "inter-pupil": (468, 473), "right-eye-corners": (33, 133),
                     "left-eye-corners": (362, 263), "mouth-corners": (61, 291)},
}
_CENTRES: dict[str, dict[str, tuple[range, range]]] = {
    "ibug68": {"inter-pupil": (range(36, 42), range(42, 48))},
}
BOX_NORMALISERS = ("box", "box-mean-side", "box-diagonal")

# Regions for region errors (the Attention Mesh table): the points compared
# and the corner pair that normalises them. "eyes" averages both eyes.
# The Attention Mesh table's regions: lips, and each eye's contour (16 points
# on the mesh, 6 on iBUG-68, 8 on WFLW), each normalised by its corner distance.
_MP_REGIONS: dict[str, tuple[Sequence[int], str]] = {"lips": (MEDIAPIPE_LIPS, "mouth-corners"),
               "right-eye": (MEDIAPIPE_RIGHT_EYE[:16], "right-eye-corners"),
               "left-eye": (MEDIAPIPE_LEFT_EYE[:16], "left-eye-corners")}
REGIONS: dict[str, dict[str, tuple[Sequence[int], str]]] = {
    "mediapipe468": _MP_REGIONS,
    "mediapipe478": _MP_REGIONS,
    "ibug68": {"lips": (range(48, 68), "mouth-corners"),
               "right-eye": (range(36, 42), "right-eye-corners"),
               "left-eye": (range(42, 48), "left-eye-corners")},
    "wflw98": {"lips": (range(76, 96), "mouth-corners"),
               "right-eye": (range(60, 68), "right-eye-corners"),
               "left-eye": (range(68, 76), "left-eye-corners")},
}


def normaliser_names(scheme: str) -> list[str]:
    """Every normaliser name that resolves for ``scheme``."""
    return sorted(set(_PAIRS.get(scheme, {})) | set(_CENTRES.get(scheme, {}))) + list(BOX_NORMALISERS)


def normaliser_points(name: str, scheme: str | None, n_points: int) -> list[int]:
    """The ground-truth points a normaliser is computed from (all of them for a box normaliser)."""
    if name in BOX_NORMALISERS:
        return list(range(n_points))
    if "," in name:
        try:
            return [int(v) % n_points for v in name.split(",")]
        except ValueError:
            raise ValueError(f"normaliser {name!r}: an explicit pair is two 0-based indices 'i,j'") from None
    if name in _PAIRS.get(scheme or "", {}):
        return list(_PAIRS[scheme or ""][name])
    if name in _CENTRES.get(scheme or "", {}):
        a, b = _CENTRES[scheme or ""][name]
        return [*a, *b]
    raise ValueError(f"normaliser {name!r} is not defined for scheme {scheme!r}; "
                     f"known: {', '.join(normaliser_names(scheme or ''))} or an explicit pair 'i,j'")


def normaliser(gt: np.ndarray, name: str, scheme: str | None = None, visible: np.ndarray | None = None) -> np.ndarray:
    """Per-face normalising distance (F,) from ground truth (F, N, 2).

    ``name`` is a scheme-defined name (``inter-ocular``, ``inter-pupil``,
    ``mouth-corners`` …), a box normaliser (``box`` = sqrt(w*h) of the
    landmarks' bounding box, ``box-mean-side`` = (w+h)/2, ``box-diagonal``),
    or an explicit pair ``"i,j"`` of 0-based indices. ``scheme`` defaults to
    the one scheme with N points. With ``visible`` (F, N), a box normaliser
    spans the labelled points only, and a face missing a point a named
    normaliser needs raises :class:`UnlabelledNormaliser`.

    >>> gt = np.zeros((1, 68, 2)); gt[0, 36], gt[0, 45] = (10, 20), (50, 20)
    >>> normaliser(gt, "inter-ocular")
    array([40.])
    """
    gt = _points(gt)
    if scheme is None and name not in BOX_NORMALISERS and "," not in name:
        scheme = scheme_for_size(gt.shape[1])
    if visible is not None:
        visible = np.asarray(visible, bool)
        needed = normaliser_points(name, scheme, gt.shape[1])
        lacking = np.flatnonzero(~visible[:, needed].all(axis=1)) if name not in BOX_NORMALISERS else \
            np.flatnonzero(visible.sum(axis=1) < 2)
        if lacking.size:
            raise UnlabelledNormaliser(name, lacking)
        if name in BOX_NORMALISERS:
            gt = np.where(visible[..., None], gt, np.nan)
    if name in BOX_NORMALISERS:
        lo, hi = np.nanmin(gt, axis=1), np.nanmax(gt, axis=1)
        w, h = hi[:, 0] - lo[:, 0], hi[:, 1] - lo[:, 1]
        if name == "box":
            return np.sqrt(w * h)
        return (w + h) / 2 if name == "box-mean-side" else np.hypot(w, h)
    if "," in name:
        try:
            i, j = (int(v) for v in name.split(","))
        except ValueError:
            raise ValueError(f"normaliser {name!r}: an explicit pair is two 0-based indices 'i,j'") from None
        return _pair_distance(gt, i, j)
    pairs, centres = _PAIRS.get(scheme or "", {}), _CENTRES.get(scheme or "", {})
    if name in pairs:
        return _pair_distance(gt, *pairs[name])
    if name in centres:
        a, b = centres[name]
        return np.linalg.norm(gt[:, list(a)].mean(axis=1) - gt[:, list(b)].mean(axis=1), axis=-1)
    raise ValueError(f"normaliser {name!r} is not defined for scheme {scheme!r}; "
                     f"known: {', '.join(normaliser_names(scheme or ''))} or an explicit pair 'i,j'")


class UnlabelledNormaliser(FacebenchError, ValueError):
    """Faces whose ground truth lacks a labelled point their normaliser needs (a ground-truth error)."""

    def __init__(self, name: str, faces: np.ndarray):
        self.faces = [int(f) for f in faces]
        super().__init__(f"normaliser {name!r} needs points that face(s) {self.faces[:10]} do not label")


def point_errors(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Euclidean error per point (F, N)."""
    pred, gt = _points(pred), _points(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth {gt.shape}")
    d = pred - gt
    return np.sqrt(d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1])


def nme(pred: np.ndarray, gt: np.ndarray, norm: np.ndarray | str, scheme: str | None = None,
        visible: np.ndarray | None = None) -> np.ndarray:
    """Per-face NME (F,): mean point error over the face's normaliser.

    Args:
        pred, gt: (F, N, 2) or (N, 2) points in pixels (a trailing depth is ignored).
        norm: a normaliser name (:func:`normaliser`; the scheme defaults to the
            one with N points) or per-face distances (F,).
        scheme: the landmark scheme, when N alone does not say it.
        visible: (F, N) booleans; the mean covers the labelled points only.

    Returns:
        (F,) errors as fractions of the normaliser (multiply by 100 for %).

    >>> gt = np.zeros((68, 2)); gt[45] = (40, 0)
    >>> nme(gt + (3, 4), gt, norm="inter-ocular")  # 5 px off everywhere, eyes 40 px apart
    array([0.125])
    """
    pred, gt = _points(pred), _points(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth {gt.shape}")
    d = normaliser(gt, norm, scheme) if isinstance(norm, str) else np.asarray(norm, dtype=np.float64)
    if np.any(~(d > 0)):
        bad = np.flatnonzero(~(d > 0))
        raise ValueError(f"normaliser is zero or undefined for face(s) {bad[:10].tolist()}")
    visible = None if visible is None else np.asarray(visible, bool)
    mean = np.empty(len(pred))
    # in chunks of faces, so the temporaries stay in cache (most of the cost at a million faces)
    for lo in range(0, len(pred), _CHUNK):
        errors = point_errors(pred[lo:lo + _CHUNK], gt[lo:lo + _CHUNK])
        if visible is None:
            mean[lo:lo + _CHUNK] = errors.mean(axis=1)
        else:
            v = visible[lo:lo + _CHUNK]
            mean[lo:lo + _CHUNK] = (errors * v).sum(axis=1) / np.maximum(v.sum(axis=1), 1)
    return mean / d


_CHUNK = 2048


def region_nme(pred: np.ndarray, gt: np.ndarray, scheme: str, region: str) -> np.ndarray:
    """Per-face NME over one region, normalised by that region's corners.

    ``eyes`` is the mean of the right- and left-eye NMEs of each face.
    """
    if region == "eyes":
        return (region_nme(pred, gt, scheme, "right-eye") + region_nme(pred, gt, scheme, "left-eye")) / 2
    try:
        points, corners = REGIONS[scheme][region]
    except KeyError:
        raise ValueError(f"region {region!r} is not defined for scheme {scheme!r}") from None
    gt = _points(gt)
    idx = list(points)
    return nme(_points(pred)[:, idx], gt[:, idx], normaliser(gt, corners, scheme))


@dataclass(frozen=True)
class CED:
    """A cumulative error distribution on the grid 0..threshold."""

    xs: np.ndarray
    ys: np.ndarray
    threshold: float
    failure_rate: float
    auc: float


def ced(nmes: np.ndarray, threshold: float = 0.08, step: float = 1e-4) -> CED:
    """CED, failure rate and Simpson AUC at ``threshold`` (see module doc)."""
    nmes = np.asarray(nmes, dtype=np.float64).ravel()
    if nmes.size == 0:
        raise ValueError("CED of zero faces is undefined")
    n = round(threshold / step)
    xs = np.arange(n + 1) * step
    ys = np.searchsorted(np.sort(nmes), xs, side="right") / nmes.size
    return CED(xs=xs, ys=ys, threshold=threshold, failure_rate=float(1.0 - ys[-1]),
               auc=float(simpson(ys, x=xs) / threshold))


def summarise(nmes: np.ndarray, threshold: float = 0.08, step: float = 1e-4) -> dict[str, float]:
    """NME, FR and AUC of one set of faces, as a flat dict."""
    curve = ced(nmes, threshold, step)
    return {"nme": float(np.mean(nmes)), "fr": curve.failure_rate, "auc": curve.auc, "faces": int(np.size(nmes))}


def summarise_with_failures(nmes: np.ndarray, failed: np.ndarray, threshold: float = 0.08,
                            step: float = 1e-4) -> dict[str, float]:
    """:func:`summarise` where ``failed`` faces (no prediction) count as failures in FR
    and AUC; NME, a mean, covers only the others (``nme_faces`` of them)."""
    failed = np.asarray(failed, bool)
    nmes = np.where(failed, np.inf, np.asarray(nmes, dtype=np.float64))
    out = summarise(nmes, threshold, step)
    out["nme"] = float(nmes[~failed].mean()) if (~failed).any() else float("nan")
    out["nme_faces"] = int((~failed).sum())
    return out


def grouped(nmes: np.ndarray, groups: dict[str, np.ndarray], threshold: float = 0.08,
            step: float = 1e-4, failed: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    """:func:`summarise_with_failures` per named group (a boolean mask or index array): the one
    rule for every subset and bin, so a failed face never turns a group's NME into infinity."""
    nmes = np.asarray(nmes, dtype=np.float64)
    failed = np.zeros(len(nmes), bool) if failed is None else np.asarray(failed, bool)
    out = {}
    for name, members in groups.items():
        members = np.asarray(members)
        selected, lost = nmes[members], failed[members]
        if not selected.size:
            out[name] = {"nme": float("nan"), "faces": 0, "failed": 0}
            continue
        out[name] = summarise_with_failures(selected, lost, threshold, step)
        out[name]["failed"] = int(lost.sum())
    return out


YAW_BINS = ((0.0, 30.0), (30.0, 60.0), (60.0, 90.0))


def yaw_bins(yaw_degrees: np.ndarray) -> dict[str, np.ndarray]:
    """AFLW2000-3D pose bins: |yaw| in [0, 30], (30, 60], (60, 90] degrees."""
    a = np.abs(np.asarray(yaw_degrees, dtype=np.float64))
    return {"[0,30]": a <= 30, "(30,60]": (a > 30) & (a <= 60), "(60,90]": a > 60}


def balanced_yaw_nme(nmes: np.ndarray, yaw_degrees: np.ndarray, failed: np.ndarray | None = None) -> dict[str, float]:
    """Mean NME per yaw bin over the faces with a prediction, and the bins' mean (the
    AFLW2000-3D headline figure); ``BIN_failed`` counts each bin's failed faces."""
    nmes = np.asarray(nmes, dtype=np.float64)
    failed = np.zeros(len(nmes), bool) if failed is None else np.asarray(failed, bool)
    out: dict[str, float] = {}
    for name, mask in yaw_bins(yaw_degrees).items():
        ok = mask & ~failed
        out[name] = float(nmes[ok].mean()) if ok.any() else float("nan")
        out[f"{name}_failed"] = int((mask & failed).sum())
    out["balanced"] = float(np.mean([out[k] for k in ("[0,30]", "(30,60]", "(60,90]")]))
    return out


def _pair_distance(gt: np.ndarray, i: int, j: int) -> np.ndarray:
    n = gt.shape[1]
    if not (-n <= i < n and -n <= j < n):
        raise ValueError(f"point pair ({i}, {j}) is outside {n} points")
    return np.linalg.norm(gt[:, i] - gt[:, j], axis=-1)


def _points(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.shape[-1] < 2:
        raise ValueError(f"landmarks must be (faces, points, 2); got shape {a.shape}")
    return a[..., :2]
