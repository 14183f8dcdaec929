"""PRNet (Feng et al. 2018): ResFCN256 position-map regression.

A 256x256x3 face crop in, a 256x256x3 UV position map out: each UV pixel
holds the (x, y, z) of one point of the face surface, in crop pixels (the
network's sigmoid output times 256 * 1.1, as in the released code). The 68
landmarks are read at the UV coordinates of ``uv_kpt_ind.txt`` (2 x 68,
u then v), a file the user brings with the weights.

The network as the paper and its code define it: a 4x4 convolution to 16
channels, ten residual blocks (1x1 to half width, 4x4 with the block's
stride, 1x1 to full width, plus a 1x1 projection shortcut where the shape
changes) down to 8x8x512, and seventeen 4x4 transposed convolutions back up
to 256x256x3. Batch normalisation is folded into the convolutions (how a
deployed model runs), so it has no MACs of its own. Padding is TensorFlow's
"same" (4x4 stride 1: one row before, two after).

Without a checkpoint the weights are random (``untrained``: cost and latency
only). A checkpoint is an ``.npz`` with ``layer{k}_w`` / ``layer{k}_b`` for the
k-th convolution in the order :func:`layers` lists them (weights in ONNX
layout: (out, in, 4, 4) for convolutions, (in, out, 4, 4) for transposed).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from facebench.adapter import Adapter, face_region
from facebench.extras import MissingExtra
from facebench.imaging import warp_affine
from facebench.runtimes.graph import Graph
from facebench.types import Box, Detection, Landmarks, ModelCard, Prediction, Sample

RESOLUTION = 256
BLOCKS = [(32, 2), (32, 1), (64, 2), (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1)]
DECODER = [(512, 1), (256, 2), (256, 1), (256, 1), (128, 2), (128, 1), (128, 1), (64, 2), (64, 1), (64, 1),
           (32, 2), (32, 1), (16, 2), (16, 1), (3, 1), (3, 1), (3, 1)]


@dataclass(frozen=True)
class Layer:
    kind: str  # "conv" or "deconv"
    c_in: int
    c_out: int
    kernel: int
    stride: int


def layers(width: int = 16) -> list[Layer]:
    """Every convolution of ResFCN256 in order; ``width`` scales all channel counts (16 = the paper)."""
    f = width / 16
    out = [Layer("conv", 3, width, 4, 1)]
    c = width
    for channels, stride in BLOCKS:
        n = int(channels * f)
        if stride != 1 or n != c:
            out.append(Layer("conv", c, n, 1, stride))  # shortcut
        out += [Layer("conv", c, n // 2, 1, 1), Layer("conv", n // 2, n // 2, 4, stride),
                Layer("conv", n // 2, n, 1, 1)]
        c = n
    for channels, stride in DECODER:
        n = 3 if channels == 3 else int(channels * f)
        out.append(Layer("deconv", c, n, 4, stride))
        c = n
    return out


def analytic_macs(size: int = RESOLUTION, width: int = 16) -> int:
    """Multiply-accumulates from the layer list: conv = output pixels x in x k x k; transposed
    conv = input pixels x out x k x k."""
    total, side = 0, size
    for layer in layers(width):
        if layer.kind == "conv":
            if layer.kernel == 1 and layer.stride != 1:  # shortcut: reads the block input
                total += (side // layer.stride) ** 2 * layer.c_in * layer.c_out
                continue
            side_out = side // layer.stride
            total += side_out ** 2 * layer.c_in * layer.c_out * layer.kernel ** 2
            side = side_out
        else:
            total += side ** 2 * layer.c_in * layer.c_out * layer.kernel ** 2
            side *= layer.stride
    return total


def random_weights(width: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = {}
    for k, layer in enumerate(layers(width)):
        fan_in = layer.c_in * layer.kernel ** 2
        shape = ((layer.c_out, layer.c_in) if layer.kind == "conv" else (layer.c_in, layer.c_out)) + (layer.kernel,) * 2
        w[f"layer{k}_w"] = (rng.standard_normal(shape) * np.sqrt(2 / fan_in)).astype(np.float32)
        w[f"layer{k}_b"] = (rng.standard_normal(layer.c_out) * 0.1).astype(np.float32)
    return w


def build_graph(weights: dict[str, np.ndarray], image: np.ndarray, width: int = 16) -> Graph:
    """ResFCN256 on ``image`` (1, 3, S, S) in [0, 1]; output ``position`` (1, 3, S, S) in [0, 1]."""
    g = Graph(f"prnet_resfcn_w{width}")
    x = g.input("image", image.astype(np.float32))
    spec = iter(enumerate(layers(width)))

    def conv(t, relu=True):
        k, layer = next(spec)
        pad = (1, 2) if layer.kernel == 4 and layer.stride == 1 else ((1, 1) if layer.kernel == 4 else (0, 0))
        out = g.conv(t, weights[f"layer{k}_w"], weights[f"layer{k}_b"], layer.stride, pad)
        return g.relu(out) if relu else out

    x = conv(x)
    c = width
    f = width / 16
    for channels, stride in BLOCKS:
        n = int(channels * f)
        shortcut = conv(x, relu=False) if (stride != 1 or n != c) else x
        y = conv(conv(x))
        y = conv(y, relu=False)
        x = g.relu(g.add(y, shortcut))
        c = n
    for i, _ in enumerate(DECODER):
        k, layer = next(spec)
        x = g.conv_transpose(x, weights[f"layer{k}_w"], weights[f"layer{k}_b"], layer.stride)
        x = g.sigmoid(x) if i == len(DECODER) - 1 else g.relu(x)
    g.output(x, "position")
    return g


def read_uv_keypoints(path) -> tuple[np.ndarray, np.ndarray]:
    """``uv_kpt_ind.txt``: 2 rows of 68 UV coordinates (u = column, v = row)."""
    try:
        uv = np.loadtxt(path).astype(np.int64)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a PRNet uv_kpt_ind.txt ({exc})") from exc
    if uv.shape != (2, 68) or uv.min() < 0 or uv.max() >= RESOLUTION:
        raise ValueError(f"{path}: expected 2 x 68 UV indices in [0, {RESOLUTION}), got shape {uv.shape}")
    return uv[0], uv[1]


class PRNet(Adapter):
    """ResFCN256 through onnxruntime; set ``checkpoint`` and ``uv_keypoints`` (or
    $FACEBENCH_PRNET_UV) to the files you bring."""

    checkpoint: str | None = None
    uv_keypoints: str | None = None
    card = ModelCard(
        name="prnet", task="landmarks", scheme="ibug68", input_shape=(1, 3, RESOLUTION, RESOLUTION),
        input_range=(0.0, 1.0), macs={"resfcn256": analytic_macs()},
        artifacts={"onnx": "built in memory from random weights", "uv_kpt_ind": "user-supplied uv_kpt_ind.txt"},
        description="PRNet ResFCN256: 256x256 crop -> UV position map; 68 points read at uv_kpt_ind",
        source="reimplemented from the paper and its released code; weights live on a file host, not reachable here",
        options={"untrained": True, "crop": "box side mean x 1.58, centre moved down 0.14 of it (PRNet's dlib crop)",
                 "tflite": "not exported: building TFLite needs TensorFlow"},
        # its crop rule (side x1.58, centre down 0.14) is for dlib detector boxes (PRNet's demo used dlib's MMOD
        # detector; facebench calibrates dlib's HOG boxes, the nearest convention it has)
        box_convention="dlib-hog",
    )

    @classmethod
    def unavailable(cls) -> tuple[str, str | None] | None:
        if cls.uv_keypoints or os.environ.get("FACEBENCH_PRNET_UV"):
            return None
        return ("needs PRNet's uv_kpt_ind.txt, which no registry ships (bring it from PRNet's Data/uv-data)",
                "export FACEBENCH_PRNET_UV=/path/to/uv_kpt_ind.txt")

    def load(self, runtime: str | None = None, threads: int = 1) -> dict[str, str]:
        import onnxruntime as ort

        uv = self.uv_keypoints or os.environ.get("FACEBENCH_PRNET_UV")
        if not uv:
            raise MissingExtra("prnet needs PRNet's uv_kpt_ind.txt, which no registry ships: "
                               "export FACEBENCH_PRNET_UV=/path/to/uv_kpt_ind.txt (or set PRNet.uv_keypoints)")
        self.u, self.v = read_uv_keypoints(uv)
        weights = random_weights() if self.checkpoint is None else dict(np.load(self.checkpoint))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        model = build_graph(weights, np.zeros((1, 3, 32, 32))).to_onnx()  # traced small; the graph is size-free
        _set_input_size(model, RESOLUTION)
        self.session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return {"runtime": "onnxruntime", "version": ort.__version__}

    def preprocess(self, sample: Sample, face_box: Box | Detection | None = None) -> tuple[dict[str, np.ndarray], Any]:
        image = sample.image()
        box = face_region(face_box, image)
        size = (box.width + box.height) / 2
        cx, cy = box.center[0], box.center[1] + 0.14 * size
        side = size * 1.58
        step = side / RESOLUTION
        matrix = np.array([[step, 0, cx - side / 2 + step / 2], [0, step, cy - side / 2 + step / 2]])
        crop = warp_affine(image, matrix, (RESOLUTION, RESOLUTION)) / 255.0
        return {"image": crop.transpose(2, 0, 1).astype(np.float32)}, matrix

    def forward(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"position": self.session.run(None, {"image": inputs["image"]})[0]}

    def postprocess(self, outputs: dict[str, np.ndarray], context: np.ndarray) -> Prediction:
        position = outputs["position"].transpose(1, 2, 0) * RESOLUTION * 1.1  # crop pixels
        points = position[self.v, self.u, :2]
        image_points = points @ context[:, :2].T + context[:, 2]
        return Prediction(landmarks=Landmarks(image_points, "ibug68"))


def _set_input_size(model, size: int) -> None:
    """Declare the traced graph's input and output as (batch, 3, size, size)."""
    for value in (*model.graph.input, *model.graph.output):
        dims = value.type.tensor_type.shape.dim
        dims[0].dim_param = "batch"
        dims[2].dim_value = size
        dims[3].dim_value = size
    del model.graph.value_info[:]
