"""Image reading and the affine crops adapters use in ``preprocess``.

Crops are described by a 2x3 matrix mapping *output* pixel coordinates to
*image* pixel coordinates (both in the pixel-centre convention of
:mod:`facebench.types`), so mapping a model's output back to the image is one
matrix product with the same matrix.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facebench.errors import FacebenchError


class ImageError(FacebenchError, ValueError):
    """An image file cannot be read; the message names the file."""


# The most pixels an image may have (width x height): 100 Mpx decode to 300 MB of RGB. A larger one,
# usually a decompression bomb (a small file that decodes to gigabytes), is an ImageError naming it.
MAX_IMAGE_PIXELS = 100_000_000


def _open_checked(path: str | Path):
    """PIL's image for ``path`` (header read, pixels not yet decoded), refused beyond ``MAX_IMAGE_PIXELS``."""
    import warnings

    from PIL import Image

    with warnings.catch_warnings():
        # PIL warns from MAX_IMAGE_PIXELS and raises from twice that; facebench decides itself, below
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(path)
        except Image.DecompressionBombError as exc:
            raise ImageError(f"cannot read image {path}: {exc}") from None
    width, height = im.size
    if width * height > MAX_IMAGE_PIXELS:
        im.close()
        raise ImageError(f"cannot read image {path}: {width}x{height} is {width * height / 1e6:.0f} Mpx, more than "
                         f"the {MAX_IMAGE_PIXELS / 1e6:.0f} Mpx facebench decodes (facebench.imaging.MAX_IMAGE_PIXELS; "
                         "a decompression bomb?)")
    return im


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as RGB uint8 (H, W, 3), whatever its mode (16-bit grey scaled by 1/257); refused
    beyond ``MAX_IMAGE_PIXELS``. Pixels are in the file's stored order: an EXIF orientation tag is not
    applied, because benchmark annotations are given in stored pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with _open_checked(path) as im:
            if im.mode.startswith("I"):  # 16-bit grey (PIL's I;16 / I): RGB conversion would clip it to white
                grey = np.clip(np.round(np.asarray(im, dtype=np.float64) / 257.0), 0, 255).astype(np.uint8)
                return np.repeat(grey[..., None], 3, axis=2)
            return np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError, MemoryError) as exc:
        if isinstance(exc, ImageError):
            raise
        raise ImageError(f"cannot read image {path}: {type(exc).__name__}: {exc}") from exc


def reduce_image(image: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray | None]:
    """``image`` reduced by ``scale`` (< 1; PIL's box filter, antialiased, sides rounded and at least 1 px)
    and the (x, y) scales of the rounded size; ``(image, None)`` when ``scale >= 1``. For detectors that
    cap their working resolution: :func:`from_reduced` maps their coordinates back."""
    if scale >= 1.0:
        return image, None
    from PIL import Image

    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    reduced = np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize(size, Image.Resampling.BOX))
    return reduced, np.array([size[0] / image.shape[1], size[1] / image.shape[0]])


