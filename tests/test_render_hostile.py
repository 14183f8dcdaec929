"""Hostile pass on the rendered robustness benchmark: a corrupt or unwritable render cache, renders of one
image at once, every answer missing, a model sharing few points, degenerate curves and figures."""

from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest

from facebench.metrics.sweeps import breaking_points, factor_curve, sequence_jitter


@pytest.fixture(scope="module")
def scan_assets(pull_assets):
    try:
        pull_assets("menpo3d-james.obj", "menpo3d-james.jpg", "menpo3d-james.ljson")
    except Exception as exc:  # noqa: BLE001 - no index reachable: skip, saying why
        pytest.skip(f"menpo3d assets not available: {exc}")


def _spec(seed: int) -> dict:
    """A small render of its own (a seed no split uses), so the test's cache file is its own."""
    return {"frame": [64, 48], "size": 20.0, "background": "grey", "degradation": "noise", "value": 4.0,
            "seed": seed}


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "other-size"])
def test_a_corrupt_cached_render_is_drawn_again(scan_assets, damage):
    from PIL import Image

    from facebench.assets import assets_dir
    from facebench.datasets.rendered import RenderedImage

    image = RenderedImage(_spec(912_001))
    path = assets_dir() / "rendered" / f"{image.key}.png"
    try:
        first = image()
        assert path.is_file()
        if damage == "truncated":
            path.write_bytes(path.read_bytes()[:200])
        elif damage == "garbage":
            path.write_bytes(b"not a png at all")
        elif damage == "empty":
            path.write_bytes(b"")
        else:
            Image.new("RGB", (5, 5)).save(path)
        again = RenderedImage(_spec(912_001))()
        assert np.array_equal(again, first)
        assert np.array_equal(RenderedImage(_spec(912_001))(), first)  # the cache was healed
    finally:
        path.unlink(missing_ok=True)


def test_an_unwritable_render_cache_still_renders(scan_assets, monkeypatch):
    from facebench.datasets import rendered

    def refuse(path, image):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(rendered, "_write_png", refuse)
    image = rendered.RenderedImage(_spec(912_002))()
    assert image.shape == (48, 64, 3)


