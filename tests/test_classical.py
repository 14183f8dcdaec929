"""dlib (HOG detector, 68-point ERT) and OpenCV Haar, when their optional extras are installed."""

from __future__ import annotations

import numpy as np
import pytest

from facebench.metrics.detection import box_iou
from facebench.metrics.landmarks import nme
from facebench.registry import resolve
from facebench.run.harness import run_one


def _run(adapter, sample, face=None):
    return run_one(adapter, sample, face)[0]


def _loaded(name):
    adapter = resolve(name)()
    try:
        adapter.load()
    except ImportError as exc:
        pytest.skip(str(exc))
    return adapter


@pytest.mark.parametrize("name", ["dlib-hog", "opencv-haar"])
def test_classical_detectors_find_the_frontal_faces(name, mini_samples):
    detector = _loaded(name)
    for sample in mini_samples:
        if sample.id not in ("takeo", "lenna"):
            continue
        dets = _run(detector, sample).detections
        ious = box_iou(np.array([d.box.as_array() for d in dets]), sample.faces[0].box.as_array())
        assert ious.max() > 0.4, (name, sample.id, ious)


def test_dlib_68_on_its_own_detector_boxes(mini_samples, dlib_model):
    detector, predictor = _loaded("dlib-hog"), _loaded("dlib-68")
    for sample in mini_samples:
        if sample.id not in ("takeo", "lenna", "breakingbad"):
            continue
        dets = _run(detector, sample).detections
        gt = sample.faces[0]
        best = max(dets, key=lambda d: box_iou(d.box.as_array(), gt.box.as_array())[0, 0])
        pred = _run(predictor, sample, best).landmarks
        error = nme(pred.points[None], gt.landmarks.points[None], "inter-ocular", "ibug68")[0]
        assert error < 0.06, (sample.id, error)
