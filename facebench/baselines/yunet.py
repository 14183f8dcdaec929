"""YuNet (Wu, Peng & Yu 2023) as compiled into libfacedetection, called through ctypes.

The weights are C arrays compiled into ``libfacedetection.so`` (the yuface==2023.5.1 wheel, libfacedetection
at commit ab09a8e / 005fc5b, May 2023); there is no graph to load, so facebench loads the library itself
(and the OpenMP runtime it was linked against) from verified assets and calls its one entry point::

    int *facedetect_cnn(unsigned char *result_buffer, unsigned char *rgb_image_data,
                        int width, int height, int step);   // C++ symbol _Z14facedetect_cnnPhS_iii

Contract of this version (``src/facedetectcnn-model.cpp`` and ``example/detect-image.cpp`` since commit
ebbde37, and the disassembly of this build): the image is BGR interleaved uint8, ``step`` bytes per row;
``result_buffer`` must hold ``DETECT_BUFFER_SIZE = 0x9000`` bytes; the function returns it with
``int`` face count (at most 1024) followed by 16 ``short`` per face: score (``(short)(100 * score)``,
truncated), x, y, w, h, then the five landmarks as x, y. The 16th short is never written. Faces below a
compiled-in score of 0.2 are dropped and overlaps resolved by NMS at IoU 0.45 (``detection_output``).

Coordinates: the network regresses boxes and landmarks in MMDetection's frame, where an image of width W
spans [0, W] (its training pipeline flips x to W - x and scales x by the resize factor), and the library
truncates those floats to int. An integer v stands for the middle of the interval that truncates to it
(v + 0.5 for v > 0, v - 0.5 for v < 0), and subtracting 0.5 moves MMDetection's frame into facebench's
pixel-centre convention. w and h are truncated differences (x1 = x0 + w, each dequantised), and a
reduced image's coordinates scale by the size ratio in MMDetection's frame before the shift.

Large images: the published WIDER FACE figures run YuNet on images at their original size; WIDER's images
are 1024 pixels wide (some over 4400 high), so their short side is at most 1024. An image whose short side
exceeds ``max_short_side`` (1024) is reduced (PIL, antialiased bilinear) until it does not, which also keeps
faces nearer the 10 to 300 pixels YuNet was trained for (yuface itself only warns above 960 pixels), and
detections are scaled back. ``max_long_side`` (8192) is a hard cap: the library computes blob sizes in
``int`` bytes (``memset(data, 0, channelStep * rows * cols)``), which overflows once the 32-padded image has
2**26 pixels (a segfault here at 11520x6480), and it returns coordinates as ``short``.

Threads: ``load(threads=n)`` sets OpenMP's thread count for every call (libgomp keeps it per calling
thread); the count does not change the results. Calls are serialised by a lock: the library keeps no state
between calls except its filter table, filled on the first call without synchronisation (unlocked calls from
8 threads did give the sequential results here), and the harness calls ``forward`` from one thread anyway.
"""

from __future__ import annotations

import ctypes
import os
import threading
from typing import Any

import numpy as np
from PIL import Image

from facebench import extras
from facebench.adapter import Adapter, object_input
from facebench.assets import asset_path
from facebench.types import Box, Detection, ModelCard, Prediction, Sample

DETECT_BUFFER_SIZE = 0x9000  # bytes: 4 + 1024 faces * 16 shorts * 2, rounded up (facedetectcnn-model.cpp)
SHORTS_PER_FACE = 16
FIELDS = 15  # score, x, y, w, h, 5 x (x, y); the 16th short is left unwritten by the library
SYMBOL = "_Z14facedetect_cnnPhS_iii"
GOMP = "libgomp-a34b3233.so.1.0.0"
MAX_FACES = 1024  # what the buffer holds; the library caps its count there
MAX_PADDED_PIXELS = 2**26  # the first blob's int byte count (32 floats per pixel at stride 2) overflows here

_CALL_LOCK = threading.Lock()  # one process-wide library: see the module docstring


