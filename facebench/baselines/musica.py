"""MuSiCa (Shapira et al. 2021): selective cascaded regression with patch attention.

One iteration i of the cascade, as the paper describes it:

* the face at a resolution that doubles each iteration (32, 64, 128 pixels for
  three iterations), grey, in [0, 1];
* 14x14 patches around P of the N current landmarks (nearest pixel, edges
  clamped);
* a feature extractor per patch: 3x3 convolution to C1 channels, ReLU, 2x2
  max-pool, 3x3 convolution to C2 channels, ReLU, 2x2 max-pool; the patch
  descriptor is the centre crop of the second convolution (the pooled size)
  concatenated with the second pool's output;
* local patch attention: a fully connected layer + sigmoid on the descriptor
  gives one weight per component, multiplied in;
* the recurrence: all weighted descriptors and the previous hidden state
  into a fully connected layer + tanh;
* from the hidden state, one fully connected layer for the N displacements and
  one for the estimated error; S(i+1) = 2 S(i) + dx(i+1); weights per iteration.

What the paper leaves open, and what is chosen here so that the MACs land
within 5% of its Table 1 (3 iterations: 68/68 95M, 68/34 48M, 68/19 26M,
98/98 138M, 98/49 69M; see ``tests/test_musica_prnet.py``): "same" padding,
C1 = 8, C2 = 32 (descriptor 2 x 3 x 3 x 32 = 576), one attention layer shared
by all patches of an iteration, a hidden state of 32, and the patch subset
P of N as evenly spaced indices of the scheme (every other point for 68/34).
The cost is then 477k MACs per patch per iteration plus a few thousand, which
is linear in P as the paper's table is.

Weights: without a checkpoint the weights are random (seeded) and the card
says ``untrained``: cost and latency only, never accuracy. A trained
checkpoint is an ``.npz`` with, for each iteration k (1-based), the arrays
``it{k}/conv1_w`` (C1, 1, 3, 3), ``conv1_b``, ``conv2_w`` (C2, C1, 3, 3),
``conv2_b``, ``att_w`` (D, D), ``att_b``, ``rec_w`` (P*D + H, H), ``rec_b``,
``dx_w`` (H, 2N), ``dx_b``, ``err_w`` (H, 1), ``err_b``, plus ``mean_shape``
(N, 2, in first-iteration pixels) and ``patch_index`` (P,). Subclass an
adapter with ``checkpoint = "path.npz"`` and run it as ``file.py:Class``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facebench.adapter import Adapter, face_region
from facebench.imaging import warp_affine
from facebench.runtimes import RuntimeUnavailable
from facebench.runtimes.graph import Graph
from facebench.types import (
    Box,
    Detection,
    Landmarks,
    ModelCard,
    Prediction,
    Sample,
    StageOutput,
)

PATCH = 14


@dataclass(frozen=True)
class MusicaConfig:
    points: int = 68
    patches: int = 68
    iterations: int = 3
    first_resolution: int = 32
    c1: int = 8
    c2: int = 32
    hidden: int = 32

    @property
    def descriptor(self) -> int:
        pooled = (PATCH // 2) // 2
        return 2 * pooled * pooled * self.c2

    def resolution(self, k: int) -> int:
        return self.first_resolution * 2 ** k

    def patch_index(self) -> np.ndarray:
        return np.unique(np.round(np.linspace(0, self.points - 1, self.patches)).astype(np.int64))

    def iteration_macs(self) -> int:
        """Multiply-accumulates of one iteration, counted from the layer shapes."""
        conv1 = PATCH * PATCH * 9 * self.c1
        half = PATCH // 2
        conv2 = half * half * 9 * self.c1 * self.c2
        d = self.descriptor
        per_patch = conv1 + conv2 + d * d
        return (self.patches * per_patch + (self.patches * d + self.hidden) * self.hidden
                + self.hidden * (2 * self.points + 1))


def random_weights(config: MusicaConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """He-initialised weights (untrained) in the checkpoint layout."""
    rng = np.random.default_rng(seed)
    d, h = config.descriptor, config.hidden

    def he(*shape, fan_in):
        return (rng.standard_normal(shape) * np.sqrt(2 / fan_in)).astype(np.float32)

    w: dict[str, np.ndarray] = {}
    for k in range(1, config.iterations + 1):
        p = f"it{k}/"
        w |= {p + "conv1_w": he(config.c1, 1, 3, 3, fan_in=9), p + "conv1_b": np.zeros(config.c1, np.float32),
              p + "conv2_w": he(config.c2, config.c1, 3, 3, fan_in=9 * config.c1),
              p + "conv2_b": np.zeros(config.c2, np.float32),
              p + "att_w": he(d, d, fan_in=d), p + "att_b": np.zeros(d, np.float32),
              p + "rec_w": he(config.patches * d + h, h, fan_in=config.patches * d + h) * 0.5,
              p + "rec_b": np.zeros(h, np.float32),
              p + "dx_w": he(h, 2 * config.points, fan_in=h) * 0.1, p + "dx_b": np.zeros(2 * config.points, np.float32),
              p + "err_w": he(h, 1, fan_in=h) * 0.1, p + "err_b": np.full(1, 0.05, np.float32)}
    # a plausible mean face in the first resolution: an ellipse of points
    t = np.linspace(0, 2 * np.pi, config.points, endpoint=False)
    r0 = config.first_resolution
    w["mean_shape"] = np.stack([r0 / 2 + 0.3 * r0 * np.cos(t), r0 / 2 + 0.35 * r0 * np.sin(t)], 1).astype(np.float32)
    w["patch_index"] = config.patch_index()
    return w


def iteration_graph(config: MusicaConfig, weights: dict[str, np.ndarray], k: int, image: np.ndarray,
                    shape: np.ndarray, hidden: np.ndarray) -> Graph:
    """Iteration ``k`` (0-based) as a graph, evaluated on the given inputs.

    Inputs: ``image`` (1, 1, R, R) at this iteration's resolution, ``shape``
    (N, 2) landmarks in its pixels, ``hidden`` (1, H). Outputs: ``dx`` (N, 2),
    ``error`` (1, 1), ``hidden_out`` (1, H).
    """
    p = f"it{k + 1}/"
    g = Graph(f"musica_{config.points}x{config.patches}_it{k + 1}")
    img = g.input("image", image.astype(np.float32))
    s = g.input("shape", shape.astype(np.float32))
    h_prev = g.input("hidden", hidden.astype(np.float32))
    centres = g._node("Gather", [s, g.const(weights["patch_index"].astype(np.int64))],
                      s.value[weights["patch_index"]], axis=0)
    patches = g.gather_patches(img, centres, PATCH)
    c1 = g.relu(g.conv(patches, weights[p + "conv1_w"], weights[p + "conv1_b"], pad=(1, 1)))
    p1 = g.max_pool(c1)
    c2 = g.relu(g.conv(p1, weights[p + "conv2_w"], weights[p + "conv2_b"], pad=(1, 1)))
    p2 = g.max_pool(c2)
    side, pooled = c2.value.shape[-1], p2.value.shape[-1]
    lo = (side - pooled) // 2
    centre = g.slice(c2, [lo, lo], [lo + pooled, lo + pooled], [2, 3])
    desc = g.reshape(g.concat([centre, p2], axis=1), [len(weights["patch_index"]), -1])
    attention = g.sigmoid(g.gemm(desc, weights[p + "att_w"], weights[p + "att_b"]))
    weighted = g.reshape(g.mul(desc, attention), [1, -1])
    h = g.tanh(g.gemm(g.concat([weighted, h_prev], axis=1), weights[p + "rec_w"], weights[p + "rec_b"]))
    dx = g.reshape(g.gemm(h, weights[p + "dx_w"], weights[p + "dx_b"]), [config.points, 2])
    err = g.gemm(h, weights[p + "err_w"], weights[p + "err_b"])
    g.output(dx, "dx")
    g.output(err, "error")
    g.output(h, "hidden_out")
    return g


def load_weights(config: MusicaConfig, checkpoint: str | Path | None) -> dict[str, np.ndarray]:
    if checkpoint is None:
        return random_weights(config)
    with np.load(checkpoint) as data:
        weights = {k: data[k] for k in data.files}
    expected = random_weights(config)
    for key, value in expected.items():
        if key not in weights:
            raise ValueError(f"{checkpoint}: missing {key}")
        if key != "patch_index" and weights[key].shape != value.shape:
            raise ValueError(f"{checkpoint}: {key} has shape {weights[key].shape}, expected {value.shape}")
    return weights


@dataclass(frozen=True)
class FaceFrame:
    """Face box -> the square crop the first iteration sees (crop pixels -> image pixels)."""

    x0: float
    y0: float
    side: float

    def to_image(self, points: np.ndarray, resolution: int) -> np.ndarray:
        scale = self.side / resolution
        return np.asarray(points, np.float64) * scale + [self.x0, self.y0] + scale / 2 - 0.5


def _card(config: MusicaConfig, untrained: bool) -> ModelCard:
    name = f"musica-{config.points}x{config.patches}"
    per_iteration = config.iteration_macs()
    return ModelCard(
        name=name, task="landmarks", scheme="ibug68" if config.points == 68 else "wflw98",
        input_shape=(1, 1, -1, -1),  # one grey face per iteration, at 32, 64, 128 px
        input_range=(0.0, 1.0), macs={f"iteration{k + 1}": per_iteration for k in range(config.iterations)},
        artifacts={f"onnx-iteration{k + 1}": f"built in memory from {'random' if untrained else 'checkpoint'} weights"
                   for k in range(config.iterations)},
        description=f"MuSiCa, {config.points} points / {config.patches} patches, {config.iterations} iterations "
                    f"at {', '.join(str(config.resolution(k)) for k in range(config.iterations))} px",
        source="reimplemented from the paper (arXiv 2108.00377); released weights need a TF1 image, not reachable here",
        options={"untrained": untrained, "early_exit": True,
                 "paper_macs": PAPER_MACS.get((config.points, config.patches)),
                 "estimate": "the model's error head", "tflite": "not exported: building TFLite needs TensorFlow"},
        # trained on 300-W's landmark boxes (68 points) and WFLW's rectangles (98 points)
        box_convention="tight-68" if config.points == 68 else "wflw-rect",
    )


PAPER_MACS = {(68, 68): 95e6, (68, 34): 48e6, (68, 19): 26e6, (98, 98): 138e6, (98, 49): 69e6}


class Musica(Adapter):
    """MuSiCa through onnxruntime, one session per iteration (so each stage is read out)."""

    config = MusicaConfig()
    checkpoint: str | None = None
    card = _card(config, untrained=True)

    def load(self, runtime: str | None = None, threads: int = 1) -> dict[str, str]:
        import onnxruntime as ort

        if runtime not in (None, "onnxruntime"):
            raise RuntimeUnavailable(f"{self.card.name} runs on onnxruntime, not {runtime}")
        cfg = self.config
        self.weights = load_weights(cfg, self.checkpoint)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.sessions = []
        shape = self.weights["mean_shape"].astype(np.float32)
        for k in range(cfg.iterations):
            r = cfg.resolution(k)
            graph = iteration_graph(cfg, self.weights, k, np.zeros((1, 1, r, r)), shape * 2 ** k,
                                    np.zeros((1, cfg.hidden)))
            self.sessions.append(ort.InferenceSession(graph.to_onnx().SerializeToString(), options,
                                                      providers=["CPUExecutionProvider"]))
        return {"runtime": "onnxruntime", "version": ort.__version__}

    def preprocess(self, sample: Sample, face_box: Box | Detection | None = None) -> tuple[dict[str, np.ndarray], Any]:
        image = sample.image()
        box = face_region(face_box, image)
        side = max(box.width, box.height) * 1.2
        cx, cy = box.center
        frame = FaceFrame(cx - side / 2, cy - side / 2, side)
        grey = image.astype(np.float32).mean(axis=2) / 255.0
        inputs = {}
        for k in range(self.config.iterations):
            r = self.config.resolution(k)
            step = side / r
            matrix = np.array([[step, 0, frame.x0 + step / 2 - 0.5], [0, step, frame.y0 + step / 2 - 0.5]])
            inputs[f"image{k}"] = warp_affine(grey[..., None], matrix, (r, r), border="replicate")[None, :, :, 0]
        return inputs, frame

    def forward(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cfg = self.config
        n = len(inputs["image0"])
        shapes = np.zeros((n, cfg.iterations, cfg.points, 2), np.float32)
        errors = np.zeros((n, cfg.iterations), np.float32)
        for i in range(n):
            shape, hidden = self.weights["mean_shape"].astype(np.float32), np.zeros((1, cfg.hidden), np.float32)
            for k, session in enumerate(self.sessions):
                if k:
                    shape = 2 * shape  # S(i+1) = 2 S(i) + dx: the next resolution doubles
                dx, err, hidden = session.run(None, {"image": inputs[f"image{k}"][i][None].astype(np.float32),
                                                     "shape": shape, "hidden": hidden})
                shape = shape + dx
                shapes[i, k], errors[i, k] = shape, err[0, 0]
        return {"shapes": shapes, "errors": errors}

    def postprocess(self, outputs: dict[str, np.ndarray], context: FaceFrame) -> Prediction:
        stages = tuple(
            StageOutput(Landmarks(context.to_image(s, self.config.resolution(k)), self.card.scheme), float(e))
            for k, (s, e) in enumerate(zip(outputs["shapes"], outputs["errors"])))
        return Prediction(landmarks=stages[-1].landmarks, stages=stages)


def _variant(points: int, patches: int) -> type[Musica]:
    config = MusicaConfig(points=points, patches=patches)
    return type(f"Musica{points}x{patches}", (Musica,), {"config": config, "card": _card(config, untrained=True)})


Musica68x68 = _variant(68, 68)
Musica68x34 = _variant(68, 34)
Musica68x19 = _variant(68, 19)
Musica98x98 = _variant(98, 98)
Musica98x49 = _variant(98, 49)
