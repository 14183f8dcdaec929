"""Landmark metrics: normalisers, NME, CED/FR/AUC by formula, groups, and real 300W / AFLW2000-3D annotations."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import simpson

from facebench.metrics import landmarks as lm
from facebench.offline.prediction_files import read_landmarks

from conftest import SHARED

W300 = SHARED / "300w-annotations"
AFLW = SHARED / "aflw2000-3d-annotations"
needs_300w = pytest.mark.skipif(not W300.is_dir(), reason=f"{W300} absent (real 300W annotations)")
needs_aflw = pytest.mark.skipif(not AFLW.is_dir(), reason=f"{AFLW} absent (real AFLW2000-3D annotations)")


def _face68(rng, n=5):
    return rng.uniform(0, 200, (n, 68, 2))


def test_normalisers_by_hand():
    gt = np.zeros((1, 68, 2))
    gt[0, 36] = [10, 50]
    gt[0, 45] = [70, 50]  # outer corners 60 apart
    gt[0, 36:42, :] = [[10, 50], [14, 48], [18, 48], [22, 50], [18, 52], [14, 52]]  # right eye, centre (16, 50)
    gt[0, 42:48, :] = [[48, 50], [52, 48], [56, 48], [70, 50], [56, 52], [52, 52]]  # left eye, centre (55.67, 50)
    gt[0, 48] = [20, 100]
    gt[0, 54] = [60, 100]
    assert lm.normaliser(gt, "inter-ocular", "ibug68")[0] == pytest.approx(60)
    assert lm.normaliser(gt, "inter-pupil", "ibug68")[0] == pytest.approx((48 + 52 + 56 + 70 + 56 + 52) / 6 - 16)
    assert lm.normaliser(gt, "mouth-corners", "ibug68")[0] == pytest.approx(40)
    assert lm.normaliser(gt, "36,54", "ibug68")[0] == pytest.approx(np.hypot(50, 50))
    # box of all points: x 0..70, y 0..100 (the untouched points sit at the origin)
    assert lm.normaliser(gt, "box")[0] == pytest.approx(np.sqrt(70 * 100))
    assert lm.normaliser(gt, "box-mean-side")[0] == pytest.approx(85)
    assert lm.normaliser(gt, "box-diagonal")[0] == pytest.approx(np.hypot(70, 100))
    wflw = np.zeros((1, 98, 2))
    wflw[0, 60], wflw[0, 72], wflw[0, 96], wflw[0, 97] = [0, 0], [30, 40], [5, 0], [25, 0]
    assert lm.normaliser(wflw, "inter-ocular", "wflw98")[0] == 50
    assert lm.normaliser(wflw, "inter-pupil", "wflw98")[0] == 20
    with pytest.raises(ValueError, match="not defined for scheme"):
        lm.normaliser(wflw, "inter-pupil", "mediapipe468")


def test_nme_known_offset_and_visibility():
    rng = np.random.default_rng(0)
    gt = _face68(rng)
    iod = lm.normaliser(gt, "inter-ocular", "ibug68")
    pred = gt + np.array([3.0, 4.0])  # every point 5 px off
    assert np.allclose(lm.nme(pred, gt, "inter-ocular", "ibug68"), 5 / iod)
    pred[:, 0] += 100  # one point far off, but marked invisible
    visible = np.ones((5, 68), bool)
    visible[:, 0] = False
    assert np.allclose(lm.nme(pred, gt, iod, visible=visible), 5 / iod)
    with pytest.raises(ValueError, match="zero or undefined"):
        lm.nme(gt, gt, np.array([1, 1, 0, 1, 1.0]))


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(0.1, 10), st.floats(-500, 500), st.floats(-500, 500),
       st.sampled_from(["inter-ocular", "inter-pupil", "box", "box-diagonal"]))
def test_nme_invariant_to_common_scale_and_translation(seed, scale, tx, ty, norm):
    rng = np.random.default_rng(seed)
    gt = _face68(rng, 3)
    pred = gt + rng.normal(0, 3, gt.shape)
    def moved(a):
        return a * scale + np.array([tx, ty])

    assert np.allclose(lm.nme(moved(pred), moved(gt), norm, "ibug68"), lm.nme(pred, gt, norm, "ibug68"), rtol=1e-9)


def _simpson_weights(n_intervals: int) -> np.ndarray:
    w = np.ones(n_intervals + 1)
    w[1:-1:2], w[2:-1:2] = 4, 2
    return w / 3


@pytest.mark.parametrize("threshold", [0.05, 0.08, 0.10])
def test_ced_auc_fr_by_formula(threshold):
    nmes = np.array([0.0, 0.01, 0.02, 0.02, 0.049, 0.079, 0.0999, 0.5])
    curve = lm.ced(nmes, threshold)
    n = round(threshold / 1e-4)
    assert len(curve.xs) == n + 1 and curve.xs[-1] == pytest.approx(threshold, abs=1e-15)
    expected_ys = np.array([(nmes <= x).sum() for x in curve.xs]) / len(nmes)
    assert np.array_equal(curve.ys, expected_ys)
    assert curve.failure_rate == 1 - (nmes <= curve.xs[-1]).sum() / len(nmes)
    # composite Simpson with an even number of intervals, written out
    assert curve.auc == pytest.approx(1e-4 * np.dot(_simpson_weights(n), expected_ys) / threshold, rel=1e-12)


def test_auc_agrees_with_the_common_reference_code_where_its_grid_is_right():
    rng = np.random.default_rng(3)
    nmes = np.abs(rng.normal(0.05, 0.03, 1000))
    for threshold in (0.08, 0.10):
        xs = np.arange(0, threshold + 1e-4, 1e-4)  # the widely copied evaluation code
        ys = np.array([np.count_nonzero(nmes <= x) for x in xs]) / len(nmes)
        ref_auc, ref_fr = simpson(ys, x=xs) / threshold, 1.0 - ys[-1]
        curve = lm.ced(nmes, threshold)
        assert curve.auc == ref_auc and curve.failure_rate == ref_fr
    assert len(np.arange(0, 0.05 + 1e-4, 1e-4)) == 502  # that code's grid overshoots at 0.05 (documented)
    assert len(lm.ced(nmes, 0.05).xs) == 501


def test_perfect_and_hopeless_curves():
    assert lm.ced(np.zeros(10), 0.08).auc == pytest.approx(1.0, abs=1e-12)
    bad = lm.ced(np.full(10, 0.5), 0.08)
    assert bad.auc == 0.0 and bad.failure_rate == 1.0


def test_region_nme_uses_region_corners():
    rng = np.random.default_rng(1)
    gt = _face68(rng, 2)
    pred = gt.copy()
    pred[:, 48:68] += [2.0, 0.0]  # only the lips move
    mouth = lm.normaliser(gt, "mouth-corners", "ibug68")
    assert np.allclose(lm.region_nme(pred, gt, "ibug68", "lips"), 2 / mouth)
    assert np.allclose(lm.region_nme(pred, gt, "ibug68", "eyes"), 0)


def test_grouped_and_yaw_bins_balanced_mean():
    nmes = np.array([0.01, 0.02, 0.03, 0.04, 0.10, 0.20])
    yaw = np.array([0, -30, 30.5, 45, -61, 89])
    bins = lm.balanced_yaw_nme(nmes, yaw)
    assert bins["[0,30]"] == pytest.approx(0.015) and bins["(30,60]"] == pytest.approx(0.035)
    assert bins["(60,90]"] == pytest.approx(0.15)
    assert bins["balanced"] == pytest.approx((0.015 + 0.035 + 0.15) / 3)
    groups = lm.grouped(nmes, {"a": np.array([0, 1]), "b": nmes > 0.05})
    assert groups["a"]["nme"] == pytest.approx(0.015) and groups["b"]["faces"] == 2


@pytest.mark.shared
@needs_300w
def test_real_300w_splits_and_known_offsets():
    _, full = read_landmarks(W300 / "face_landmarks_300w_valid.csv")
    common_names, common = read_landmarks(W300 / "face_landmarks_300w_valid_common.csv")
    _, challenge = read_landmarks(W300 / "face_landmarks_300w_valid_challenge.csv")
    assert full.shape == (689, 68, 2) and len(common) == 554 and len(challenge) == 135
    assert sum(n.startswith(("helen/testset", "lfpw/testset")) for n in common_names) == 554
    assert np.all(lm.nme(full, full, "inter-pupil", "ibug68") == 0)
    # every point moved by 5% of that face's inter-pupil distance, in a per-face direction
    ipd = lm.normaliser(full, "inter-pupil", "ibug68")
    angle = np.linspace(0, 2 * np.pi, len(full))
    pred = full + (0.05 * ipd)[:, None, None] * np.stack([np.cos(angle), np.sin(angle)], 1)[:, None, :]
    assert np.allclose(lm.nme(pred, full, "inter-pupil", "ibug68"), 0.05, rtol=1e-12)
    # inter-pupil is shorter than inter-ocular, so the same error reads larger
    io = lm.nme(pred, full, "inter-ocular", "ibug68")
    assert np.all(io < 0.05) and 0.6 < np.mean(io / 0.05) < 0.9
    summary = lm.summarise(lm.nme(pred, full, "inter-pupil", "ibug68"), 0.08)
    assert summary["fr"] == 0.0 and summary["auc"] == pytest.approx(1 - 0.05 / 0.08, abs=2e-3)


@pytest.mark.shared
@needs_aflw
def test_real_aflw2000_yaw_bins():
    pts = np.load(AFLW / "AFLW2000-3D.pts68.npy")
    yaw = np.load(AFLW / "AFLW2000-3D.pose.npy")
    gt = np.transpose(pts[:, :2], (0, 2, 1)).astype(np.float64)
    assert [int(m.sum()) for m in lm.yaw_bins(yaw).values()] == [1312, 383, 305]  # the published bin sizes
    box = lm.normaliser(gt, "box")
    pred = gt + (0.03 * box)[:, None, None] * np.array([0.6, 0.8])
    bins = lm.balanced_yaw_nme(lm.nme(pred, gt, "box"), yaw)
    assert all(v == pytest.approx(0.03, rel=1e-12) for k, v in bins.items() if not k.endswith("_failed"))


def test_mediapipe_regions_contain_their_corner_points():
    from facebench.metrics.landmarks import _PAIRS, REGIONS, region_nme

    for scheme in ("mediapipe468", "mediapipe478"):
        for name, (points, corners) in REGIONS[scheme].items():
            i, j = _PAIRS[scheme][corners]
            assert i in points and j in points, (scheme, name)
    gt = np.random.default_rng(4).uniform(0, 100, size=(3, 478, 2))
    moved = gt.copy()
    moved[:, list(REGIONS["mediapipe478"]["lips"][0])] += [3.0, 4.0]  # lips only, by 5 px
    corners = np.linalg.norm(gt[:, 61] - gt[:, 291], axis=1)
    assert np.allclose(region_nme(moved, gt, "mediapipe478", "lips"), 5.0 / corners)
    assert np.allclose(region_nme(moved, gt, "mediapipe478", "eyes"), 0.0)
