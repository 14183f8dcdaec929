"""A numpy MTCNN from ``mtcnn==1.0.0`` (ipazc/mtcnn): its weight arrays and its conventions, no TFLite.

The nets follow ipazc's Keras definitions (``mtcnn/network/{pnet,rnet,onet}.py``): valid 3x3 / 2x2
convolutions with (kh, kw, in, out) kernels, PReLU per channel (shared over space), max pooling with
TensorFlow's SAME padding (rounds up, as Caffe's ceil mode), a ``Permute((2, 1, 3))`` before flattening
(the Caffe weights were trained on transposed images: ipazc moved the transposition into the weights),
softmax heads. They see images upright, unlike the TFLite graphs, so agreement pins the layout.

The pipeline follows ipazc's stages (``mtcnn/stages``, ``mtcnn/utils``): its pyramid
(``build_scale_pyramid``), boxes from the P-Net map (``generate_bounding_box``: windows at 2 * i + 1 ..
2 * i + 12, offsets times 11), NMS over the IoU matrix, ``resize_to_square``, crops by TensorFlow's
``crop_and_resize`` (bilinear, corner-aligned, zeros outside), landmarks ``w * l + x1 - 1``. Two stand-ins:
the pyramid is resized by OpenCV's INTER_AREA (ipazc: ``tf.image.resize(..., AREA)``), and
``crop_and_resize`` is written out in numpy.

The weights are read only through :func:`facebench.assets.asset_path` (hash-checked before unpickling).
"""

from __future__ import annotations

import numpy as np


def load_weights(net: str) -> list[np.ndarray]:
    import joblib

    from facebench.assets import asset_path

    return [np.asarray(w, dtype=np.float64) for w in joblib.load(asset_path(f"mtcnn-{net}.lz4"))]


def conv(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Valid, stride-1 convolution of NHWC ``x`` with a (kh, kw, in, out) kernel."""
    kh, kw = kernel.shape[:2]
    windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))  # N, H', W', C, kh, kw
    return np.einsum("nhwcij,ijco->nhwo", windows, kernel, optimize=True) + bias


def prelu(x: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0) + alpha.reshape(-1) * np.minimum(x, 0)


def max_pool_same(x: np.ndarray, size: int, stride: int) -> np.ndarray:
    """TensorFlow SAME max pooling: out = ceil(n / stride), padding split with the extra at the end."""
    pads = []
    for n in x.shape[1:3]:
        out = -(-n // stride)
        total = max((out - 1) * stride + size - n, 0)
        pads.append((total // 2, total - total // 2))
    x = np.pad(x, ((0, 0), *pads, (0, 0)), constant_values=-np.inf)
    windows = np.lib.stride_tricks.sliding_window_view(x, (size, size), axis=(1, 2))[:, ::stride, ::stride]
    return windows.max(axis=(-2, -1))


def max_pool_valid(x: np.ndarray, size: int, stride: int) -> np.ndarray:
    windows = np.lib.stride_tricks.sliding_window_view(x, (size, size), axis=(1, 2))[:, ::stride, ::stride]
    return windows.max(axis=(-2, -1))


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def flatten_permuted(x: np.ndarray) -> np.ndarray:
    return x.transpose(0, 2, 1, 3).reshape(len(x), -1)


class Nets:
    """P-Net, R-Net and O-Net in float64; inputs are normalised NHWC images, upright."""

    def __init__(self):
        self.p, self.r, self.o = load_weights("pnet"), load_weights("rnet"), load_weights("onet")

    def pnet(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(offsets (N, h, w, 4), probabilities (N, h, w, 2)), ipazc's output order."""
        w = self.p
        x = max_pool_same(prelu(conv(x, w[0], w[1]), w[2]), 2, 2)
        x = prelu(conv(x, w[3], w[4]), w[5])
        x = prelu(conv(x, w[6], w[7]), w[8])
        return conv(x, w[9], w[10]), softmax(conv(x, w[11], w[12]))

    def rnet(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(offsets (N, 4), probabilities (N, 2))."""
        w = self.r
        x = max_pool_same(prelu(conv(x, w[0], w[1]), w[2]), 3, 2)
        x = max_pool_valid(prelu(conv(x, w[3], w[4]), w[5]), 3, 2)
        x = prelu(conv(x, w[6], w[7]), w[8])
        x = prelu(flatten_permuted(x) @ w[9] + w[10], w[11])
        return x @ w[12] + w[13], softmax(x @ w[14] + w[15])

    def onet(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(offsets (N, 4), landmarks (N, 10) as x1..x5, y1..y5, probabilities (N, 2))."""
        w = self.o
        x = max_pool_same(prelu(conv(x, w[0], w[1]), w[2]), 3, 2)
        x = max_pool_valid(prelu(conv(x, w[3], w[4]), w[5]), 3, 2)
        x = max_pool_same(prelu(conv(x, w[6], w[7]), w[8]), 2, 2)
        x = prelu(conv(x, w[9], w[10]), w[11])
        x = prelu(flatten_permuted(x) @ w[12] + w[13], w[14])
        return x @ w[15] + w[16], x @ w[17] + w[18], softmax(x @ w[19] + w[20])


# ipazc's pipeline ----------------------------------------------------------------------------------

def build_scale_pyramid(width: int, height: int, min_face_size: int = 20, scale_factor: float = 0.709,
                        min_size: int = 12) -> np.ndarray:
    min_dim = min(width, height)
    count = round(-((np.log(min_dim / min_size) / np.log(scale_factor)) + 1))
    return min_size / min_face_size * scale_factor ** np.arange(count)


def crop_and_resize(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """TensorFlow's crop_and_resize for boxes (y1, x1, y2, x2) normalised by (H, W): bilinear samples at
    y1 * (H - 1) + i * (y2 - y1) * (H - 1) / (size - 1), zero outside the image."""
    h, w = image.shape[:2]
    i = np.arange(size) / (size - 1)
    out = np.empty((len(boxes), size, size, image.shape[2]))
    for k, (y1, x1, y2, x2) in enumerate(boxes):
        ys = y1 * (h - 1) + i * (y2 - y1) * (h - 1)
        xs = x1 * (w - 1) + i * (x2 - x1) * (w - 1)
        y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
        fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]

        def tap(yy, xx):
            yy, xx = np.broadcast_arrays(yy[:, None], xx[None, :])
            vals = image[np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)]
            return vals * ((yy >= 0) & (yy < h) & (xx >= 0) & (xx < w))[..., None]

        top = tap(y0, x0) * (1 - fx) + tap(y0, x0 + 1) * fx
        bottom = tap(y0 + 1, x0) * (1 - fx) + tap(y0 + 1, x0 + 1) * fx
        inside = ((ys >= 0) & (ys <= h - 1))[:, None, None] & ((xs >= 0) & (xs <= w - 1))[None, :, None]
        out[k] = np.where(inside, top * (1 - fy) + bottom * fy, 0.0)
    return out


def _iou_matrix(boxes: np.ndarray, method: str) -> np.ndarray:
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    a, b = boxes[None, :], boxes[:, None]
    iw = np.maximum(0, np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]))
    ih = np.maximum(0, np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]))
    inter = iw * ih
    if method == "min":
        return inter / np.minimum(area[:, None], area[None, :])
    return inter / (area[:, None] + area[None, :] - inter)