def test_one_image_rendered_by_many_threads_at_once(scan_assets):
    from facebench.assets import assets_dir
    from facebench.datasets.rendered import RenderedImage

    spec = _spec(912_003)
    path = assets_dir() / "rendered" / f"{RenderedImage(spec).key}.png"
    results: list = []
    try:
        threads = [threading.Thread(target=lambda: results.append(RenderedImage(spec)())) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(results) == 4 and all(np.array_equal(r, results[0]) for r in results)
        assert not [p for p in path.parent.iterdir() if p.name.startswith(f".{path.name}.")]  # no temp left
        assert np.array_equal(RenderedImage(spec)(), results[0])
    finally:
        path.unlink(missing_ok=True)


def test_sequence_jitter_with_no_point_compared():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        jitter, pairs = sequence_jitter(np.zeros((5, 0, 2)), np.zeros((5, 0, 2)), np.ones(5))
    assert np.isnan(jitter) and pairs == 0


def test_curves_of_one_value_and_a_neutral_not_swept():
    curve = factor_curve(np.array([3.0, 3.0]), np.array([np.nan, np.nan]))
    assert curve.values.tolist() == [3.0] and np.isnan(curve.metric[0]) and curve.failed.tolist() == [1.0]
    assert breaking_points(curve, 3.0, lambda m, f: f > 0.5) == (3.0, 3.0)
    curve = factor_curve(np.array([-2.0, -1.0, 1.0, 2.0]), np.array([0.3, 0.01, 0.01, 0.3]))
    assert breaking_points(curve, 0.0, lambda m, f: m > 0.1) == (-2.0, 2.0)  # outwards from a missing neutral


def _card(name: str, task: str, scheme: str = "ibug68"):
    from facebench.types import ModelCard

    return ModelCard(name=name, task=task, scheme=scheme, input_shape=(-1, -1, 3), input_range=(0.0, 255.0),
                     macs={"all": 1}, artifacts={"none": "test"}, box_convention="tight-68")


def _answers(samples, scheme: str, offset=(0.0, 0.0)) -> dict:
    """The ground truth as ``scheme``'s points, shifted by ``offset``, keyed as landmark items are."""
    from facebench.schemes import convert
    from facebench.types import Landmarks, Prediction, face_key

    out = {}
    for s in samples:
        gt = s.faces[0].landmarks.points[:, :2] + np.asarray(offset)
        out[face_key(s.id, 0)] = Prediction(landmarks=Landmarks(convert(gt, "ibug68", scheme), scheme))
    return out


@pytest.fixture(scope="module")
def pose_samples(scan_assets):
    from facebench.datasets import rendered

    return rendered.load(split="pose", backgrounds=1)


@pytest.fixture(scope="module")
def sequence_samples(scan_assets):
    from facebench.datasets import rendered

    return rendered.load(split="sequences", backgrounds=1)


def test_sweep_when_every_face_failed(pose_samples):
    from facebench.protocol import builtin_protocols
    from facebench.scoring import score

    protocol = builtin_protocols()["render-pose-nme"]
    result = score(protocol, pose_samples, {}, _card("dead", "landmarks"))
    assert result.metrics["failed"] == result.metrics["faces"] == len(pose_samples)
    assert np.isnan(result.metrics["nme"])
    for factor in ("yaw", "pitch", "roll"):  # nothing answered: broken from the neutral pose on
        assert result.metrics[f"{factor}_breaks_low"] == result.metrics[f"{factor}_breaks_high"] == 0.0
    assert all(v["nme"] is None for v in result.per_item.values())


def test_a_perfect_and_a_shifted_predictor(pose_samples, sequence_samples):
    from facebench.protocol import builtin_protocols
    from facebench.scoring import score

    protocols = builtin_protocols()
    card = _card("perfect", "landmarks")
    pose = score(protocols["render-pose-nme"], pose_samples, _answers(pose_samples, "ibug68"), card)
    assert pose.metrics["nme"] == 0.0 and pose.metrics["failed"] == 0
    shifted = _answers(sequence_samples, "ibug68", (3.0, -2.0))
    jitter = score(protocols["render-sequence-jitter"], sequence_samples, shifted, card)
    assert jitter.metrics["jitter"] == pytest.approx(0.0, abs=1e-12) and jitter.metrics["failed"] == 0


def test_a_five_point_model_whose_points_the_head_hides(pose_samples, sequence_samples):
    """dlib's 5 points (eye corners, nose base): at |yaw| 90 some faces keep none of them visible; those are
    left out (unscored), never counted as failures or as NaN errors."""
    from facebench.protocol import builtin_protocols
    from facebench.scoring import score

    protocols = builtin_protocols()
    card = _card("five", "landmarks", "dlib5")
    pose = score(protocols["render-pose-nme"], pose_samples, _answers(pose_samples, "dlib5"), card)
    assert pose.metrics["nme"] == 0.0 and pose.metrics["failed"] == 0
    assert pose.metrics["faces"] + pose.metrics["unscored"] == len(pose_samples)
    scored = [v for v in pose.per_item.values() if not v.get("unscored")]
    hidden = [v for v in pose.per_item.values() if v.get("unscored")]
    assert len(scored) == pose.metrics["faces"] and all(v["nme"] == 0.0 and v["points"] > 0 for v in scored)
    assert len(hidden) == pose.metrics["unscored"] > 0 and all(v["points"] == 0 for v in hidden)
    jitter = score(protocols["render-sequence-jitter"], sequence_samples, _answers(sequence_samples, "dlib5"),
                   card)
    assert jitter.metrics["jitter"] == 0.0 and jitter.metrics["failed"] == 0


def test_jitter_when_every_frame_failed(sequence_samples):
    from facebench.protocol import builtin_protocols
    from facebench.scoring import score

    protocol = builtin_protocols()["render-sequence-jitter"]
    for card in (_card("dead", "landmarks"), _card("blind", "detector")):
        result = score(protocol, sequence_samples, {}, card)
        assert np.isnan(result.metrics["jitter"]) and result.metrics["failed"] == len(sequence_samples)
        assert all(v["jitter"] is None and v["pairs"] == 0 for v in result.per_item.values())


def test_a_detector_that_never_finds_the_face(scan_assets):
    from facebench.datasets import rendered
    from facebench.protocol import builtin_protocols
    from facebench.scoring import score
    from facebench.types import Prediction

    samples = rendered.load(split="scale", backgrounds=1)
    protocol = builtin_protocols()["render-scale-detection"]
    result = score(protocol, samples, {s.id: Prediction(detections=()) for s in samples},
                   _card("blind", "detector"))
    assert result.metrics["detected"] == 0.0 and result.metrics["face_size_at_neutral"] == 0.0
    assert result.metrics["face_size_breaks_low"] == 96.0


def test_sweep_figures_of_degenerate_curves(tmp_path):
    from facebench.protocol import builtin_protocols
    from facebench.report import plots

    protocols = builtin_protocols()
    nan = float("nan")
    one = {"only": {"measure": "nme", "threshold": 0.08, "factors": {
        "yaw": {"values": [0.0], "metric": [nan], "failed": [1.0], "neutral": 0.0, "breaks": [0.0, 0.0]}}}}
    assert plots.draw_sweep(one, protocols["render-pose-nme"], "caveat") is not None
    size = {"a": {"measure": "detection", "threshold": 0.5, "factors": {
        "face_size": {"values": [6.0, 96.0], "metric": [0.0, 0.0], "failed": [0, 0], "neutral": 96.0,
                      "breaks": [96.0, 96.0]}}}, "b": {}}
    assert plots.sweep(size, protocols["render-scale-detection"], tmp_path, "caveat").is_file()
    assert plots.sweep({"a": {}}, protocols["render-scale-detection"], tmp_path, "caveat") is None


def test_plot_sweep_with_no_rendered_results(tmp_path):
    from click.testing import CliRunner

    from facebench.cli.main import main
    from facebench.results.store import Store

    with Store(tmp_path / "s.sqlite"):
        pass
    result = CliRunner().invoke(main, ["plot", "sweep", "--store", str(tmp_path / "s.sqlite"), "-p",
                                       "render-pose-nme", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "nothing to draw" in result.output


@pytest.mark.slow
def test_the_gallery_does_not_call_unscored_faces_failures(scan_assets, tmp_path):
    """A 5-point model at pitch -60: its points are hidden, the face is unscored (not failed) in the metrics,
    and so in the error gallery (it said "FAILED: no score")."""
    from test_render_benchmark import _perfect_adapters

    from facebench.protocol import builtin_protocols
    from facebench.report.gallery import face_results
    from facebench.results.evaluate import evaluate
    from facebench.results.store import Store
    from facebench.schemes import convert
    from facebench.types import Landmarks, Prediction

    perfect, _ = _perfect_adapters()

    class FivePoints(perfect):  # type: ignore[valid-type, misc]
        card = _card("perfect-five", "landmarks", "dlib5")

        def postprocess(self, outputs, context):
            gt = context.faces[0].landmarks.points[:, :2]
            return Prediction(landmarks=Landmarks(convert(gt, "ibug68", "dlib5"), "dlib5"))

    with Store(tmp_path / "s.sqlite") as db:
        run = evaluate(FivePoints, builtin_protocols()["render-pose-nme"], db, progress=False).run
        assert run.metrics["failed"] == 0 and run.metrics["unscored"] > 0
        faces = face_results(db, run.key)
        assert len(faces) == run.metrics["faces"] and not any(f["failed"] for f in faces)


def test_a_sweep_whose_every_face_is_unscored(pose_samples):
    """Every compared point hidden on every face: nothing scored, nothing failed, no curve, no crash."""
    import dataclasses

    from facebench.protocol import builtin_protocols
    from facebench.scoring import score

    hidden = [dataclasses.replace(s, attributes={**s.attributes, "visible": [False] * 68}) for s in pose_samples]
    result = score(builtin_protocols()["render-pose-nme"], hidden, _answers(hidden, "ibug68"),
                   _card("perfect", "landmarks"))
    assert result.metrics["faces"] == 0 and result.metrics["failed"] == 0
    assert result.metrics["unscored"] == len(hidden) and np.isnan(result.metrics["nme"])
    assert result.curves["sweep"]["factors"] == {}
    assert all(v["unscored"] for v in result.per_item.values())


@pytest.mark.parametrize("points, ok", [("all", True), ("visible", True), ("visibel", False), ("", False)])
def test_the_points_option_is_checked_when_the_protocol_is_read(points, ok):
    from importlib.resources import files

    from facebench.protocol import ProtocolError, parse_protocol

    text = files("facebench.protocols").joinpath("render-pose-nme.toml").read_text()
    text = text.replace('points = "visible-inner"', f'points = "{points}"')
    if ok:
        assert parse_protocol(text).options["points"] == points
    else:
        with pytest.raises(ProtocolError, match="points"):
            parse_protocol(text)
