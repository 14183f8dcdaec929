"""A NumPy-only renderer of one real textured face scan, for pose sweeps whose landmarks are exact.

Photos with annotated landmarks carry the annotators' noise and a pose nobody controls; a rendered
scan has neither: the 68 landmarks are 3D points on the subject, so their image positions at any
pose are the camera's arithmetic, and whether each one is hidden by the head is a depth test, not
a guess. The subject is menpo3d's ``james`` scan (``facebench.assets``: ``menpo3d-james.obj``,
``.jpg``, ``.ljson``). No OpenGL: the rasteriser is vectorised NumPy, so renders are the same bytes
on every machine, and a 256x256 face takes a fraction of a second.

Conventions (all explicit, because a pose benchmark is only as good as them):

* Face frame (the scan as :func:`load_scan` returns it; scan units, roughly millimetres): origin at
  the centroid of the 68 landmarks; +x from the image-left eye (iBUG 36-41, the subject's right) to
  the image-right eye (42-47), +y up (from the mouth towards the eyes, made orthogonal to x), +z out
  of the face towards a frontal camera (right-handed). The OBJ's own axes are turned from it by about
  6 degrees of yaw and 4 of pitch; this frame makes yaw 0 frontal.
* Camera frame: x right, y down, z forward along the optical axis (OpenCV's).
  ``p_cam = R @ p_face + t`` with ``R = diag(1, -1, -1) @ Rz(roll) @ Rx(-pitch) @ Ry(yaw)``.
* Pose signs, as seen in the image: positive yaw turns the nose towards the image's right (the
  subject turns to their own left; the image-right cheek, iBUG 9-16, turns away); positive pitch
  lifts the nose up the image (the subject looks up); positive roll turns the face counter-clockwise
  in the image.
* Pixels: pixel centres at integer coordinates, (0, 0) the centre of the top-left pixel, x right,
  y down: ``u = f * X / Z + cx``, ``v = f * Y / Z + cy``.

Landmarks: the file's 3D points lie on the mesh (within 0.15 mm). Its jaw contour is anatomical, on
the jaw line, not the frontal outline a 2D annotator would click: even at yaw 0 some of its points
(0-4, 12-16 with a long lens; more with a close camera, which looks down onto the jaw's underside)
sit a few to ~20 mm behind the cheek's silhouette and are, correctly, not visible.

The scan is a mask: no back of the head; it wraps round to the ears and stops behind them. Up to
|yaw| = 90 (:data:`SOUND_YAW`) nothing of its inside shows (under 0.5 % of the covered samples,
folds at the ear and collar; :func:`backface_fraction`); past it the inside does (1 % at -95, 18 % at
-110). From about |yaw| = 45 the head's outline behind the ear is the scan's cut, not a skull: outside
the landmark box, but inside the context a face detector sees.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

# the file's 68 points are grouped chin, eye, eye, brow, nose, brow, mouth; iBUG-68 orders them chin,
# brow, brow, nose, eye, eye, mouth (within each group the order is iBUG's): iBUG point k is file point _TO_IBUG[k]
_TO_IBUG: np.ndarray = np.r_[0:17, 29:34, 43:48, 34:43, 17:23, 23:29, 48:68]
SOUND_YAW = 90.0  # |yaw| in degrees up to which no inside of the mask shows (module docstring)
JAW = np.arange(17)  # the iBUG jaw contour's indices
GREY = 128


@dataclass(frozen=True, eq=False)
class Scan:
    """A textured triangle mesh with 3D landmarks, in the face frame (module docstring).

    ``faces`` index ``vertices`` (and ``normals``); ``face_uv`` indexes ``uv`` (the OBJ's ``vt``: the
    texture has seams, so a vertex can have several uv). ``uv`` follows OBJ: (u, v) in [0, 1] with
    v = 0 at the bottom row of ``texture``. ``landmarks3d`` are the iBUG-68 points in iBUG order."""

    vertices: np.ndarray  # (V, 3) float64
    faces: np.ndarray  # (F, 3) int64, counter-clockwise seen from outside the head
    normals: np.ndarray  # (V, 3) float64, unit, area-weighted, pointing out of the face
    uv: np.ndarray  # (T, 2) float64
    face_uv: np.ndarray  # (F, 3) int64
    texture: np.ndarray  # (H, W, 3) uint8
    landmarks3d: np.ndarray  # (68, 3) float64


def read_obj(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Vertices, uv, faces and per-face uv indices (0-based) of a triangulated ``v``/``vt``/``f v/vt`` OBJ."""
    vertices, uv, faces, face_uv = [], [], [], []
    for line in Path(path).read_text().splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "v":
            vertices.append([float(x) for x in parts[1:4]])
        elif parts[0] == "vt":
            uv.append([float(x) for x in parts[1:3]])
        elif parts[0] == "f":
            if len(parts) != 4:
                raise ValueError(f"{path}: only triangles are read, got a face with {len(parts) - 1} corners")
            corners = [p.split("/") for p in parts[1:]]
            faces.append([int(c[0]) for c in corners])
            face_uv.append([int(c[1]) for c in corners])
    f, ft = np.array(faces, dtype=np.int64) - 1, np.array(face_uv, dtype=np.int64) - 1  # OBJ counts from 1
    v, t = np.array(vertices, dtype=np.float64), np.array(uv, dtype=np.float64)
    if f.min() < 0 or f.max() >= len(v) or ft.min() < 0 or ft.max() >= len(t):
        raise ValueError(f"{path}: face indices out of range (negative, relative indices are not read)")
    return v, t, f, ft


