"""YuNet through ctypes: the same detections as yuface's own binding, the annotated faces found, the eye
keypoints in the five_point order, large images reduced and mapped back, other platforms one clean line."""

from __future__ import annotations

import hashlib
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facebench import extras
from facebench.assets import ASSETS
from facebench.baselines.yunet import FIELDS, YuNet, dequantise
from facebench.metrics.detection import box_iou
from facebench.run.harness import run_one
from facebench.types import Sample

LIBRARY, OPENMP = "libfacedetection.so", "libgomp-a34b3233.so.1.0.0"

needs_x86_64_linux = pytest.mark.skipif(extras.this_platform() != "linux-x86_64",
                                        reason="libfacedetection.so is an x86_64 Linux library")


@pytest.fixture(scope="module")
def yunet(pull_assets):
    if extras.this_platform() != "linux-x86_64":
        pytest.skip("libfacedetection.so is an x86_64 Linux library")
    pull_assets(LIBRARY, OPENMP)
    model = YuNet()
    model.load(threads=1)
    return model


def _input(model, sample):
    inputs, scale = model.preprocess(sample)
    return inputs["image"][()], scale


def test_another_platform_is_one_clean_line_and_loads_nothing(monkeypatch):
    monkeypatch.setattr(extras, "this_platform", lambda: "linux-aarch64")
    model = YuNet()
    with pytest.raises(extras.MissingExtra) as caught:
        model.load()
    message = str(caught.value)
    assert "\n" not in message and "yunet" in message and "linux-x86_64 only" in message and "linux-aarch64" in message
    assert model._detect is None


def test_dequantise_centres_cs_truncation():
    """C's float->int cast truncates toward zero: the midpoint of each integer's interval is within half a
    pixel of every float that truncates to it (zero's interval, (-1, 1), is twice as wide) and unbiased."""
    floats = np.random.default_rng(0).uniform(-300, 300, 200_000)
    error = dequantise(np.trunc(floats)) - floats
    outside = np.abs(floats) >= 1
    assert np.abs(error[outside]).max() <= 0.5 and np.abs(error[~outside]).max() < 1
    for side in (floats > 0, floats < 0):
        assert abs(error[side].mean()) < 0.01
        assert abs((np.trunc(floats[side]) - floats[side]).mean()) > 0.45  # the integers alone: half a pixel off


@needs_x86_64_linux
def test_same_detections_as_yufaces_own_binding(yunet, mini_samples):
    """yuface==2023.5.1's pybind11 module (same library build) returns the very integers the adapter reads."""
    yuface = pytest.importorskip("yuface", reason="yuface (the reference binding) is not installed")
    package = Path(yuface.__file__).parent
    binaries = sorted(package.glob("libfacedetection.so*"))  # .so and the soname .so.v0.0.3 the module links
    assert binaries
    for binary in binaries:
        assert hashlib.sha256(binary.read_bytes()).hexdigest() == ASSETS[LIBRARY].sha256, binary

    def reference(bgr):
        with warnings.catch_warnings():  # yuface's advice above 960 pixels
            warnings.simplefilter("ignore", UserWarning)
            confs, boxes, landmarks = yuface.detect(bgr, conf=0.0)  # conf 0: every face the library returns
        return np.column_stack([confs, boxes, landmarks]).astype(np.int64).reshape(-1, FIELDS)

    for sample in mini_samples:
        native = np.ascontiguousarray(sample.image()[:, :, ::-1])  # yuface's README: RGB reversed is BGR
        inputs, _ = yunet.preprocess(sample)
        ours = yunet.forward({k: np.stack([v]) for k, v in inputs.items()})["faces"][0].astype(np.int64)
        given = inputs["image"][()]
        assert len(ours) > 0
        if given.shape == native.shape:  # the whole path, colour order included
            assert np.array_equal(ours, reference(native)), sample.id
        else:  # reduced: the same pixels in, and the library call alone on the original
            assert np.array_equal(ours, reference(given)), sample.id
            assert np.array_equal(yunet.raw(native).astype(np.int64), reference(native)), sample.id


