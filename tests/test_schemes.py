"""Landmark schemes: flip permutations and mappings, checked against each other and real 300W annotations."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from facebench.schemes import SCHEMES, convert, flip_points, get_scheme, shared_points

from conftest import SHARED


@pytest.mark.parametrize("name", [n for n, s in SCHEMES.items() if s.flip is not None])
def test_flip_is_a_relabelling_involution(name):
    flip = np.array(get_scheme(name).flip)
    assert sorted(flip) == list(range(get_scheme(name).size))
    assert np.array_equal(flip[flip], np.arange(len(flip)))


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_wflw_to_ibug_commutes_with_flipping(seed):
    # two tables written independently (the mapping and both flips) must agree
    points = np.random.default_rng(seed).uniform(0, 300, (98, 2))
    a = convert(flip_points(points, "wflw98", 300), "wflw98", "ibug68")
    b = flip_points(convert(points, "wflw98", "ibug68"), "ibug68", 300)
    assert np.allclose(a, b)


def test_ibug_to_five_point_and_shared_points():
    points = np.random.default_rng(0).uniform(0, 100, (68, 2))
    five = convert(points, "ibug68", "five_point")
    assert np.allclose(five[0], points[36:42].mean(axis=0)) and np.allclose(five[4], points[54])
    assert np.allclose(convert(flip_points(points, "ibug68", 100), "ibug68", "five_point"),
                       flip_points(five, "five_point", 100))
    mesh = shared_points("mediapipe478", "ibug68")
    assert 36 in mesh and 48 in mesh and not any(i < 17 for i in mesh)  # no jaw: it has no mesh counterpart
    assert np.isnan(convert(np.zeros((478, 2)), "mediapipe478", "ibug68")[0]).all()
    # a table read backwards: 68 points placed in WFLW-98, the other 30 NaN, and back again unchanged
    wflw = convert(points, "ibug68", "wflw98")
    assert np.isnan(wflw).any(axis=1).sum() == 30
    assert np.array_equal(convert(wflw, "wflw98", "ibug68"), points)
    with pytest.raises(ValueError, match="no mapping"):
        convert(points, "ibug68", "blazeface6")


@pytest.mark.shared
@pytest.mark.skipif(not (SHARED / "300w-annotations").is_dir(), reason="real 300W annotations absent")
def test_flip_keeps_real_faces_in_anatomical_order():
    from facebench.offline.prediction_files import read_landmarks

    _, faces = read_landmarks(SHARED / "300w-annotations" / "face_landmarks_300w_valid_common.csv")
    width = 2000.0
    flipped = np.stack([flip_points(f, "ibug68", width) for f in faces])
    # after mirroring and relabelling, the subject's right eye is still on the image left, as in the original
    for pts in (faces, flipped):
        assert np.mean(pts[:, 36, 0] < pts[:, 45, 0]) > 0.99 and np.mean(pts[:, 48, 0] < pts[:, 54, 0]) > 0.99
    # and the mirrored face is the original reflected: jaw point 0 lands where 16 was, mirrored
    assert np.allclose(flipped[:, 0, 0], width - 1 - faces[:, 16, 0])


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from(["cofw29", "aflw19"]))
def test_cofw_and_aflw_mappings_commute_with_flipping(seed, scheme):
    # the mappings and the flip pairs (HRNet's MATCHED_PARTS) come from different sources: they must agree
    points = np.random.default_rng(seed).uniform(0, 300, (get_scheme(scheme).size, 2))
    a = convert(flip_points(points, scheme, 300), scheme, "ibug68")
    b = flip_points(convert(points, scheme, "ibug68"), "ibug68", 300)
    assert np.allclose(a, b, equal_nan=True)


# Ghiasi & Fowlkes' 68 -> COFW-29 table (golnazghiasi/hpm-detection-code, Mapping68kToCofw29.m), 1-based on both
# sides: each COFW point is the mean of these iBUG points. An independent source for the cofw29 -> ibug68 mapping.
_HPM_68_TO_29 = [[18], [27], [22], [23], [20], [18, 22], [25], [23, 27], [37], [46], [40], [43], [38, 39], [41, 42],
                 [44, 45], [47, 48], range(37, 43), range(43, 49), [32], [36], [31], [34], [49, 61], [55, 65],
                 range(51, 54), [63], [67], range(57, 60), range(8, 11)]


@pytest.mark.shared
@pytest.mark.skipif(not (SHARED / "300w-annotations").is_dir(), reason="real 300W annotations absent")
def test_cofw_mapping_agrees_with_an_independent_table_on_real_faces():
    from facebench.offline.prediction_files import read_landmarks

    _, faces = read_landmarks(SHARED / "300w-annotations" / "face_landmarks_300w_valid.csv")
    cofw = np.stack([[f[[i - 1 for i in t]].mean(axis=0) for t in _HPM_68_TO_29] for f in faces])
    back = np.stack([convert(c, "cofw29", "ibug68") for c in cofw])
    iod = np.linalg.norm(faces[:, 36] - faces[:, 45], axis=1)
    mapped = shared_points("cofw29", "ibug68")
    eyelids, jaw = {37, 38, 40, 41, 43, 44, 46, 47}, set(range(17)) - {8}
    assert len(mapped) == 21 and not set(mapped) & (eyelids | jaw)  # no eyelid or jaw-line point pretends
    for d in mapped:
        err = np.linalg.norm(back[:, d] - faces[:, d], axis=1) / iod
        # single-point entries come back exactly; the lip and chin midlines (means of 3) within 5% of the IOD
        assert np.median(err) < 0.05, d
    assert np.array_equal(back[:, [17, 36, 45, 30, 62]], faces[:, [17, 36, 45, 30, 62]])


@pytest.mark.shared
@pytest.mark.skipif(not (SHARED / "aflw2000-3d-annotations").is_dir(), reason="real AFLW2000-3D annotations absent")
def test_aflw19_mapping_on_real_aflw2000_faces():
    root = SHARED / "aflw2000-3d-annotations"
    pts21 = np.load(root / "AFLW2000-3D.pts21.npy").transpose(0, 2, 1).astype(np.float64)  # AFLW's 21 points
    pts68 = np.load(root / "AFLW2000-3D.pts68.npy")[:, :2].transpose(0, 2, 1).astype(np.float64)
    aflw19 = np.delete(pts21, [12, 16], axis=1)  # AFLW-19 drops the two ear lobes
    iod = np.linalg.norm(pts68[:, 36] - pts68[:, 45], axis=1)
    index = np.arange(19, dtype=float)[:, None].repeat(2, axis=1)  # converted, each point says where it came from
    table = {d: int(v) for d, v in enumerate(convert(index, "aflw19", "ibug68")[:, 0]) if not np.isnan(v)}
    assert sorted(table) == [8, 17, 19, 21, 22, 24, 26, 30, 36, 39, 42, 45, 48, 54]
    for d, s in table.items():
        labelled = aflw19[:, s, 0] > 0  # AFLW leaves out points it could not see
        # as close to the iBUG point as AFLW's eye corners are to theirs (3DDFA-fitted 68 points)
        err = np.linalg.norm(aflw19[labelled, s] - pts68[labelled, d], axis=1) / iod[labelled]
        assert labelled.sum() > 1000 and np.median(err) < 0.06, (d, s, np.median(err))
        # and over the faces, the iBUG point nearest to it is most often the one the table names
        # (a mouth corner's outer and inner iBUG points, 48/60 and 54/64, nearly coincide)
        nearest = np.argmin(np.linalg.norm(pts68[labelled] - aflw19[labelled, s][:, None], axis=2), axis=1)
        assert np.mean(np.isin(nearest, [d, {48: 60, 54: 64}.get(d, d)])) > 0.5, (d, s)


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_dlib5_mapping_commutes_with_flipping(seed):
    # the flip pairs (dlib's training program swaps 0-2 and 1-3) and the 5 -> 68 table must agree
    points = np.random.default_rng(seed).uniform(0, 300, (5, 2))
    a = convert(flip_points(points, "dlib5", 300), "dlib5", "ibug68")
    b = flip_points(convert(points, "dlib5", "ibug68"), "ibug68", 300)
    assert np.allclose(a, b, equal_nan=True)


def test_dlib5_shares_eye_corners_and_subnasale_with_ibug68():
    from facebench.schemes import scheme_for_size

    assert shared_points("dlib5", "ibug68") == [33, 36, 39, 42, 45]
    assert shared_points("ibug68", "dlib5") == [0, 1, 2, 3, 4]  # the inverse, added by the code under MAPPINGS
    points = np.random.default_rng(1).uniform(0, 100, (68, 2))
    five = convert(points, "ibug68", "dlib5")
    assert np.array_equal(five, points[[45, 42, 36, 39, 33]])
    assert np.array_equal(convert(five, "dlib5", "ibug68")[[45, 42, 36, 39, 33]], five)
    # the subject's left eye (points 0, 1) is on the image right in an upright face, as 45 and 42 are
    assert five[0, 0] == points[45, 0] and get_scheme("dlib5").flip == (2, 3, 0, 1, 4)
    assert scheme_for_size(5) == "five_point"  # five bare points are still read as five_point
    with pytest.raises(ValueError, match="no mapping"):
        convert(five, "dlib5", "five_point")
