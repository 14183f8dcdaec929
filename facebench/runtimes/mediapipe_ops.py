"""MediaPipe's three custom TFLite ops, in numpy, registered with tflite-runtime.

``face_landmark_with_attention.tflite`` (Attention Mesh) crops its own
regions of interest inside the graph with three ops stock TFLite lacks:

``Landmarks2TransformMatrix`` (v2)
    From the coarse mesh, a 4x4 matrix mapping a ``output_height x
    output_width`` crop to feature-map coordinates: rotation from the line
    between two landmarks (minus ``target_rotation_radians``), centre and size
    from the bounding box of a landmark subset in the rotated frame, scaled by
    ``scale_x``/``scale_y``.
``TransformTensorBilinear`` (v2)
    Bilinear resampling of a feature map through that matrix, with the
    half-pixel ("align corners") correction; samples whose position falls
    outside ``[0, W-1] x [0, H-1]`` are zero.
``TransformLandmarks`` (v2)
    The region's landmarks mapped back through the matrix (x, y; z kept).

Definitions follow MediaPipe's reference kernels
(``mediapipe/util/tflite/operations``); options are read from each node's
flexbuffer custom options. The kernels are plain numpy functions; the glue
below hands them to the interpreter through ``InterpreterWithCustomOps``: a
registerer receives the op resolver's address and calls the exported
``tflite::MutableOpResolver::AddCustom`` with a ``TfLiteRegistration`` whose
callbacks are ctypes functions. The C structs are declared for the pinned
tflite-runtime 2.14; every tensor an op touches must have type float32 and a
byte size matching its dims, so a layout mismatch is an error, not a wrong
answer.
"""

from __future__ import annotations

import ctypes
import itertools
import math
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

# ---------------------------------------------------------------- the kernels


def landmarks_to_transform_matrix(landmarks: np.ndarray, options: dict) -> np.ndarray:
    """(1, N, 3) landmarks -> (1, 4, 4) crop-to-feature-map matrix."""
    pts = np.asarray(landmarks, dtype=np.float64).reshape(-1, 3)
    lx, ly = pts[options["left_rotation_idx"], :2]
    rx, ry = pts[options["right_rotation_idx"], :2]
    rotation = options.get("target_rotation_radians", 0.0) - math.atan2(ry - ly, rx - lx)
    cos, sin = math.cos(rotation), math.sin(rotation)
    subset = pts[options["subset_idxs"], :2]
    # the subset's box in the frame rotated by ``rotation``
    xr = subset[:, 0] * cos - subset[:, 1] * sin
    yr = subset[:, 0] * sin + subset[:, 1] * cos
    x_lo, x_hi, y_lo, y_hi = xr.min(), xr.max(), yr.min(), yr.max()
    mx, my = (x_lo + x_hi) / 2, (y_lo + y_hi) / 2
    cx, cy = mx * cos + my * sin, -mx * sin + my * cos  # the box centre rotated back
    out_w, out_h = options["output_width"], options["output_height"]
    sx = options["scale_x"] * (x_hi - x_lo) / out_w
    sy = options["scale_y"] * (y_hi - y_lo) / out_h
    # shift(centre) . rotate(-rotation) . scale(sx, sy) . shift(-out/2)
    a, b, c, d = cos * sx, sin * sy, -sin * sx, cos * sy
    matrix = np.array([[a, b, 0.0, cx - a * out_w / 2 - b * out_h / 2],
                       [c, d, 0.0, cy - c * out_w / 2 - d * out_h / 2],
                       [0.0, 0.0, 1.0, 0.0],
                       [0.0, 0.0, 0.0, 1.0]], dtype=np.float32)
    return matrix[None]