@needs_x86_64_linux
def test_openmp_threads_do_not_change_the_detections(yunet, mini_samples):
    two_threads = YuNet()
    two_threads.load(threads=2)
    for sample in mini_samples:
        if sample.id in ("takeo", "lenna"):  # small: two OpenMP threads crawl on a busy 2-core machine
            bgr = _input(yunet, sample)[0]
            assert np.array_equal(two_threads.raw(bgr), yunet.raw(bgr)), sample.id


@needs_x86_64_linux
def test_finds_the_annotated_faces_with_the_eyes_in_five_point_order(yunet, mini_samples):
    for sample in mini_samples:
        prediction, _ = run_one(yunet, sample)
        boxes = np.array([d.box.as_array() for d in prediction.detections]).reshape(-1, 4)
        assert all(0.2 <= d.score <= 1 for d in prediction.detections)
        for face in sample.faces:
            ious = box_iou(boxes, face.box.as_array())[:, 0]
            assert ious.max() >= 0.5, (sample.id, ious)
            best = prediction.detections[int(np.argmax(ious))]
            pts = face.landmarks.points
            # five_point: the subject's right eye (iBUG 36-41, image left) first, then the left (42-47)
            eyes = np.array([pts[36:42].mean(0), pts[42:48].mean(0)])
            iod = np.linalg.norm(eyes[0] - eyes[1])
            own = np.linalg.norm(best.keypoints[:2] - eyes, axis=1) / iod
            swapped = np.linalg.norm(best.keypoints[:2] - eyes[::-1], axis=1) / iod
            assert own.max() < 0.5 and np.all(own < swapped), (sample.id, own, swapped)


@needs_x86_64_linux
def test_a_reduced_image_maps_back_to_its_own_pixels(yunet, mini_samples):
    """An image enlarged f times and reduced back by preprocess gives the original's detection, scaled: a
    pixel centre x of the original is (x + 0.5) f - 0.5 in the enlarged image."""
    by_id = {s.id: s for s in mini_samples}
    for sid, f in (("takeo", 3), ("lenna", 2)):
        image = by_id[sid].image()
        height, width = image.shape[:2]
        big = np.asarray(Image.fromarray(image).resize((width * f, height * f), Image.Resampling.BILINEAR))
        reducer = YuNet(max_short_side=min(width, height))
        reducer.load()
        enlarged = Sample(f"{sid}-x{f}", lambda big=big: big)
        reduced, scale = _input(reducer, enlarged)
        assert reduced.shape[:2] == (height, width) and np.allclose(scale, f)
        original = run_one(yunet, by_id[sid])[0].detections[0]
        found = run_one(reducer, enlarged)[0].detections[0]
        # the library's integers may move by a few pixels through the enlarge-reduce round trip
        assert np.abs(found.box.as_array() - ((original.box.as_array() + 0.5) * f - 0.5)).max() <= 3 * f
        assert np.abs(found.keypoints - ((original.keypoints + 0.5) * f - 0.5)).max() <= 3 * f
    capped, _ = _input(YuNet(max_long_side=100), by_id["takeo"])
    assert max(capped.shape[:2]) == 100


@needs_x86_64_linux
def test_sizes_the_library_cannot_hold_are_refused_not_crashed(yunet):
    pixel = np.zeros((1, 1, 3), np.uint8)
    for shape in ((40_000, 8, 3), (8_200, 8_200, 3)):  # short coordinates; int byte counts (segfault)
        with pytest.raises(ValueError, match="overflows"):
            yunet.raw(np.broadcast_to(pixel, shape))
    assert yunet.raw(np.zeros((0, 5, 3), np.uint8)).shape == (0, FIELDS)


@needs_x86_64_linux
def test_concurrent_calls_give_the_sequential_results(yunet, mini_samples):
    images = [_input(yunet, s)[0] for s in mini_samples if s.id in ("takeo", "lenna")]
    sequential = [yunet.raw(bgr) for bgr in images]
    with ThreadPoolExecutor(4) as pool:
        concurrent = list(pool.map(yunet.raw, images * 4))
    assert all(np.array_equal(c, sequential[k % len(images)]) for k, c in enumerate(concurrent))
