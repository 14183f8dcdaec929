"""The scan renderer (facebench.datasets.render) against physics, on the real menpo3d scan.

Each check has an answer that does not depend on taste: a whole-pixel principal-point shift moves the
image by exactly one pixel; landmark visibility agrees with a brute-force ray cast written here; the
projection is the pinhole formula worked by hand; the far cheek's jaw points hide at large yaw.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
from scipy.ndimage import binary_erosion

from facebench.datasets import render as R

MEMBERS = ("menpo3d-james.obj", "menpo3d-james.jpg", "menpo3d-james.ljson")


@pytest.fixture(scope="module")
def scan(pull_assets):
    from facebench.assets import AssetError

    try:
        pull_assets(*MEMBERS)
    except (AssetError, OSError) as exc:
        pytest.skip(f"menpo3d's james scan cannot be pulled: {exc}")
    return R.load_scan()


def test_scan_layout(scan):
    """The OBJ is read whole and the LJSON's groups land in iBUG-68 order (checked on the geometry)."""
    assert scan.vertices.shape == (6393, 3) and scan.faces.shape == (12228, 3)
    assert scan.face_uv.shape == (12228, 3) and scan.uv.shape == (6680, 2)
    assert scan.texture.shape == (1600, 2400, 3) and scan.texture.dtype == np.uint8
    assert scan.faces.min() == 0 and scan.faces.max() == 6392
    lm = scan.landmarks3d
    assert lm.shape == (68, 3)
    assert np.allclose(lm.mean(0), 0)  # the face frame's origin
    y = lm[:, 1]
    assert y[17:27].min() > y[36:48].max()  # brows above eyes
    assert y[36:48].min() > y[30] > y[48:68].max()  # eyes, nose tip, mouth
    assert np.argmin(y) == 8 and np.argmax(lm[:, 2]) == 30  # chin lowest, nose tip foremost
    x = lm[:, 0]
    assert x[36] < x[39] < x[42] < x[45] and x[17] < x[21] < x[22] < x[26] and x[31] < x[33] < x[35]
    assert x[48] < x[51] < x[54] and x[0] < x[8] < x[16]
    assert np.allclose(lm[42:48, 1:].mean(0), lm[36:42, 1:].mean(0))  # the eye centres define the x axis


def test_projection_by_hand(scan):
    """The pinhole formula and the pose signs, worked out by hand."""
    pts = np.array([[0.0, 0, 0], [10, 20, 30], [-5, 7, -40]])
    cam = R.Camera(200, 160, 500.0, translation=(10.0, -5.0, 400.0), cx=100.0, cy=80.0)
    xy, z = R.project(pts, cam)
    x, y, zz = pts.T
    # yaw = pitch = roll = 0: the camera looks at the face, so face (x, y, z) is camera (x, -y, -z)
    assert np.allclose(z, 400 - zz)
    assert np.allclose(xy[:, 0], 500 * (x + 10) / (400 - zz) + 100)
    assert np.allclose(xy[:, 1], 500 * (-y - 5) / (400 - zz) + 80)
    # yaw 90: face (x, y, z) -> camera (z, -y, x)
    xy, z = R.project(pts, dataclasses.replace(cam, yaw=90.0))
    assert np.allclose(z, 400 + x)
    assert np.allclose(xy[:, 0], 500 * (zz + 10) / (400 + x) + 100)
    assert np.allclose(xy[:, 1], 500 * (-y - 5) / (400 + x) + 80)
    # the signs on the face: yaw turns the nose right, pitch lifts it, roll turns the face counter-clockwise
    lm, base = scan.landmarks3d, R.Camera(256, 256, 300.0)
    def at(**pose):
        return R.project(lm, dataclasses.replace(base, **pose))[0]
    assert at(yaw=20)[30, 0] > at()[30, 0] + 5
    assert at(pitch=20)[30, 1] < at()[30, 1] - 5
    eye_l, eye_r = at(roll=20)[36], at(roll=20)[45]
    assert eye_r[1] < eye_l[1] - 10  # the image-right eye goes up


@pytest.mark.parametrize("dx, dy", [(1, 0), (0, 1)])
def test_principal_point_shift_moves_the_image_one_pixel(scan, dx, dy):
    cam = R.frame_face(70, yaw=25, pitch=-10, roll=5, image_size=(160, 176))
    cx, cy = cam.principal_point
    img, mask = R.render(scan, cam)
    moved, moved_mask = R.render(scan, dataclasses.replace(cam, cx=cx + dx, cy=cy + dy))
    h, w = mask.shape
    a, b = img[: h - dy, : w - dx], moved[dy:, dx:]
    both = mask[: h - dy, : w - dx] & moved_mask[dy:, dx:]
    interior = binary_erosion(both, iterations=2)
    assert interior.sum() > 5000
    assert np.array_equal(a[interior], b[interior])
    # computed relative to the principal point, the whole overlap is bit-exact, silhouettes included
    assert np.array_equal(a, b) and np.array_equal(mask[: h - dy, : w - dx], moved_mask[dy:, dx:])


