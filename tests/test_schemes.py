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
    with pytest.raises(ValueError, match="no mapping"):
        convert(points, "ibug68", "wflw98")


@pytest.mark.skipif(not (SHARED / "300w-annotations").is_dir(), reason="real 300W annotations absent")
def test_flip_keeps_real_faces_in_anatomical_order():
    from facebench.prediction_files import read_landmarks

    _, faces = read_landmarks(SHARED / "300w-annotations" / "face_landmarks_300w_valid_common.csv")
    width = 2000.0
    flipped = np.stack([flip_points(f, "ibug68", width) for f in faces])
    # after mirroring and relabelling, the subject's right eye is still on the image left, as in the original
    for pts in (faces, flipped):
        assert np.mean(pts[:, 36, 0] < pts[:, 45, 0]) > 0.99 and np.mean(pts[:, 48, 0] < pts[:, 54, 0]) > 0.99
    # and the mirrored face is the original reflected: jaw point 0 lands where 16 was, mirrored
    assert np.allclose(flipped[:, 0, 0], width - 1 - faces[:, 16, 0])