def dequantise(values: np.ndarray) -> np.ndarray:
    """The middle of the interval of floats that C's truncation maps to each integer."""
    v = np.asarray(values, dtype=np.float64)
    return v + 0.5 * np.sign(v)


def decode(raw: np.ndarray, scale: tuple[float, float] = (1.0, 1.0)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Library rows (N, 15 or 16 ints) -> boxes (N, 4: x0, y0, x1, y1), keypoints (N, 5, 2) in image pixels
    (pixel-centre convention) and scores in [0, 1]. ``scale`` maps the library's input to the image."""
    raw = np.asarray(raw, dtype=np.float64)[:, :FIELDS]
    s = np.array(scale, dtype=np.float64)
    x0y0 = dequantise(raw[:, 1:3])
    x1y1 = x0y0 + dequantise(raw[:, 3:5])
    boxes = np.concatenate([x0y0 * s, x1y1 * s], axis=1) - 0.5
    keypoints = dequantise(raw[:, 5:15]).reshape(-1, 5, 2) * s - 0.5
    return boxes, keypoints, raw[:, 0] / 100.0


class YuNet(Adapter):
    card = ModelCard(
        name="yunet",
        task="detector",
        scheme="five_point",
        input_shape=(1, -1, -1, 3),
        input_range=(0.0, 255.0),
        macs={},  # compiled C++: no graph to count from
        artifacts={"library": "libfacedetection.so", "openmp": GOMP},
        description="YuNet (Wu, Peng & Yu, Machine Intelligence Research 2023), the YuNet_s weights compiled "
                    "into libfacedetection: anchor-free, strides 8/16/32, 5 keypoints; BGR image of any size",
        source="yuface==2023.5.1 wheel (cp311 manylinux x86_64; libfacedetection by Shiqi Yu et al., "
               "May 2023), BSD-3-Clause",
        box_convention="image",
        platforms=("linux-x86_64",),
        options={
            "score_threshold": 0.2, "iou_threshold": 0.45, "max_detections": 512,
            "thresholds": "compiled into the library (detection_output(..., 0.45, 0.2, 1000, 512)); every face "
                          "it returns is kept",
            "scores": "the library's integer confidence trunc(100 * sqrt(cls * obj)) divided by 100: "
                      "[0.2, 1] in steps of 0.01 (ties are common)",
            "max_short_side": 1024, "max_long_side": 8192,
            "large_images": "reduced with PIL (antialiased bilinear) until the short side is <= 1024 and the long "
                            "side <= 8192, detections scaled back: WIDER FACE (1024 wide) runs at original size as "
                            "published; the library's int byte counts overflow at 2**26 padded pixels",
            "coordinates": "library ints are truncated floats in MMDetection's [0, W] frame: v + 0.5 sign(v) "
                           "- 0.5 in pixel-centre coordinates; x1 = x0 + w",
            "model": "YuNet_s: the layer table in facedetectcnn-data.cpp has YuNet_s's stage channels "
                     "(16, 32, 64, 64, 64, 64; configs/yunet_s.py of libfacedetection.train), 53,184 "
                     "weights with batch norm folded",
            "cost": "not countable (compiled library, no graph). Published for YuNet_s: 54,608 parameters, "
                    "96 MFlops at 320x320 (libfacedetection.train README, commit 0047ac2, table 'Compare ONNX "
                    "model with other works'). The paper's 75,856 parameters are YuNet_n's, not this model's",
        },
    )

    def __init__(self, max_short_side: int | None = None, max_long_side: int | None = None):
        o = self.card.options
        self.max_short_side = int(max_short_side if max_short_side is not None else o["max_short_side"])
        self.max_long_side = int(max_long_side if max_long_side is not None else o["max_long_side"])
        self._detect: Any = None
        self._set_threads: Any = None
        self.threads = 1

    def load(self, runtime: str | None = None, threads: int = 1) -> dict[str, str]:
        """``runtime`` is ignored: the compiled library is its own runtime (as dlib's and OpenCV's are)."""
        extras.require_platform(self.card.platforms, self.card.name)
        # the library's RPATH ($ORIGIN/../yuface.libs) does not exist in the asset cache: preload the OpenMP
        # runtime globally so the loader finds it by soname
        ctypes.CDLL(str(asset_path(self.card.artifacts["openmp"])), mode=ctypes.RTLD_GLOBAL)
        library = ctypes.CDLL(str(asset_path(self.card.artifacts["library"])))
        # the OpenMP runtime the library is bound to: the first one loaded under that soname (yuface's own,
        # if yuface was imported first)
        gomp = ctypes.CDLL(GOMP, mode=ctypes.RTLD_GLOBAL | os.RTLD_NOLOAD)
        detect = getattr(library, SYMBOL)
        detect.restype = ctypes.POINTER(ctypes.c_int)
        detect.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self._set_threads = gomp.omp_set_num_threads
        self._set_threads.argtypes = [ctypes.c_int]
        self._set_threads.restype = None
        self._detect = detect
        self.threads = max(1, int(threads))
        return {"runtime": "libfacedetection", "version": "yuface==2023.5.1"}

    def preprocess(self, sample: Sample, face_box: Box | Detection | None = None) -> tuple[dict[str, np.ndarray], Any]:
        image = sample.image()
        height, width = image.shape[:2]
        factor = min(1.0, self.max_short_side / max(1, min(width, height)), self.max_long_side / max(width, height, 1))
        if factor < 1.0:
            size = (max(1, round(width * factor)), max(1, round(height * factor)))
            image = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
        bgr = np.ascontiguousarray(image[:, :, ::-1], dtype=np.uint8)
        scale = (width / bgr.shape[1], height / bgr.shape[0])
        return {"image": object_input(bgr)}, scale

    def raw(self, bgr: np.ndarray) -> np.ndarray:
        """The library's rows for one BGR image: (N, 15) int16 (score, x, y, w, h, landmarks)."""
        if self._detect is None:
            raise RuntimeError(f"{self.card.name}: load() first")
        if np.ndim(bgr) != 3 or np.shape(bgr)[2] != 3:
            raise ValueError(f"{self.card.name} needs an (H, W, 3) image, got shape {np.shape(bgr)}")
        height, width = np.shape(bgr)[:2]
        if height == 0 or width == 0:
            return np.zeros((0, FIELDS), np.int16)
        padded = (-(-height // 32) * 32) * (-(-width // 32) * 32)
        if padded >= MAX_PADDED_PIXELS or max(height, width) > np.iinfo(np.int16).max:
            raise ValueError(f"{self.card.name}: a {width}x{height} image overflows the library's int sizes or "
                             "short coordinates; reduce it first (preprocess does)")
        bgr = np.ascontiguousarray(bgr, dtype=np.uint8)
        buffer = np.zeros(DETECT_BUFFER_SIZE, np.uint8)
        with _CALL_LOCK:
            self._set_threads(self.threads)
            self._detect(buffer.ctypes.data, bgr.ctypes.data, width, height, bgr.strides[0])
        count = int(buffer[:4].view(np.int32)[0])
        if not 0 <= count <= MAX_FACES:
            raise RuntimeError(f"{self.card.name}: the library reported {count} faces")
        rows = buffer[4:4 + 2 * SHORTS_PER_FACE * count].view(np.int16).reshape(count, SHORTS_PER_FACE)
        return rows[:, :FIELDS].copy()

    def forward(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = np.empty(len(inputs["image"]), dtype=object)
        for i, bgr in enumerate(inputs["image"]):
            out[i] = self.raw(bgr)
        return {"faces": out}

    def postprocess(self, outputs: dict[str, np.ndarray], context: Any) -> Prediction:
        boxes, keypoints, scores = decode(np.asarray(outputs["faces"]).reshape(-1, FIELDS), context)
        return Prediction(detections=tuple(
            Detection(Box.from_array(boxes[i]), float(scores[i]), keypoints[i]) for i in range(len(scores))))
