"""Jitter: how much a prediction moves when the input moves by a known amount.

BlazeFace's measure: run the model on an image and on K copies shifted by known
(sub-)pixel offsets, undo each shift on the predictions, and take the RMS of
the per-point displacement from the prediction on the original image,
normalised by the inter-ocular distance (of the ground truth, or of the
prediction where there is none). Reported in % of IOD.

Points are (x, y) pairs. Positions move with the image; quantities that do not
(a box's width and height) are passed as points with ``moves=False`` so their
change counts as jitter without a shift to undo: :func:`detection_points`
builds that layout for a detection.
"""

from __future__ import annotations

import numpy as np


def detection_points(box: np.ndarray, keypoints: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A detection as jitter points: centre, size, keypoints; and which of them move."""
    x0, y0, x1, y1 = np.asarray(box, dtype=np.float64).reshape(4)
    kps = np.zeros((0, 2)) if keypoints is None else np.asarray(keypoints, dtype=np.float64).reshape(-1, 2)
    points = np.vstack([[[(x0 + x1) / 2, (y0 + y1) / 2], [x1 - x0, y1 - y0]], kps])
    moves = np.r_[True, False, np.ones(len(kps), bool)]
    return points, moves


def shift_jitter(reference: np.ndarray, shifted: np.ndarray, offsets: np.ndarray, scale: float,
                 moves: np.ndarray | None = None) -> float:
    """RMS displacement (fraction of ``scale``) of predictions on shifted copies.

    ``reference`` (P, 2): prediction on the original; ``shifted`` (K, P, 2):
    predictions on the copies whose content moved by ``offsets`` (K, 2) pixels.
    """
    reference = np.asarray(reference, dtype=np.float64).reshape(-1, 2)
    shifted = np.asarray(shifted, dtype=np.float64).reshape(-1, *reference.shape)
    offsets = np.asarray(offsets, dtype=np.float64).reshape(-1, 2)
    if len(offsets) != len(shifted):
        raise ValueError(f"{len(shifted)} shifted predictions but {len(offsets)} offsets")
    if not scale > 0:
        raise ValueError(f"jitter scale must be positive, got {scale}")
    moves = np.ones(len(reference), bool) if moves is None else np.asarray(moves, bool)
    undone = shifted - offsets[:, None, :] * moves[None, :, None]
    d = undone - reference[None]
    return float(np.sqrt(np.mean(np.sum(d * d, axis=-1))) / scale)


def sequence_jitter(predictions: np.ndarray, ground_truth: np.ndarray, scale: float | None = None,
                    scheme: str | None = None) -> float:
    """Frame-to-frame jitter on a sequence (T, P, 2), the true motion removed.

    The residual r_t = prediction_t - truth_t is differenced between frames;
    the RMS of that per-point change over ``scale`` (default: the truth's mean
    inter-ocular distance in ``scheme``, which defaults to the scheme with P
    points; a scheme without an inter-ocular pair needs ``scale``).
    """
    pred = np.asarray(predictions, dtype=np.float64)
    gt = np.asarray(ground_truth, dtype=np.float64)
    if pred.shape != gt.shape or pred.ndim != 3 or len(pred) < 2:
        raise ValueError(f"need two or more frames of matching (T, P, 2) arrays; got {pred.shape} and {gt.shape}")
    if scale is None:
        from facebench.metrics.landmarks import normaliser
        from facebench.schemes import scheme_for_size

        scheme = scheme or scheme_for_size(gt.shape[1])
        if scheme is None:
            raise ValueError(f"no landmark scheme has {gt.shape[1]} points: pass scale (or scheme)")
        scale = float(np.mean(normaliser(gt, "inter-ocular", scheme)))
    if not scale > 0:
        raise ValueError(f"jitter scale must be positive, not {scale} (coincident eye corners?)")
    step = np.diff(pred - gt, axis=0)
    return float(np.sqrt(np.mean(np.sum(step * step, axis=-1))) / scale)