def _first_hits(scan, cam, tolerance):
    """Brute force, independent of the renderer: each landmark's camera ray against every triangle
    (Möller-Trumbore, both sides) in the camera frame; depth of the nearest hit, inf when none."""
    v = cam.to_camera(scan.vertices)
    p = cam.to_camera(scan.landmarks3d)
    a, b, c = (v[scan.faces[:, k]] for k in range(3))
    e1, e2 = b - a, c - a
    d = p / np.linalg.norm(p, axis=1, keepdims=True)  # ray from the camera centre (the origin)
    q = np.cross(d[:, None], e2[None])  # (68, F, 3)
    det = (e1[None] * q).sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / det
        s = -a[None]  # origin - a
        u = (s * q).sum(-1) * inv
        r = np.cross(s, e1[None])
        w = (d[:, None] * r).sum(-1) * inv
        t = (e2[None] * r).sum(-1) * inv
    hit = (np.abs(det) > 1e-12) & (u >= 0) & (w >= 0) & (u + w <= 1) & (t > 0)
    depth = np.where(hit, t * d[:, 2:3], np.inf).min(1)  # along the optical axis
    return depth, p[:, 2]


@pytest.mark.parametrize("yaw", [0, 30, 60, -60])
def test_visibility_agrees_with_a_ray_cast(scan, yaw):
    cam = R.frame_face(80, yaw=yaw, pitch=5)
    tolerance = 1.0
    hit, z = _first_hits(scan, cam, tolerance)
    expected = hit >= z - tolerance
    margin = np.abs(hit - (z - tolerance))
    assert margin.min() > 1e-3, "a landmark on the decision boundary: pick another pose"
    visible = R.visible_landmarks(scan, cam, tolerance)
    assert np.array_equal(visible, expected), np.flatnonzero(visible != expected)
    assert yaw == 0 or (~visible).sum() >= 5


def test_yaw_zero_hides_only_jaw_points_behind_the_cheek(scan):
    """The scan's jaw contour is anatomical: with a long lens (near-orthographic) every inner point and
    the chin are visible at yaw 0; the jaw's ends can sit a little behind the cheek's outline."""
    cam = R.frame_face(80, fov_deg=5.0)
    visible = R.visible_landmarks(scan, cam)
    assert visible[17:].all() and visible[5:12].all()
    hidden = np.flatnonzero(~visible)
    assert set(hidden) <= set(R.JAW)
    hit, z = _first_hits(scan, cam, 1.0)
    assert (z[hidden] - hit[hidden]).max() < 20.0  # grazing: the cheek's silhouette, not the head


@pytest.mark.parametrize("yaw", [60, 70, 80, -60, -70, -80])
def test_far_jaw_points_hide_at_large_yaw(scan, yaw):
    visible = R.visible_landmarks(scan, R.frame_face(80, yaw=yaw))
    far, near = (slice(12, 17), slice(0, 5)) if yaw > 0 else (slice(0, 5), slice(12, 17))
    assert not visible[far].any()
    assert visible[near].all()


def test_framing(scan):
    cam = R.frame_face(64, image_size=(200, 240))
    xy, _ = R.project(scan.landmarks3d, cam)
    assert abs(np.linalg.norm(xy[45] - xy[36]) - 64) < 1e-6
    assert np.allclose((xy.min(0) + xy.max(0)) / 2, [99.5, 119.5], atol=1e-6)
    turned = R.frame_face(64, yaw=45, pitch=10, roll=-20, image_size=(200, 240))
    assert turned.translation[2] == pytest.approx(cam.translation[2])  # same distance at every pose
    xy, _ = R.project(scan.landmarks3d, turned)
    assert np.allclose((xy.min(0) + xy.max(0)) / 2, [99.5, 119.5], atol=1e-6)
    box = R.frame_face(150, measure="box")
    xy, _ = R.project(scan.landmarks3d, box)
    assert abs((xy.max(0) - xy.min(0)).max() - 150) < 1e-6


def test_background_and_mask(scan):
    cam = R.frame_face(60, yaw=-30, image_size=(128, 128))
    bg = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    img, mask = R.render(scan, cam, background=bg)
    assert 0.1 < mask.mean() < 0.9
    assert np.array_equal(img[~mask], bg[~mask])  # uncovered pixels are the background, untouched
    grey, grey_mask = R.render(scan, cam)
    assert np.array_equal(grey_mask, mask) and (grey[~mask] == R.GREY).all()
    frags = R.rasterize(scan, cam, 2)  # render's default supersampling
    row, col = np.divmod(frags.covered, 256)
    samples = np.bincount((row // 2) * 128 + col // 2, minlength=128 * 128).reshape(128, 128)
    assert np.array_equal(samples > 0, mask)
    full, partial = samples == 4, (samples > 0) & (samples < 4)
    assert np.array_equal(img[full], grey[full])  # fully covered pixels do not see the background
    assert (img[partial] != grey[partial]).any(axis=1).mean() > 0.5  # edge pixels blend with it
    assert R.backface_fraction(scan, cam) < 0.005


def test_render_is_deterministic_and_timed(scan):
    cam = R.frame_face(80, yaw=20)
    first, mask = R.render(scan, cam)
    start = time.perf_counter()
    second, mask2 = R.render(scan, cam)
    elapsed = time.perf_counter() - start
    print(f"\nrender 256x256, supersample 2: {elapsed * 1000:.0f} ms")
    assert first.shape == (256, 256, 3) and first.dtype == np.uint8
    assert first.tobytes() == second.tobytes() and np.array_equal(mask, mask2)
