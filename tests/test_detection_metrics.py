"""Detection metrics: IoU against pycocotools, VOC matching and all-point AP by hand."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pycocotools import mask as coco_mask

from facebench.metrics.detection import (
    FALSE_POSITIVE, IGNORED, TRUE_POSITIVE, average_precision, box_iou, match_image, precision_recall,
)

coords = arrays(np.float64, st.tuples(st.integers(1, 6), st.just(4)), elements=st.floats(0, 200, width=32))


def _corners(raw):
    lo = np.minimum(raw[:, :2], raw[:, 2:])
    return np.concatenate([lo, lo + np.abs(raw[:, 2:] - raw[:, :2]) + 1.0], axis=1)


@settings(max_examples=200, deadline=None)
@given(coords, coords)
def test_iou_equals_pycocotools(a, b):
    a, b = _corners(a), _corners(b)
    xywh = lambda x: np.concatenate([x[:, :2], x[:, 2:] - x[:, :2]], axis=1)  # noqa: E731
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
