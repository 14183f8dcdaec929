"""Thin wrappers that give TFLite and ONNX Runtime one call shape.

``session.run({name: batch})`` takes and returns dicts of arrays whose first
axis is the batch. TFLite models are usually exported with batch 1: the
wrapper resizes the input tensors to the batch when the graph was exported
with a dynamic batch and otherwise runs the batch one item at a time, so
adapters never care.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facebench.errors import FacebenchError

RUNTIMES = ("tflite", "onnxruntime")


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype


class TFLiteSession:
    """``custom_ops=True`` registers MediaPipe's ops (:mod:`facebench.runtimes.mediapipe_ops`);
    their timing is then in ``self.custom_ops.seconds``."""

    runtime = "tflite"

    def __init__(self, path: Path, threads: int = 1, custom_ops: bool = False):
        import tflite_runtime
        from tflite_runtime import interpreter as tfl

        self.version = tflite_runtime.__version__
        self.custom_ops = None
        if custom_ops:
            from facebench.runtimes.mediapipe_ops import make_interpreter

            self._interp, self.custom_ops = make_interpreter(path, threads)
        else:
            self._interp = tfl.Interpreter(model_path=str(path), num_threads=threads)
        self._interp.allocate_tensors()
        self.inputs = [TensorSpec(d["name"], tuple(int(x) for x in d["shape"]), np.dtype(d["dtype"]))
                       for d in self._interp.get_input_details()]
        self.outputs = [TensorSpec(d["name"], tuple(int(x) for x in d["shape"]), np.dtype(d["dtype"]))
                        for d in self._interp.get_output_details()]
        self._batch = self.inputs[0].shape[0] if self.inputs[0].shape else 1
        # Only a graph exported with a dynamic batch (-1 in its signature) is resized:
        # tflite-runtime 2.14 crashes (SIGSEGV, uncatchable) reallocating sparse or
        # custom-op graphs fixed at batch 1, and MediaPipe's batch-1 graphs mix items.
        self._resizable = all(len(d["shape_signature"]) > 0 and d["shape_signature"][0] == -1
                              for d in self._interp.get_input_details())

    def _resize(self, batch: int) -> bool:
        if batch == self._batch:
            return True
        if not self._resizable:
            return False
        try:
            for d in self._interp.get_input_details():
                self._interp.resize_tensor_input(d["index"], [batch, *d["shape"][1:]], strict=False)
            self._interp.allocate_tensors()
            # a graph with batch-1 reshapes inside accepts the resize but mixes items: check
            if all(d["shape"][0] == batch for d in self._interp.get_output_details()):
                self._batch = batch
                return True
            raise ValueError("outputs did not follow the batch size")
        except (RuntimeError, ValueError):
            self._resizable = False
            for d in self._interp.get_input_details():
                self._interp.resize_tensor_input(d["index"], [1, *d["shape"][1:]], strict=False)
            self._interp.allocate_tensors()
            self._batch = 1
            return False

    def _invoke(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        for d in self._interp.get_input_details():
            self._interp.set_tensor(d["index"], np.ascontiguousarray(inputs[d["name"]], dtype=d["dtype"]))
        self._interp.invoke()
        return {d["name"]: self._interp.get_tensor(d["index"]) for d in self._interp.get_output_details()}

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch = len(next(iter(inputs.values())))
        if self._resize(batch):
            return self._invoke(inputs)
        parts = [self._invoke({k: v[i:i + 1] for k, v in inputs.items()}) for i in range(batch)]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


class OnnxSession:
    runtime = "onnxruntime"

    def __init__(self, path: Path, threads: int = 1):
        import onnxruntime as ort

        self.version = ort.__version__
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: exported graphs often carry unused initializers it warns of
        self._session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        type_map = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
                    "tensor(int32)": np.int32, "tensor(uint8)": np.uint8}
        self.inputs = [TensorSpec(i.name, tuple(d if isinstance(d, int) else -1 for d in i.shape),
                                  np.dtype(type_map.get(i.type, np.float32))) for i in self._session.get_inputs()]
        self.outputs = [TensorSpec(o.name, tuple(d if isinstance(d, int) else -1 for d in o.shape),
                                   np.dtype(type_map.get(o.type, np.float32))) for o in self._session.get_outputs()]

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {spec.name: np.ascontiguousarray(inputs[spec.name], dtype=spec.dtype) for spec in self.inputs}
        names = [o.name for o in self.outputs]
        return dict(zip(names, self._session.run(names, feed)))


class RuntimeUnavailable(FacebenchError, ValueError):
    """A model asked to run on a runtime its artifacts do not serve (a .tflite file on onnxruntime)."""


_SUFFIX_RUNTIME = {".tflite": "tflite", ".onnx": "onnxruntime"}


def open_session(path: str | Path, runtime: str | None = None, threads: int = 1,
                 custom_ops: bool = False) -> TFLiteSession | OnnxSession:
    """Open a model file with the runtime named, or the one its suffix implies; a file of the other
    format is refused by name (a model whose card has no artifact for that runtime)."""
    path = Path(path)
    implied = _SUFFIX_RUNTIME.get(path.suffix)
    if runtime and implied and runtime != implied:
        raise RuntimeUnavailable(f"{path.name} is a {implied} model, not one {runtime} can open: the model has no "
                                 f"artifact for {runtime} (its card's artifacts say which runtimes it has)")
    runtime = runtime or implied
    if runtime == "tflite":
        return TFLiteSession(path, threads=threads, custom_ops=custom_ops)
    if runtime == "onnxruntime":
        return OnnxSession(path, threads=threads)
    raise ValueError(f"no runtime for {path.name}: choose one of {RUNTIMES}")
