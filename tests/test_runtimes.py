"""TFLite and ONNX Runtime behind one call shape, batched."""

from __future__ import annotations

import numpy as np
import pytest

from facebench.assets import asset_path
from facebench.runtimes import open_session


@pytest.fixture
def onnx_model(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    weights = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["mm"]), helper.make_node("Relu", ["mm"], ["y"])], "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(weights, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "tiny.onnx"
    onnx.save(model, path)
    return path, weights


def test_onnx_session_runs_a_batch(onnx_model):
    path, weights = onnx_model
    session = open_session(path, threads=1)
    assert session.runtime == "onnxruntime" and session.version
    assert [(s.name, s.shape) for s in session.inputs] == [("x", (-1, 3))]
    x = np.random.default_rng(1).normal(size=(5, 3)).astype(np.float32)
    out = session.run({"x": x})
    assert list(out) == ["y"] and np.allclose(out["y"], np.maximum(x @ weights, 0), atol=1e-6)


def test_tflite_session_runs_a_batch_on_a_batch_one_graph(mediapipe_assets):
    session = open_session(asset_path("face_detection_short_range.tflite"), threads=1)
    assert session.runtime == "tflite" and session.version == "2.14.0"
    x = np.random.default_rng(2).uniform(-1, 1, size=(3, 128, 128, 3)).astype(np.float32)
    batched = session.run({"input": x})
    assert {k: v.shape for k, v in batched.items()} == {"regressors": (3, 896, 16), "classificators": (3, 896, 1)}
    for i in range(3):
        single = session.run({"input": x[i:i + 1]})
        assert all(np.allclose(single[k][0], batched[k][i], atol=1e-5) for k in single)


def test_unknown_model_format_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no runtime for model.pt"):
        open_session(tmp_path / "model.pt")


@pytest.mark.parametrize("asset", ["face_detection_full_range_sparse.tflite", "face_landmark.tflite"])
def test_fixed_batch_graphs_run_item_by_item_without_reallocation(asset, mediapipe_assets):
    """Resizing sparse or custom-op graphs crashes tflite-runtime 2.14: fixed-batch graphs are never resized."""
    session = open_session(asset_path(asset), threads=1)
    spec = session.inputs[0]
    x = np.random.default_rng(3).uniform(0, 1, size=(2, *spec.shape[1:])).astype(np.float32)
    batched = session.run({spec.name: x})
    assert session._batch == 1
    single = session.run({spec.name: x[1:]})
    assert all(np.array_equal(single[k][0], batched[k][1]) for k in single)
