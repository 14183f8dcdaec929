"""FDDB ROC, jitter and early-exit curves: hand cases, properties, brute force, and the real FDDB folds."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from facebench.metrics.early_exit import COLUMNS, early_exit_curves, stop_stage
from facebench.metrics.fddb import ellipse_to_box, evaluate_fddb, image_counts
from facebench.metrics.jitter import detection_points, sequence_jitter, shift_jitter

from conftest import SHARED

FDDB = SHARED / "fddb-folds"


# --- FDDB --------------------------------------------------------------------------------------

def test_ellipse_to_box_by_hand():
    boxes = ellipse_to_box(np.array([[20, 10, 0, 100, 50], [20, 10, np.pi / 2, 100, 50], [10, 10, 0.7, 0, 0]]))
    assert np.allclose(boxes[0], [80, 40, 120, 60])
    assert np.allclose(boxes[1], [90, 30, 110, 70])  # major axis vertical
    assert np.allclose(boxes[2], [-10, -10, 10, 10])  # a circle ignores its angle


def test_one_to_one_matching_maximises_total_overlap():
    # detection 0 overlaps both faces; greedy (by score) would take face 0 and leave detection 1 (which only
    # fits face 0) unmatched. The best one-to-one assignment gives two true positives.
    faces = np.array([[0, 0, 10, 10], [4, 0, 14, 10.]])
    dets = np.array([[2, 0, 12, 10], [0, 0, 10, 10.]])
    t, tp, fp = image_counts(dets, np.array([0.9, 0.8]), faces)
    assert t.tolist() == [0.9, 0.8]
    assert tp.tolist() == [1, 2] and fp.tolist() == [0, 0]


def test_roc_accumulates_over_images_and_thresholds():
    faces = [np.array([[0, 0, 10, 10.]]), np.array([[0, 0, 10, 10], [20, 20, 30, 30.]])]
    dets = [np.array([[0, 0, 10, 10], [50, 50, 60, 60.]]), np.array([[20, 20, 30, 30.]])]
    scores = [np.array([0.9, 0.7]), np.array([0.8])]
    roc = evaluate_fddb(faces, dets, scores)
    assert roc.thresholds.tolist() == [0.9, 0.8, 0.7]
    assert roc.true_positives.tolist() == [1, 2, 2] and roc.false_positives.tolist() == [0, 0, 1]
    assert roc.faces == 3 and roc.tpr_at(0) == pytest.approx(2 / 3)


@pytest.mark.shared
@pytest.mark.skipif(not FDDB.is_dir(), reason=f"{FDDB} absent (real FDDB folds)")
def test_real_folds_scored_against_themselves():
    from facebench.datasets.fddb import read_fddb_folds

    gt = read_fddb_folds(FDDB)
    assert (len(gt), sum(len(v) for v in gt.values())) == (2845, 5171)
    boxes = [ellipse_to_box(v) for v in gt.values()]
    rng = np.random.default_rng(0)
    scores = [rng.random(len(b)) for b in boxes]
    roc = evaluate_fddb(boxes, boxes, scores)
    assert roc.tpr_at(0) == 1.0 and roc.false_positives.max() == 0
    # half of each image's boxes moved off the image: those are false positives, the rest still match
    moved = [np.where((np.arange(len(b)) % 2 == 1)[:, None], b + 10_000, b) for b in boxes]
    roc = evaluate_fddb(boxes, moved, scores)
    n_moved = sum(len(b) // 2 for b in boxes)
    assert roc.true_positives[-1] == 5171 - n_moved and roc.false_positives[-1] == n_moved


# --- jitter ------------------------------------------------------------------------------------

@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 8))
def test_jitter_is_zero_for_an_equivariant_predictor(seed, k):
    rng = np.random.default_rng(seed)
    box, kps = np.r_[rng.uniform(0, 100, 2), rng.uniform(120, 200, 2)], rng.uniform(0, 200, (6, 2))
    offsets = rng.uniform(-3, 3, (k, 2))
    ref, moves = detection_points(box, kps)
    # the predictor follows the content exactly: box and keypoints move, the size does not change
    shifted = np.stack([detection_points(box + np.r_[o, o], kps + o)[0] for o in offsets])
    assert shift_jitter(ref, shifted, offsets, scale=50.0, moves=moves) == pytest.approx(0.0, abs=1e-12)


def test_jitter_of_a_known_wobble():
    ref = np.zeros((4, 2))
    offsets = np.array([[1.0, 0.0], [0.0, 1.0]])
    # the prediction does not move with the content: it is off by the offset, 1 px everywhere
    shifted = np.zeros((2, 4, 2))
    assert shift_jitter(ref, shifted, offsets, scale=10.0) == pytest.approx(0.1)
    # size changes count without undoing a shift
    pts, moves = detection_points(np.array([0, 0, 10, 10.]))
    grown = detection_points(np.array([0, 0, 13, 14.]))[0][None]
    assert shift_jitter(pts, grown, np.zeros((1, 2)), 1.0, moves) == pytest.approx(
        np.sqrt((1.5**2 + 2**2 + 3**2 + 4**2) / 2)
    )


def test_sequence_jitter_removes_true_motion():
    rng = np.random.default_rng(0)
    truth = np.cumsum(rng.normal(0, 5, (30, 10, 2)), axis=0)  # the face moves a lot
    assert sequence_jitter(truth + 3.0, truth, scale=20.0) == pytest.approx(0.0, abs=1e-12)  # a bias is not jitter
    noisy = truth + rng.normal(0, 0.5, truth.shape)
    j = sequence_jitter(noisy, truth, scale=20.0)
    assert j == pytest.approx(0.5 * np.sqrt(2) * np.sqrt(2) / 20.0, rel=0.15)  # diff of iid noise: var 2 s^2 per axis


# --- early exit --------------------------------------------------------------------------------

def _cascade(seed, faces=300, stages=3):
    rng = np.random.default_rng(seed)
    nme = (np.abs(rng.normal(0.06, 0.03, (faces, 1))) * np.linspace(1.0, 0.6, stages)
           + np.abs(rng.normal(0, 0.01, (faces, stages))))
    estimate = np.round(nme + rng.normal(0, 0.01, nme.shape), 3)  # rounded: ties between faces and stages
    return nme, estimate, np.array([10e6, 20e6, 40e6][:stages])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sweep_equals_brute_force(seed):
    nme, estimate, macs = _cascade(seed)
    df = early_exit_curves(nme, estimate, macs, failure_threshold=0.07, repeats=5)
    assert list(df.columns) == COLUMNS
    model = df[df.method == "model"]
    assert len(model) == len(np.unique(estimate)) + 1  # every distinct estimate, plus infinity
    for row in model.itertuples():
            stop = stop_stage(estimate, row.threshold)
            faces = np.arange(len(nme))
            assert row.nme == pytest.approx(nme[faces, stop].mean(), rel=1e-12)
            assert row.macs == pytest.approx(np.cumsum(macs)[stop].mean(), rel=1e-12)
            assert row.stages == pytest.approx(stop.mean() + 1)
            assert row.failures == (estimate[faces, stop] > 0.07).sum()
    ends = model.iloc[[0, -1]]
    assert ends.stages.tolist() == [3.0, 1.0]  # lowest threshold: nobody stops early; infinity: all stop at once


def _oracle_at(df, macs):
    oracle = df[df.method == "oracle"].sort_values("macs")
    return np.interp(macs, oracle.macs, oracle.nme)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_oracle_is_the_lower_hull_of_every_stop_assignment(seed):
    rng = np.random.default_rng(seed)
    nme = rng.uniform(0.01, 0.1, (5, 3))  # errors may rise along the cascade
    macs = np.array([1.0, 2.0, 3.0])
    df = early_exit_curves(nme, rng.uniform(0, 0.1, (5, 3)), macs, repeats=2)
    cost = np.cumsum(macs)
    grid = np.array(np.meshgrid(*[range(3)] * 5, indexing="ij")).reshape(5, -1).T  # all 3**5 assignments
    points_nme = nme[np.arange(5), grid].mean(axis=1)
    points_macs = cost[grid].mean(axis=1)
    oracle = df[df.method == "oracle"]
    # every vertex is achievable, and no assignment lies below the curve
    assert all(np.any(np.isclose(points_macs, r.macs) & np.isclose(points_nme, r.nme)) for r in oracle.itertuples())
    assert np.all(points_nme >= _oracle_at(df, points_macs) - 1e-12)
    assert oracle.nme.min() == pytest.approx(nme.min(axis=1).mean())


def test_random_baseline_keeps_stage_counts_and_matches_its_expectation():
    nme, estimate, macs = _cascade(5, faces=400)
    df = early_exit_curves(nme, estimate, macs, repeats=200, seed=1)
    model, random = df[df.method == "model"].reset_index(), df[df.method == "random"].reset_index()
    assert np.array_equal(model.macs, random.macs) and np.array_equal(model.stages, random.stages)
    # exact expectation of a random assignment with given stage counts: count-weighted stage means
    row = model.iloc[len(model) // 2]
    stop = stop_stage(estimate, row.threshold)
    expected = sum((stop == s).sum() * nme[:, s].mean() for s in range(3)) / len(nme)
    r = random.iloc[len(model) // 2]
    assert r.nme == pytest.approx(expected, abs=4 * r.nme_std / np.sqrt(200) + 1e-12)
    # a useful estimate beats random assignment at the same cost, and the oracle beats both
    mid = model.index[(model.stages > 1.3) & (model.stages < 2.7)]
    assert np.all(model.nme[mid] <= random.nme[mid] + 1e-12)
    assert np.all(_oracle_at(df, model.macs) <= model.nme + 1e-12)
    again = early_exit_curves(nme, estimate, macs, repeats=200, seed=1)
    assert again.equals(df)  # seeded


def test_early_exit_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        early_exit_curves(np.zeros((3, 2)), np.zeros((3, 3)), np.ones(3))
    with pytest.raises(ValueError, match="finite"):
        early_exit_curves(np.full((3, 2), np.nan), np.zeros((3, 2)), np.ones(2))