def read_ljson_3d(path: Path) -> np.ndarray:
    """The 68 points of menpo3d's ``james.ljson`` in iBUG-68 order, (68, 3) as (x, y, z).

    The file is menpo LJSON version 3 with one group; its points are 3D and stored (x, y, z) in the
    OBJ's own frame: unlike menpo's 2D image LJSON, which stores (y, x), nothing is swapped. Its 68
    points are grouped chin 0-16, eyes 17-22 and 23-28, brow 29-33, nose 34-42, brow 43-47, mouth
    48-67, each group ordered as iBUG orders it; :data:`_TO_IBUG` puts them in iBUG order."""
    data = json.loads(Path(path).read_text())
    (group,) = data["groups"].values()
    points = np.array(group["landmarks"]["points"], dtype=np.float64)
    if points.shape != (68, 3):
        raise ValueError(f"{path}: expected 68 3D points, got {points.shape}")
    return points[_TO_IBUG]


def _vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    tri = vertices[faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # length: twice the area
    out = np.zeros_like(vertices)
    for k in range(3):
        np.add.at(out, faces[:, k], n)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def _face_frame(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Origin and rows-are-axes rotation of the face frame (module docstring) in the file's frame."""
    x = landmarks[42:48].mean(0) - landmarks[36:42].mean(0)
    x /= np.linalg.norm(x)
    up = (landmarks[36:48].mean(0) - landmarks[48:68].mean(0))
    y = up - (up @ x) * x
    y /= np.linalg.norm(y)
    return landmarks.mean(0), np.stack([x, y, np.cross(x, y)])


@functools.lru_cache(maxsize=1)
def load_scan() -> Scan:
    """menpo3d's ``james`` scan in the face frame, pulled (and hash-checked) through facebench.assets."""
    from facebench.assets import asset_path

    v, uv, faces, face_uv = read_obj(asset_path("menpo3d-james.obj"))
    with Image.open(asset_path("menpo3d-james.jpg")) as im:
        texture = np.asarray(im.convert("RGB"), dtype=np.uint8)
    landmarks = read_ljson_3d(asset_path("menpo3d-james.ljson"))
    origin, axes = _face_frame(landmarks)
    v, landmarks = (v - origin) @ axes.T, (landmarks - origin) @ axes.T
    arrays = dict(vertices=v, faces=faces, normals=_vertex_normals(v, faces), uv=uv, face_uv=face_uv,
                  texture=texture, landmarks3d=landmarks)
    for a in arrays.values():
        a.setflags(write=False)  # one copy per process, shared by every caller
    return Scan(**arrays)


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Face frame to camera frame, ``diag(1, -1, -1) @ Rz(roll) @ Rx(-pitch) @ Ry(yaw)`` (degrees)."""
    a, b, c = (math.radians(d) for d in (yaw, -pitch, roll))
    ry = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    rz = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    return np.diag([1.0, -1.0, -1.0]) @ rz @ rx @ ry


@dataclass(frozen=True)
class Camera:
    """A pinhole camera looking at the face: ``p_cam = R(yaw, pitch, roll) @ p_face + translation``,
    ``(u, v) = focal * (X, Y) / Z + (cx, cy)`` in pixels (conventions: module docstring). ``cx``/``cy``
    default to the image centre, ``((width - 1) / 2, (height - 1) / 2)``; ``translation`` is in the
    camera frame, scan units (z: the distance of the face frame's origin in front of the camera)."""

    width: int
    height: int
    focal: float
    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0
    translation: tuple[float, float, float] = (0.0, 0.0, 500.0)
    cx: float | None = None
    cy: float | None = None

    @property
    def principal_point(self) -> tuple[float, float]:
        return (((self.width - 1) / 2 if self.cx is None else self.cx),
                ((self.height - 1) / 2 if self.cy is None else self.cy))

    @property
    def rotation(self) -> np.ndarray:
        return rotation(self.yaw, self.pitch, self.roll)

    def to_camera(self, points3d: np.ndarray) -> np.ndarray:
        """Face-frame points (N, 3) in the camera frame."""
        return np.asarray(points3d, dtype=np.float64) @ self.rotation.T + np.asarray(self.translation, np.float64)


def project(points3d: np.ndarray, camera: Camera) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (N, 2) of face-frame points and their depths (N,) along the optical axis."""
    p = camera.to_camera(points3d)
    cx, cy = camera.principal_point
    return np.stack([camera.focal * p[:, 0] / p[:, 2] + cx, camera.focal * p[:, 1] / p[:, 2] + cy], 1), p[:, 2]


# --- rasterisation ---------------------------------------------------------------------------------------------

_NEAR = 1e-6  # triangles with a corner closer than this (scan units) are not drawn
_CHUNK = 1 << 22  # candidate samples per vectorised step


@dataclass(frozen=True, eq=False)
class Fragments:
    """What a ``shape = (height * s, width * s)`` sample grid sees: for each of the K covered samples
    (``covered``: flat row-major indices) the nearest triangle ``tri``, its perspective-correct barycentric
    weights ``weights`` (K, 3) and the depth ``depth`` along the optical axis."""

    shape: tuple[int, int]
    covered: np.ndarray
    tri: np.ndarray
    weights: np.ndarray
    depth: np.ndarray
    front: np.ndarray  # (F,) bool: the triangle faces the camera


def _screen(scan: Scan, camera: Camera, s: int):
    """Camera-frame vertices and their projections on the s-times grid, relative to its principal point
    (relative coordinates make a principal-point shift of whole pixels shift the image bit-exactly)."""
    p = camera.to_camera(scan.vertices)
    cx, cy = camera.principal_point
    f = camera.focal * s
    rel = np.stack([f * p[:, 0] / p[:, 2], f * p[:, 1] / p[:, 2]], 1)
    return p, rel, ((cx + 0.5) * s - 0.5, (cy + 0.5) * s - 0.5)


def _edge_weights(a, b, c, px, py):
    """Screen-space barycentric weights of points (px, py) in triangles (a, b, c) (arrays of (.., 2))."""
    area = (b[..., 0] - a[..., 0]) * (c[..., 1] - a[..., 1]) - (b[..., 1] - a[..., 1]) * (c[..., 0] - a[..., 0])
    w0 = (b[..., 0] - px) * (c[..., 1] - py) - (b[..., 1] - py) * (c[..., 0] - px)
    w1 = (c[..., 0] - px) * (a[..., 1] - py) - (c[..., 1] - py) * (a[..., 0] - px)
    with np.errstate(divide="ignore", invalid="ignore"):
        return w0 / area, w1 / area, 1.0 - w0 / area - w1 / area


def rasterize(scan: Scan, camera: Camera, supersample: int = 1) -> Fragments:
    """Z-buffered coverage of the scan on the camera's pixel grid refined ``supersample`` times (sample
    (i, j) of the fine grid is at pixel ((j + 0.5) / s - 0.5, (i + 0.5) / s - 0.5)). Vectorised:
    triangles are bucketed by bounding-box size and each bucket tests all its candidate samples at once
    with edge functions; both sides of a triangle are drawn (``front`` says which one is seen)."""
    s = int(supersample)
    if s < 1:
        raise ValueError(f"supersample must be >= 1, got {supersample}")
    H, W = camera.height * s, camera.width * s
    p, rel, (cx, cy) = _screen(scan, camera, s)
    faces = scan.faces
    normal = np.cross(p[faces[:, 1]] - p[faces[:, 0]], p[faces[:, 2]] - p[faces[:, 0]])
    front = np.einsum("ij,ij->i", normal, p[faces].mean(1)) < 0  # seen from outside (outward normals)
    ok = (p[:, 2] > _NEAR)[faces].all(1)
    xy = rel[faces] + np.array([cx, cy])  # absolute fine-grid coordinates, only to choose candidates
    lo = np.floor(xy.min(1)).astype(np.int64)
    hi = np.ceil(xy.max(1)).astype(np.int64)
    lo, hi = np.maximum(lo, 0), np.minimum(hi, [W - 1, H - 1])
    ok &= (lo <= hi).all(1)
    size = np.where(ok, (hi - lo + 1).max(1), 0)
    pix_l, depth_l, tri_l, w_l = [], [], [], []
    inv_z = 1.0 / p[:, 2]
    k = 1
    while (size > 0).any():
        bucket = np.flatnonzero((size > 0) & (size <= k))
        size[bucket] = 0
        oy, ox = np.divmod(np.arange(k * k), k)
        step = max(1, _CHUNK // (k * k))
        for start in range(0, len(bucket), step):
            t = bucket[start:start + step]
            X = lo[t, 0][:, None] + ox  # (T, k*k) absolute sample columns
            Y = lo[t, 1][:, None] + oy
            inside = (X <= hi[t, 0][:, None]) & (Y <= hi[t, 1][:, None])
            tri = rel[faces[t]][:, None]  # (T, 1, 3, 2)
            b0, b1, b2 = _edge_weights(tri[..., 0, :], tri[..., 1, :], tri[..., 2, :], X - cx, Y - cy)
            inside &= (b0 >= 0) & (b1 >= 0) & (b2 >= 0)
            ti, si = np.nonzero(inside)
            bary = np.stack([b0[ti, si], b1[ti, si], b2[ti, si]], 1)
            iz = (bary * inv_z[faces[t[ti]]]).sum(1)  # 1/z is affine in screen space
            pix_l.append(Y[ti, si] * W + X[ti, si])
            depth_l.append(1.0 / iz)
            tri_l.append(t[ti])
            w_l.append(bary * inv_z[faces[t[ti]]] / iz[:, None])  # perspective-correct
        k *= 2
    pix = np.concatenate(pix_l) if pix_l else np.zeros(0, np.int64)
    depth = np.concatenate(depth_l) if depth_l else np.zeros(0)
    tri_all = np.concatenate(tri_l) if tri_l else np.zeros(0, np.int64)
    weights = np.concatenate(w_l) if w_l else np.zeros((0, 3))
    order = np.lexsort((tri_all, depth, pix))  # per sample: nearest first, ties to the lower triangle
    pix, first = pix[order], np.ones(len(order), bool)
    first[1:] = pix[1:] != pix[:-1]
    keep = order[first]
    return Fragments((H, W), pix[first], tri_all[keep], weights[keep], depth[keep], front)


def _bilinear(texture: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Texture colours (N, 3) float at OBJ uv (v = 0: bottom row), texel centres at (i + 0.5) / size."""
    h, w = texture.shape[:2]
    x = np.clip(uv[:, 0] * w - 0.5, 0, w - 1)
    y = np.clip((1.0 - uv[:, 1]) * h - 0.5, 0, h - 1)
    x0, y0 = np.minimum(x.astype(np.int64), w - 2), np.minimum(y.astype(np.int64), h - 2)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    t = texture
    top = t[y0, x0] * (1 - fx) + t[y0, x0 + 1] * fx
    bottom = t[y0 + 1, x0] * (1 - fx) + t[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


DEFAULT_LIGHT = (-0.3, -0.4, -1.0)  # camera frame, towards the light: from the upper left, behind the camera


def render(scan: Scan, camera: Camera, *, supersample: int = 2, light: tuple[float, float, float] = DEFAULT_LIGHT,
           ambient: float = 0.4, background: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The scan seen by ``camera``: RGB uint8 (height, width, 3) and a coverage mask (height, width), True
    where any of the pixel's ``supersample``² samples sees the scan (False: pure background).

    Colour at a sample: bilinear texture at the perspective-correct uv, times ``ambient + (1 - ambient) *
    max(0, n . l)`` (Lambertian, interpolated vertex normals, turned to face the camera where the inside of
    the mask is seen; ``light`` is a direction towards the light in the camera frame). Pixels are the box
    average of their samples over ``background`` (an (height, width, 3) array) or plain grey."""
    s = int(supersample)
    frags = rasterize(scan, camera, s)
    H, W = camera.height, camera.width
    tri, wts = frags.tri, frags.weights
    uv = np.einsum("kj,kjc->kc", wts, scan.uv[scan.face_uv[tri]])
    colour = _bilinear(scan.texture, uv)
    rot = camera.rotation
    n = np.einsum("kj,kjc->kc", wts, scan.normals[scan.faces[tri]]) @ rot.T
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    n[~frags.front[tri]] *= -1
    lv = np.asarray(light, dtype=np.float64)
    lv = lv / np.linalg.norm(lv)
    colour *= (ambient + (1.0 - ambient) * np.maximum(n @ lv, 0.0))[:, None]
    row, col = np.divmod(frags.covered, W * s)
    pixel = (row // s) * W + col // s
    count = np.bincount(pixel, minlength=H * W).astype(np.float64)
    total = np.stack([np.bincount(pixel, colour[:, c], minlength=H * W) for c in range(3)], 1)
    if background is None:
        bg = np.full((H * W, 3), float(GREY))
    else:
        bg = np.asarray(background, dtype=np.float64)
        if bg.shape != (H, W, 3):
            raise ValueError(f"background must be ({H}, {W}, 3), got {bg.shape}")
        bg = bg.reshape(-1, 3)
    image = (total + bg * (s * s - count)[:, None]) / (s * s)
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8).reshape(H, W, 3)
    return image, (count > 0).reshape(H, W)


def surface_depth(scan: Scan, camera: Camera, points2d: np.ndarray) -> np.ndarray:
    """Depth of the nearest surface seen through each pixel position (N, 2) (exact, not at pixel
    centres: the z-buffer evaluated at the point); inf where the ray misses the scan."""
    p, rel, (cx, cy) = _screen(scan, camera, 1)
    tri = rel[scan.faces][None]  # (1, F, 3, 2)
    pts = np.asarray(points2d, dtype=np.float64)
    px, py = pts[:, 0:1] - cx, pts[:, 1:2] - cy  # relative to the principal point, as rasterize
    b0, b1, b2 = _edge_weights(tri[..., 0, :], tri[..., 1, :], tri[..., 2, :], px, py)
    inside = (b0 >= 0) & (b1 >= 0) & (b2 >= 0) & (p[:, 2] > _NEAR)[scan.faces].all(1)
    inv_z = 1.0 / p[:, 2]
    iz = b0 * inv_z[scan.faces[:, 0]] + b1 * inv_z[scan.faces[:, 1]] + b2 * inv_z[scan.faces[:, 2]]
    iz = np.where(inside, iz, 0.0).max(1)
    with np.errstate(divide="ignore"):
        return 1.0 / iz


def visible_landmarks(scan: Scan, camera: Camera, tolerance: float = 1.0) -> np.ndarray:
    """(68,) bool: the landmark is not hidden by the scan, i.e. the nearest surface on its camera ray is
    not more than ``tolerance`` (scan units, ~mm) in front of it. The points lie within 0.15 mm of the
    mesh, which along a ray grazing the surface at angle a grows to 0.15 / cos(a): 1 mm covers a < 80
    degrees; a point hidden behind the nose or the far cheek is hidden by tens of millimetres."""
    xy, z = project(scan.landmarks3d, camera)
    return surface_depth(scan, camera, xy) >= z - tolerance


def backface_fraction(scan: Scan, camera: Camera, supersample: int = 1) -> float:
    """Share of the scan's covered samples that see the inside of the mask (0 where the render is sound)."""
    frags = rasterize(scan, camera, supersample)
    return float((~frags.front[frags.tri]).mean()) if len(frags.tri) else 0.0


def frame_face(size_px: float, yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0, *,
               image_size: tuple[int, int] = (256, 256), measure: str = "iod", fov_deg: float = 50.0,
               scan: Scan | None = None) -> Camera:
    """A camera (horizontal field of view ``fov_deg``, principal point at the image centre) that shows the
    face with its landmark box centred in an image of ``image_size`` (width, height).

    ``size_px`` fixes the distance, at the frontal pose, so that the face measures that many pixels:
    ``measure="iod"``: the outer eye corners' distance (iBUG 36-45, 300-W's inter-ocular normaliser);
    ``"box"``: the larger side of the 68 landmarks' box. The same distance is kept at every pose (a
    turned face is smaller in the image, as a real one is); only the translation across the optical axis
    moves to centre the box."""
    scan = load_scan() if scan is None else scan
    width, height = image_size
    focal = (width / 2) / math.tan(math.radians(fov_deg) / 2)
    lm = scan.landmarks3d

    def size(cam: Camera) -> float:
        xy, _ = project(lm, cam)
        if measure == "iod":
            return float(np.linalg.norm(xy[45] - xy[36]))
        if measure == "box":
            return float((xy.max(0) - xy.min(0)).max())
        raise ValueError(f"measure must be 'iod' or 'box', got {measure!r}")

    def centred(cam: Camera) -> Camera:
        for _ in range(8):  # perspective: a few fixed-point steps put the box centre within 1e-6 px
            xy, z = project(lm, cam)
            off = (xy.max(0) + xy.min(0)) / 2 - np.array(cam.principal_point)
            dist = cam.translation[2]
            t = (cam.translation[0] - off[0] * dist / focal, cam.translation[1] - off[1] * dist / focal, dist)
            cam = Camera(width, height, focal, cam.yaw, cam.pitch, cam.roll, t)
        return cam

    cam = Camera(width, height, focal, translation=(0.0, 0.0, 500.0))
    for _ in range(8):
        cam = centred(cam)
        d = cam.translation[2] * size(cam) / size_px
        cam = Camera(width, height, focal, translation=(cam.translation[0], cam.translation[1], d))
    return centred(Camera(width, height, focal, yaw, pitch, roll, cam.translation))