def from_reduced(coords: np.ndarray, scales: np.ndarray | None) -> np.ndarray:
    """Coordinates (..., 2k: x, y pairs) in a reduced image back to the original's pixel-centre frame:
    ``(x + 0.5) / scale - 0.5``."""
    coords = np.asarray(coords, dtype=np.float64)
    if scales is None:
        return coords
    tiled = np.tile(scales, coords.shape[-1] // 2)
    return (coords + 0.5) / tiled - 0.5


def image_size(sample) -> tuple[int, int]:
    """(width, height) of a sample's image without decoding it where it can: its attributes, the image's own
    ``pixel_size`` (rendered and in-memory images), or the file header; else decoded."""
    size = sample.attributes.get("image_size") or getattr(sample.image, "pixel_size", None)
    if size is not None:
        return int(size[0]), int(size[1])
    path = getattr(sample.image, "path", None)
    if path is not None:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as im:
                return im.size
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
            raise ImageError(f"cannot read image {path}: {exc}") from exc
    height, width = sample.image().shape[:2]
    return width, height


class ImageFile:
    """A lazily read image file, usable as ``Sample.image``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __call__(self) -> np.ndarray:
        return read_image(self.path)

    def identity(self) -> str:
        """The file's size and modification time (ns): new bytes give a new identity, so a dataset's
        fingerprint changes when an image is replaced. The path is left out: two copies of a dataset
        differ by it, and ``Sample.image_key`` already names the image within its dataset."""
        try:
            st = self.path.stat()
        except OSError:
            return "missing"
        return f"{st.st_size}:{st.st_mtime_ns}"

    def __repr__(self) -> str:
        return f"ImageFile({str(self.path)!r})"


def image_identity(image) -> str:
    """What identifies an image's bytes on disk: :meth:`ImageFile.identity`, for an image rendered from
    sources (``layers`` of ``(source, ...)``) its sources' identities, and '' for one held in memory."""
    identity = getattr(image, "identity", None)
    if callable(identity):
        return str(identity())
    layers = getattr(image, "layers", None)
    if layers:
        return "+".join(image_identity(layer[0]) for layer in layers)
    return ""


def letterbox_matrix(width: int, height: int, out_size: int) -> np.ndarray:
    """Output->image affine that fits the whole image, centred, in a square.

    The square has the side of the image's longer edge; the rest is padding
    (MediaPipe's ``keep_aspect_ratio`` image-to-tensor conversion).
    """
    side = max(width, height)
    scale = side / out_size
    # output pixel u covers [u-0.5, u+0.5]; its centre maps to image x
    offset_x = -0.5 + scale * 0.5 - (side - width) / 2
    offset_y = -0.5 + scale * 0.5 - (side - height) / 2
    return np.array([[scale, 0.0, offset_x], [0.0, scale, offset_y]])


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map (N, 2) points through a 2x3 affine matrix."""
    pts = np.asarray(points, dtype=np.float64)
    return pts @ matrix[:, :2].T + matrix[:, 2]


def corner_sampling(matrix: np.ndarray) -> np.ndarray:
    """The sampling matrix MediaPipe's OpenCV crops use for the same crop.

    ``matrix`` maps output pixel centres to image pixel centres. MediaPipe
    builds its crop from the rectangle's *corner* coordinates and hands them
    to ``cv::warpPerspective``, which reads them as pixel *centres*: output
    pixel u samples the image where the exact mapping puts u - 0.5, plus half
    an image pixel. Adapters that reproduce MediaPipe's numbers sample with
    this matrix and still map outputs back with ``matrix``.
    """
    out = np.array(matrix, dtype=np.float64)
    out[:, 2] += 0.5 - out[:, :2] @ np.array([0.5, 0.5])
    return out


def warp_affine(image: np.ndarray, matrix: np.ndarray, out_size: tuple[int, int],
                fill: float = 0.0, border: str = "constant") -> np.ndarray:
    """Bilinear resampling of ``image`` at the output grid mapped by ``matrix``.

    Returns float32 (out_h, out_w, C) in the image's value scale. Samples
    outside the image take ``fill`` (``border="constant"``) or the nearest
    edge pixel (``border="replicate"``, OpenCV's BORDER_REPLICATE).
    """
    if border not in ("constant", "replicate"):
        raise ValueError(f"border must be 'constant' or 'replicate', not {border!r}")
    out_h, out_w = out_size
    img = image if image.ndim == 3 else image[:, :, None]
    h, w = img.shape[:2]
    us, vs = np.meshgrid(np.arange(out_w, dtype=np.float64), np.arange(out_h, dtype=np.float64))
    xs = matrix[0, 0] * us + matrix[0, 1] * vs + matrix[0, 2]
    ys = matrix[1, 0] * us + matrix[1, 1] * vs + matrix[1, 2]
    x0 = np.floor(xs).astype(np.int64)
    y0 = np.floor(ys).astype(np.int64)
    fx = (xs - x0).astype(np.float32)[..., None]
    fy = (ys - y0).astype(np.float32)[..., None]

    # gather the four taps straight from the image; taps outside it read ``fill``
    def tap(yy, xx):
        if border == "replicate":
            return img[np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)].astype(np.float32)
        inside = ((xx >= 0) & (xx < w) & (yy >= 0) & (yy < h))[..., None]
        values = img[np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)].astype(np.float32)
        return np.where(inside, values, np.float32(fill))

    top = tap(y0, x0) * (1 - fx) + tap(y0, x0 + 1) * fx
    bottom = tap(y0 + 1, x0) * (1 - fx) + tap(y0 + 1, x0 + 1) * fx
    return top * (1 - fy) + bottom * fy