def _nms(rows: np.ndarray, threshold: float, method: str = "union", sort: bool = True) -> np.ndarray:
    """ipazc's ``smart_nms_from_bboxes`` on rows (x1, y1, x2, y2, score, ...): a box goes when any
    better-ranked box overlaps it beyond the threshold (suppressed boxes still suppress)."""
    if sort:
        rows = rows[np.argsort(rows[:, 4])[::-1]]
    if not len(rows):
        return rows
    failed = (_iou_matrix(rows[:, :4], method) > threshold) & np.triu(np.ones((len(rows),) * 2, bool), k=1)
    return rows[~failed.any(axis=0)]


def _square(rows: np.ndarray) -> np.ndarray:
    rows = rows.copy()
    w, h = rows[:, 2] - rows[:, 0], rows[:, 3] - rows[:, 1]
    side = np.maximum(w, h)
    rows[:, 0] += w * 0.5 - side * 0.5
    rows[:, 1] += h * 0.5 - side * 0.5
    rows[:, 2:4] = rows[:, 0:2] + side[:, None]
    return rows


def _adjust(rows: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    rows = rows.copy()
    w, h = rows[:, 2] - rows[:, 0] + 1, rows[:, 3] - rows[:, 1] + 1
    rows[:, 0:4] += offsets * np.stack([w, h, w, h], axis=1)
    return rows


def detect(nets: Nets, image: np.ndarray, thresholds=(0.6, 0.7, 0.7)) -> np.ndarray:
    """ipazc's three stages on one RGB uint8 image: (D, 15) rows x1, y1, x2, y2, score, then landmarks as
    (x, y) pairs, in ipazc's own coordinates (not yet facebench's)."""
    import cv2

    height, width = image.shape[:2]
    norm = (image.astype(np.float64) - 127.5) / 128
    found = []
    for scale in build_scale_pyramid(width, height):
        size = (int(width * scale), int(height * scale))
        level = cv2.resize(norm.astype(np.float32), size, interpolation=cv2.INTER_AREA).astype(np.float64)
        offsets, prob = nets.pnet(level[None])
        ys, xs = np.nonzero(prob[0, :, :, 1] > thresholds[0])
        reg = offsets[0, ys, xs]
        x1, y1, x2, y2 = xs * 2 + 1, ys * 2 + 1, xs * 2 + 12, ys * 2 + 12
        rows = np.stack([x1 + reg[:, 0] * 11, y1 + reg[:, 1] * 11, x2 + reg[:, 2] * 11, y2 + reg[:, 3] * 11,
                         prob[0, ys, xs, 1]], axis=1)
        rows = rows[np.argsort(rows[:, 4])[::-1]]
        rows[:, :4] /= scale
        found.append(_nms(rows, 0.5, sort=False))
    rows = _square(_nms(np.concatenate(found), 0.7))
    if not len(rows):
        return np.zeros((0, 15))

    def patches(rows, size):
        norm_boxes = rows[:, [1, 0, 3, 2]] / np.array([height, width, height, width])
        return crop_and_resize(norm, norm_boxes, size)

    offsets, prob = nets.rnet(patches(rows, 24))
    rows[:, 4] = prob[:, 1]
    rows = _adjust(rows, offsets)
    rows = _square(_nms(rows[rows[:, 4] > thresholds[1]], 0.7))
    if not len(rows):
        return np.zeros((0, 15))

    offsets, marks, prob = nets.onet(patches(rows, 48))
    w, h = rows[:, 2:3] - rows[:, 0:1] + 1, rows[:, 3:4] - rows[:, 1:2] + 1
    xs, ys = w * marks[:, :5] + rows[:, 0:1] - 1, h * marks[:, 5:] + rows[:, 1:2] - 1
    rows[:, 4] = prob[:, 1]
    rows = np.concatenate([_adjust(rows, offsets), np.stack([xs, ys], axis=2).reshape(-1, 10)], axis=1)
    return _nms(rows[rows[:, 4] > thresholds[2]], 0.7, method="min")