def transform_tensor_bilinear(data: np.ndarray, matrix: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """(1, H, W, C) feature map sampled at a (1, 4, 4) matrix's grid -> (1, out_h, out_w, C)."""
    fmap = np.asarray(data, dtype=np.float32)[0]
    h, w, c = fmap.shape
    m = np.asarray(matrix, dtype=np.float64).reshape(4, 4)
    # half-pixel correction: sample pixel centres, not corners
    tx = m[0, 3] + 0.5 * (m[0, 0] + m[0, 1]) - 0.5
    ty = m[1, 3] + 0.5 * (m[1, 0] + m[1, 1]) - 0.5
    us, vs = np.meshgrid(np.arange(out_w, dtype=np.float64), np.arange(out_h, dtype=np.float64))
    xs = (m[0, 0] * us + m[0, 1] * vs + tx).ravel()
    ys = (m[1, 0] * us + m[1, 1] * vs + ty).ravel()
    inside = (xs >= 0) & (xs <= w - 1) & (ys >= 0) & (ys <= h - 1)
    x0 = np.clip(np.floor(xs), 0, w - 1).astype(np.int64)
    y0 = np.clip(np.floor(ys), 0, h - 1).astype(np.int64)
    fx = (xs - x0).astype(np.float32)[:, None]
    fy = (ys - y0).astype(np.float32)[:, None]
    # the far neighbour only counts with a positive weight, so clamping it to the edge is exact
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    taps = np.stack([y0 * w + x0, y0 * w + x1, y1 * w + x0, y1 * w + x1], axis=1)
    weights = np.concatenate([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], axis=1)
    weights[~inside] = 0.0
    out = np.einsum("pk,pkc->pc", weights, fmap.reshape(-1, c)[taps])
    return out.reshape(1, out_h, out_w, c)


def transform_landmarks(landmarks: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(1, N, D) landmarks in crop coordinates -> feature-map coordinates (z kept)."""
    lm = np.asarray(landmarks, dtype=np.float32)
    m = np.asarray(matrix, dtype=np.float64).reshape(4, 4)
    out = lm.copy()
    xy = lm[..., :2].astype(np.float64)
    out[..., 0] = xy[..., 0] * m[0, 0] + xy[..., 1] * m[0, 1] + m[0, 3]
    out[..., 1] = xy[..., 0] * m[1, 0] + xy[..., 1] * m[1, 1] + m[1, 3]
    return out


# ------------------------------------------------------- the TFLite C structs

_K_OK, _K_ERROR = 0, 1
_FLOAT32 = 1  # kTfLiteFloat32


class _IntArray(ctypes.Structure):
    _fields_ = [("size", ctypes.c_int)]  # followed by ``size`` ints


class _Tensor(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("data", ctypes.c_void_p),
        ("dims", ctypes.POINTER(_IntArray)),
        ("scale", ctypes.c_float),
        ("zero_point", ctypes.c_int32),
        ("allocation_type", ctypes.c_int),
        ("bytes", ctypes.c_size_t),
        ("allocation", ctypes.c_void_p),
        ("name", ctypes.c_char_p),
        ("delegate", ctypes.c_void_p),
        ("buffer_handle", ctypes.c_int),
        ("data_is_stale", ctypes.c_bool),
        ("is_variable", ctypes.c_bool),
        ("quantization_type", ctypes.c_int),
        ("quantization_params", ctypes.c_void_p),
        ("sparsity", ctypes.c_void_p),
        ("dims_signature", ctypes.c_void_p),
    ]


_RESIZE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)
_REPORT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p)


class _Context(ctypes.Structure):
    _fields_ = [
        ("tensors_size", ctypes.c_size_t),
        ("get_execution_plan", ctypes.c_void_p),
        ("tensors", ctypes.c_void_p),
        ("impl", ctypes.c_void_p),
        ("resize_tensor", _RESIZE),
        ("report_error", _REPORT),
    ]


class _Node(ctypes.Structure):
    _fields_ = [
        ("inputs", ctypes.POINTER(_IntArray)),
        ("outputs", ctypes.POINTER(_IntArray)),
        ("intermediates", ctypes.c_void_p),
        ("temporaries", ctypes.c_void_p),
        ("user_data", ctypes.c_void_p),
        ("builtin_data", ctypes.c_void_p),
        ("custom_initial_data", ctypes.c_void_p),
        ("custom_initial_data_size", ctypes.c_int),
    ]


_INIT = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
_FREE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)
_STEP = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)


class _Registration(ctypes.Structure):
    _fields_ = [
        ("init", _INIT),
        ("free", _FREE),
        ("prepare", _STEP),
        ("invoke", _STEP),
        ("profiling_string", ctypes.c_void_p),
        ("builtin_code", ctypes.c_int32),
        ("custom_name", ctypes.c_char_p),
        ("version", ctypes.c_int),
        # later fields (external registration, async kernel, in-place flags) stay zero
        ("reserved", ctypes.c_void_p * 8),
    ]


_CUSTOM = 32  # BuiltinOperator_CUSTOM


def _ints(array_ptr) -> list[int]:
    size = array_ptr.contents.size
    return list((ctypes.c_int * (size + 1)).from_address(ctypes.addressof(array_ptr.contents))[1:])


def _library():
    from tflite_runtime import interpreter as tfl

    return ctypes.CDLL(tfl._interpreter_wrapper.__file__)


# ---------------------------------------------------------- op definitions


# name -> (version, number of inputs, output shape from the input shapes (None: keep the
# model's), kernel(inputs, options, output shape) -> output)
OPS: dict[str, tuple[int, int, Callable | None, Callable]] = {
    "Landmarks2TransformMatrix": (
        2, 1, lambda shapes: (1, 4, 4),
        lambda inputs, options, shape: landmarks_to_transform_matrix(inputs[0], options)),
    "TransformTensorBilinear": (
        2, 2, None,
        lambda inputs, options, shape: transform_tensor_bilinear(inputs[0], inputs[1], shape[1], shape[2])),
    "TransformLandmarks": (
        2, 2, lambda shapes: shapes[0],
        lambda inputs, options, shape: transform_landmarks(inputs[0], inputs[1])),
}


def parse_options(buffer: bytes) -> dict:
    """A node's flexbuffer custom options as a dict (empty when there are none)."""
    if not buffer:
        return {}
    from flatbuffers import flexbuffers

    value = flexbuffers.Loads(buffer)
    if not isinstance(value, dict):
        raise ValueError(f"custom options are a {type(value).__name__}, not a map")  # noqa: TRY004 - malformed option data
    return value


class MediaPipeOps:
    """A registerer for ``InterpreterWithCustomOps``; also times each op.

    Keep the instance alive as long as the interpreter: it owns the callback
    objects the interpreter calls. ``seconds[name]`` and ``calls[name]``
    accumulate the time spent in each op; ``last_error`` keeps the last failure.
    """

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.last_error: str | None = None
        self._options: dict[int, dict] = {}
        # node address -> (input arrays, output array, options), mapped on the first
        # invoke after each prepare (tensors move when the interpreter reallocates)
        self._views: dict[int, tuple] = {}
        self._handles = itertools.count(1)
        self._keep: list[Any] = []
        self._lib = None

    def reset_timing(self) -> None:
        self.seconds.clear()
        self.calls.clear()

    # -- registration

    def __call__(self, resolver_address: int) -> None:
        self._lib = _library()
        add_custom = self._lib["_ZN6tflite17MutableOpResolver9AddCustomEPKcPK18TfLiteRegistrationi"]
        add_custom.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int]
        add_custom.restype = None
        self._int_array_create = self._lib["TfLiteIntArrayCreate"]
        self._int_array_create.argtypes = [ctypes.c_int]
        self._int_array_create.restype = ctypes.c_void_p
        for name, (version, *_) in OPS.items():
            callbacks = (
                _INIT(self._init),
                _FREE(self._free),
                _STEP(lambda ctx, node, n=name: self._guard(n, ctx, self._prepare, ctx, node, n)),
                _STEP(lambda ctx, node, n=name: self._guard(n, ctx, self._invoke, ctx, node, n)),
            )
            encoded = name.encode()
            registration = _Registration(*callbacks, None, _CUSTOM, encoded, version)
            self._keep.append((callbacks, encoded, registration))
            add_custom(resolver_address, encoded, ctypes.addressof(registration), version)

    # -- callbacks

    def _init(self, context, buffer, length):
        handle = next(self._handles)
        try:
            self._options[handle] = parse_options(ctypes.string_at(buffer, length) if length else b"")
        except Exception as exc:  # noqa: BLE001 - reported when the node is prepared
            self._options[handle] = {"__error__": f"unreadable custom options: {exc}"}
        return handle

    def _free(self, context, handle):
        self._options.pop(handle or 0, None)

    def _guard(self, name, context, step, *args):
        try:
            return step(*args)
        except Exception as exc:  # noqa: BLE001 - nothing may raise through a C callback
            self.last_error = f"{name}: {type(exc).__name__}: {exc}"
            ctx = _Context.from_address(context)
            ctx.report_error(context, b"%s", self.last_error.encode())
            return _K_ERROR

    def _tensor(self, ctx: _Context, index: int) -> _Tensor:
        return _Tensor.from_address(ctx.tensors + index * ctypes.sizeof(_Tensor))

    @staticmethod
    def _array(tensor: _Tensor) -> np.ndarray:
        shape = tuple(_ints(tensor.dims))
        count = int(np.prod(shape))
        if tensor.type != _FLOAT32:
            raise TypeError(f"tensor {tensor.name!r} is not float32")
        if count * 4 != tensor.bytes:
            raise ValueError(f"tensor {tensor.name!r}: {tensor.bytes} bytes for shape {shape}: struct layout mismatch")
        return np.ctypeslib.as_array((ctypes.c_float * count).from_address(tensor.data)).reshape(shape)

    def _node(self, context, node_ptr, name):
        ctx = _Context.from_address(context)
        node = _Node.from_address(node_ptr)
        options = self._options.get(node.user_data or 0, {})
        if "__error__" in options:
            raise ValueError(options["__error__"])
        inputs = [self._tensor(ctx, i) for i in _ints(node.inputs)]
        outputs = [self._tensor(ctx, i) for i in _ints(node.outputs)]
        if len(inputs) != OPS[name][1] or len(outputs) != 1:
            raise ValueError(f"expects {OPS[name][1]} input(s) and 1 output; "
                             f"the node has {len(inputs)} and {len(outputs)}")
        return ctx, options, inputs, outputs[0]

    def _prepare(self, context, node_ptr, name):
        ctx, _options, inputs, output = self._node(context, node_ptr, name)
        for t in (*inputs, output):
            if t.type != _FLOAT32:
                raise TypeError(f"tensor {t.name!r} has type {t.type}, expected float32")
        self._views.pop(node_ptr, None)
        out_shape = OPS[name][2]
        if out_shape is not None:
            shape = out_shape([tuple(_ints(t.dims)) for t in inputs])
            dims = self._int_array_create(len(shape))
            (ctypes.c_int * len(shape)).from_address(dims + ctypes.sizeof(ctypes.c_int))[:] = list(shape)
            return ctx.resize_tensor(context, ctypes.addressof(output), dims)
        return _K_OK

    def _invoke(self, context, node_ptr, name):
        start = time.perf_counter()
        views = self._views.get(node_ptr)
        if views is None:  # first run after (re)allocation: map the tensors once
            _ctx, options, inputs, output = self._node(context, node_ptr, name)
            views = ([self._array(t) for t in inputs], self._array(output), options)
            self._views[node_ptr] = views
        arrays, target, options = views
        target[...] = OPS[name][3](arrays, options, target.shape).reshape(target.shape)
        self.seconds[name] += time.perf_counter() - start
        self.calls[name] += 1
        return _K_OK


def make_interpreter(path: str | Path, threads: int = 1, default_delegates: bool = True):
    """A tflite-runtime interpreter with MediaPipe's ops; returns (interpreter, ops).

    ``default_delegates=False`` keeps XNNPACK out, so every op stays visible
    (for counting MACs from the graph).
    """
    import tflite_runtime
    from tflite_runtime import interpreter as tfl

    if not tflite_runtime.__version__.startswith("2.14"):
        raise RuntimeError(
            "facebench's MediaPipe custom ops are declared for tflite-runtime 2.14, "
            f"found {tflite_runtime.__version__}")
    ops = MediaPipeOps()
    kind = tfl.OpResolverType.AUTO if default_delegates else tfl.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interp = tfl.InterpreterWithCustomOps(custom_op_registerers=[ops], model_path=str(path), num_threads=threads,
                                          experimental_op_resolver_type=kind)
    return interp, ops
