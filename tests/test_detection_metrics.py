"""Detection metrics: IoU against pycocotools, VOC matching and all-point AP by hand."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pycocotools import mask as coco_mask

from facebench.metrics.detection import (
    FALSE_POSITIVE,
    IGNORED,
    TRUE_POSITIVE,
    average_precision,
    box_area,
    box_iou,
    evaluate_detections,
    match_image,
    precision_recall,
)

from pycocotools_reference import pycocotools_ap50

coords = arrays(np.float64, st.tuples(st.integers(1, 6), st.just(4)), elements=st.floats(0, 200, width=32))


def _corners(raw):
    lo = np.minimum(raw[:, :2], raw[:, 2:])
    return np.concatenate([lo, lo + np.abs(raw[:, 2:] - raw[:, :2]) + 1.0], axis=1)


@settings(max_examples=200, deadline=None)
@given(coords, coords)
def test_iou_equals_pycocotools(a, b):
    a, b = _corners(a), _corners(b)
    def xywh(x):
        return np.concatenate([x[:, :2], x[:, 2:] - x[:, :2]], axis=1)

    expected = coco_mask.iou(xywh(a), xywh(b), [0] * len(b))
    assert np.allclose(box_iou(a, b), expected, rtol=1e-12, atol=1e-12)


def test_voc_matching_with_ignored_faces():
    gt = np.array([[0, 0, 10, 10], [100, 100, 110, 110], [200, 200, 210, 210.]])
    ignore = np.array([False, False, True])
    dets = np.array([[0, 0, 10, 10], [0, 1, 10, 11], [100, 100, 110, 111], [201, 200, 211, 210], [50, 50, 60, 60.]])
    scores = np.array([0.9, 0.95, 0.5, 0.8, 0.7])
    labels = match_image(dets, scores, gt, ignore)
    # the 0.95 box takes face 0 first, so the exact 0.9 box is a duplicate
    assert labels.tolist() == [FALSE_POSITIVE, TRUE_POSITIVE, TRUE_POSITIVE, IGNORED, FALSE_POSITIVE]


def test_all_point_ap_by_hand():
    # ranked: TP, FP, TP, FP with 3 faces -> precision 1, 1/2, 2/3, 1/2; recall 1/3, 1/3, 2/3, 2/3
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    labels = np.array([TRUE_POSITIVE, FALSE_POSITIVE, TRUE_POSITIVE, IGNORED, FALSE_POSITIVE])
    precision, recall = precision_recall(scores, labels, n_positives=3)
    assert np.allclose(precision, [1, 1 / 2, 2 / 3, 1 / 2])
    assert np.allclose(recall, [1 / 3, 1 / 3, 2 / 3, 2 / 3])
    # envelope: 1 up to recall 1/3, 2/3 up to 2/3, nothing beyond
    assert average_precision(precision, recall) == pytest.approx(1 / 3 + (1 / 3) * (2 / 3))


def test_perfect_and_empty_detections():
    p, r = precision_recall(np.array([0.9, 0.8]), np.array([TRUE_POSITIVE, TRUE_POSITIVE]), 2)
    assert average_precision(p, r) == 1.0
    p, r = precision_recall(np.zeros(0), np.zeros(0, np.int8), 2)
    assert average_precision(p, r) == 0.0


# --- AP flavours and matching rules against pycocotools -----------------------------------------

def _random_problem(seed: int, n_images: int = 6, crowd: bool = False):
    """Faces, and detections that partly overlap them, duplicate them or miss.

    ``crowd`` adds faces overlapping other faces, so detections have several candidates.
    """
    rng = np.random.default_rng(seed)
    gts, dets, scores = [], [], []
    for _ in range(n_images):
        n = int(rng.integers(0, 6))
        xy = rng.uniform(0, 300, (n, 2))
        wh = rng.uniform(4, 80, (n, 2))
        if crowd and n:
            k = int(rng.integers(1, n + 1))
            xy = np.r_[xy, xy[:k] + rng.uniform(-0.2, 0.2, (k, 2)) * wh[:k]]
            wh = np.r_[wh, wh[:k] * rng.uniform(0.85, 1.15, (k, 2))]
            n += k
        gt = np.concatenate([xy, xy + wh], axis=1)
        near = gt[rng.integers(0, n, int(rng.integers(0, 2 * n + 1)))] if n else np.zeros((0, 4))
        scale = np.repeat(wh[:1] if n else np.ones((1, 2)), 2, axis=1).repeat(len(near), 0)
        near = near + rng.normal(0, 0.15, near.shape) * scale
        far_xy = rng.uniform(0, 300, (int(rng.integers(0, 3)), 2))
        far = np.concatenate([far_xy, far_xy + rng.uniform(4, 80, far_xy.shape)], axis=1)
        det = np.concatenate([near, far]).reshape(-1, 4)
        det[:, 2:] = np.maximum(det[:, 2:], det[:, :2] + 1)
        gts.append(gt)
        dets.append(det)
        scores.append(rng.uniform(0, 1, len(det)))
    return gts, dets, scores


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([0.0, 400.0, 1500.0]), st.booleans())
def test_coco101_equals_pycocotools(seed, min_area, crowd):
    gts, dets, scores = _random_problem(seed, crowd=crowd)
    if sum(len(d) for d in dets) == 0 or sum(int(np.sum(box_area(g) >= min_area)) for g in gts) == 0:
        return  # pycocotools cannot load an empty result list / has no AP without faces
    ours = evaluate_detections(gts, dets, scores, rule="coco", ap="coco101", min_area=min_area).ap
    assert ours == pycocotools_ap50(gts, dets, scores, min_area)  # to the last digit


def test_voc_and_coco_rules_differ_where_they_should():
    # two faces side by side; the top detection straddles them, preferring face 0
    gt = np.array([[0, 0, 10, 10], [6, 0, 16, 10.]])
    dets = np.array([[2, 0, 12, 10], [3, 0, 13, 10.]])
    scores = np.array([0.9, 0.8])
    # VOC: both detections' best face is face 0 -> the second is a duplicate
    assert match_image(dets, scores, gt, rule="voc").tolist() == [TRUE_POSITIVE, FALSE_POSITIVE]
    # COCO: the second takes the best *free* face, face 1 (IoU 0.54)
    assert match_image(dets, scores, gt, rule="coco").tolist() == [TRUE_POSITIVE, TRUE_POSITIVE]


def test_voc_threshold_is_strict():
    gt = np.array([[0, 0, 10, 10.]])
    half = np.array([[0, 0, 10, 5.]])  # IoU exactly 0.5
    assert match_image(half, [1.0], gt, rule="voc").tolist() == [FALSE_POSITIVE]
    assert match_image(half, [1.0], gt, rule="coco").tolist() == [TRUE_POSITIVE]


def test_voc07_eleven_point_by_hand():
    # precision 1 up to recall 0.5, then 0.5 up to recall 1.0
    precision = np.array([1.0, 1.0, 2 / 3, 0.5])
    recall = np.array([0.25, 0.5, 0.5, 1.0])
    # recall grid 0, .1, ..., 1: 6 points at precision 1 (0 … 0.5), 5 at 0.5
    assert average_precision(precision, recall, "voc07") == pytest.approx((6 * 1.0 + 5 * 0.5) / 11)
    assert average_precision(precision, recall, "voc") == pytest.approx(0.5 * 1.0 + 0.5 * 0.5)


def test_min_area_ignores_small_faces_and_small_false_positives():
    gt = np.array([[0, 0, 100, 100], [200, 200, 205, 205.]])  # the second face is tiny
    dets = np.array([[0, 0, 100, 100], [200, 200, 205, 205], [300, 300, 304, 304], [400, 400, 480, 480.]])
    labels = match_image(dets, [0.9, 0.8, 0.7, 0.6], gt, min_area=400)
    assert labels.tolist() == [TRUE_POSITIVE, IGNORED, IGNORED, FALSE_POSITIVE]


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from(["voc", "coco"]), st.sampled_from(["voc", "voc07", "coco101"]))
def test_ap_invariant_to_detection_order(seed, rule, ap):
    gts, dets, scores = _random_problem(seed, crowd=True)
    rng = np.random.default_rng(seed)
    perms = [rng.permutation(len(d)) for d in dets]
    a = evaluate_detections(gts, dets, scores, rule=rule, ap=ap).ap
    b = evaluate_detections(gts, [d[p] for d, p in zip(dets, perms)], [s[p] for s, p in zip(scores, perms)],
                            rule=rule, ap=ap).ap
    assert a == b
