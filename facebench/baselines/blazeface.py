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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
from facebench.runtimes import OnnxSession, TFLiteSession, open_session
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


SHORT_RANGE = AnchorGrid(128, ((8, 2), (16, 6)))
FULL_RANGE = AnchorGrid(192, ((4, 1),))


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
        artifacts={"tflite": "face_detection_short_range.tflite"},
        description="BlazeFace front-camera (short range) detector, MediaPipe release; 896 anchors, 6 keypoints",
        source="mediapipe==0.10.21 wheel, Apache-2.0",
        box_convention="image",
        options={"score_threshold": 0.5, "iou_threshold": 0.3, "tie_resolution": "blend",
                 "onnx": "tflite2onnx 0.4.1 (no TensorFlow needed) converts it faithfully: NCHW input, max abs "
                         "difference 5.3e-5 against TFLite on random input; not shipped as an artifact yet"},
    )
    grid = SHORT_RANGE

    def __init__(self, tie_resolution: str | None = None):
        self.tie_resolution = tie_resolution or self.card.options["tie_resolution"]
        if self.tie_resolution not in ("blend", "nms"):
            raise ValueError(f"tie_resolution must be 'blend' or 'nms', not {self.tie_resolution!r}")
        self.anchors = self.grid.centres()
        self.session: TFLiteSession | OnnxSession | None = None

    def load(self, runtime: str | None = None, threads: int = 1) -> dict[str, str]:
        self.session = session = open_session(asset_path(self.card.artifacts["tflite"]), runtime or "tflite", threads)
        self._input = session.inputs[0].name
        # the regressor output has 16 values per anchor, the classifier 1
        by_width = sorted(session.outputs, key=lambda o: o.shape[-1])
        self._scores, self._regressors = by_width[0].name, by_width[-1].name
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
        return {self._input: tensor.astype(np.float32)}, matrix

    def forward(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._session().run(inputs)

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
