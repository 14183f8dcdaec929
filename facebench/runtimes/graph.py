"""Define a network once; get its ONNX graph and a numpy evaluation of it.

The MuSiCa and PRNet baselines are written against :class:`Graph`: every op
call appends an ONNX node *and* computes the op in numpy on the example
input. The exported file is checked against that numpy result (onnxruntime
must agree), the numpy ops are checked against direct loops in the tests,
and :func:`count_onnx_macs` counts multiply-accumulates from the exported
file alone, to cross-check the analytic counts on the model cards.

Layout is NCHW, float32; convolution weights are (out, in, kh, kw), transposed
convolution weights (in, out, kh, kw), as in ONNX.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

OPSET = 17


@dataclass
class Tensor:
    name: str
    value: np.ndarray


@dataclass
class Graph:
    name: str
    nodes: list = field(default_factory=list)
    initializers: dict[str, np.ndarray] = field(default_factory=dict)
    inputs: list[Tensor] = field(default_factory=list)
    outputs: list[Tensor] = field(default_factory=list)
    _count: int = 0

    def _name(self, op: str) -> str:
        self._count += 1
        return f"{op.lower()}_{self._count}"

    def input(self, name: str, value: np.ndarray) -> Tensor:
        t = Tensor(name, np.asarray(value))
        self.inputs.append(t)
        return t

    def const(self, value: np.ndarray, name: str | None = None) -> Tensor:
        name = name or self._name("const")
        self.initializers[name] = np.asarray(value)
        return Tensor(name, np.asarray(value))

    def output(self, t: Tensor, name: str) -> Tensor:
        out = self._node("Identity", [t], t.value, name=name)
        self.outputs.append(out)
        return out

    def _node(self, op: str, inputs: list[Tensor], value: np.ndarray, name: str | None = None, **attrs) -> Tensor:
        from onnx import helper

        out = name or self._name(op)
        self.nodes.append(helper.make_node(op, [t.name for t in inputs], [out], name=out, **attrs))
        return Tensor(out, value)

    # --- ops -------------------------------------------------------------------------------

    def conv(self, x: Tensor, weight: np.ndarray, bias: np.ndarray, stride: int = 1,
             pad: tuple[int, int] = (0, 0)) -> Tensor:
        """Convolution with (top/left, bottom/right) zero padding on both spatial axes."""
        w, b = self.const(weight.astype(np.float32)), self.const(bias.astype(np.float32))
        value = conv2d(x.value, weight, bias, stride, pad)
        k = weight.shape[2:]
        return self._node("Conv", [x, w, b], value, kernel_shape=list(k), strides=[stride, stride],
                          pads=[pad[0], pad[0], pad[1], pad[1]])

    def conv_transpose(self, x: Tensor, weight: np.ndarray, bias: np.ndarray, stride: int) -> Tensor:
        """Transposed convolution whose output is exactly ``stride`` times the input ("same")."""
        w, b = self.const(weight.astype(np.float32)), self.const(bias.astype(np.float32))
        value = conv_transpose2d(x.value, weight, bias, stride)
        k = weight.shape[2]
        total = k - stride  # rows the full transposed output has beyond stride * input
        pads = [total // 2, total // 2, total - total // 2, total - total // 2]
        return self._node("ConvTranspose", [x, w, b], value, kernel_shape=[k, k], strides=[stride, stride], pads=pads)

    def gemm(self, x: Tensor, weight: np.ndarray, bias: np.ndarray) -> Tensor:
        """x (B, K) @ weight (K, M) + bias."""
        w, b = self.const(weight.astype(np.float32)), self.const(bias.astype(np.float32))
        value = (x.value @ weight + bias).astype(np.float32)
        return self._node("Gemm", [x, w, b], value)

    def relu(self, x: Tensor) -> Tensor:
        return self._node("Relu", [x], np.maximum(x.value, 0))

    def sigmoid(self, x: Tensor) -> Tensor:
        return self._node("Sigmoid", [x], (1 / (1 + np.exp(-x.value.astype(np.float64)))).astype(np.float32))

    def tanh(self, x: Tensor) -> Tensor:
        return self._node("Tanh", [x], np.tanh(x.value))

    def add(self, a: Tensor, b: Tensor) -> Tensor:
        return self._node("Add", [a, b], a.value + b.value)

    def mul(self, a: Tensor, b: Tensor) -> Tensor:
        return self._node("Mul", [a, b], a.value * b.value)

    def max_pool(self, x: Tensor, size: int = 2) -> Tensor:
        n, c, h, w = x.value.shape
        ho, wo = h // size, w // size
        value = x.value[:, :, :ho * size, :wo * size].reshape(n, c, ho, size, wo, size).max(axis=(3, 5))
        return self._node("MaxPool", [x], value, kernel_shape=[size, size], strides=[size, size])

    def slice(self, x: Tensor, starts: list[int], ends: list[int], axes: list[int]) -> Tensor:
        index = [slice(None)] * x.value.ndim
        for s, e, a in zip(starts, ends, axes):
            index[a] = slice(s, e)
        args = [self.const(np.array(v, np.int64)) for v in (starts, ends, axes)]
        return self._node("Slice", [x, *args], x.value[tuple(index)])

    def concat(self, xs: list[Tensor], axis: int) -> Tensor:
        return self._node("Concat", xs, np.concatenate([x.value for x in xs], axis=axis), axis=axis)

    def reshape(self, x: Tensor, shape: list[int]) -> Tensor:
        return self._node("Reshape", [x, self.const(np.array(shape, np.int64))], x.value.reshape(shape))

    def gather_patches(self, image: Tensor, centres: Tensor, size: int) -> Tensor:
        """size x size patches of a (1, 1, R, R) image around (P, 2) pixel positions:
        nearest pixel, edges clamped. Output (P, 1, size, size)."""
        r = image.value.shape[-1]
        offsets = np.arange(size) - size // 2
        # ONNX: rounded centres (as int64) + offset grid, clipped, flattened y * R + x, then Gather
        rounded = self._node("Round", [centres], np.round(centres.value))
        as_int = self._node("Cast", [rounded], rounded.value.astype(np.int64), to=7)  # INT64
        cx = self.reshape(self.slice(as_int, [0], [1], [1]), [-1, 1, 1])
        cy = self.reshape(self.slice(as_int, [1], [2], [1]), [-1, 1, 1])
        dx, dy = offsets[None, None, :], offsets[None, :, None]
        xs = self._node("Add", [cx, self.const(dx.astype(np.int64))], cx.value + dx)
        ys = self._node("Add", [cy, self.const(dy.astype(np.int64))], cy.value + dy)
        lo, hi = self.const(np.array(0, np.int64)), self.const(np.array(r - 1, np.int64))
        xs = self._node("Clip", [xs, lo, hi], np.clip(xs.value, 0, r - 1))
        ys = self._node("Clip", [ys, lo, hi], np.clip(ys.value, 0, r - 1))
        flat_index = self._node("Add", [self._node("Mul", [ys, self.const(np.array(r, np.int64))], ys.value * r), xs],
                                ys.value * r + xs.value)
        flat = self.reshape(image, [-1])
        patches = self._node("Gather", [flat, flat_index], flat.value[flat_index.value], axis=0)
        return self.reshape(patches, [-1, 1, size, size])

    def to_onnx(self):
        from onnx import helper, numpy_helper

        def info(t: Tensor):
            return helper.make_tensor_value_info(t.name, helper.np_dtype_to_tensor_dtype(t.value.dtype),
                                                 list(t.value.shape))

        graph = helper.make_graph(self.nodes, self.name,
                                  [info(t) for t in self.inputs], [info(t) for t in self.outputs],
                                  [numpy_helper.from_array(v, k) for k, v in self.initializers.items()])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="facebench")
        model.ir_version = 8
        return model


# --- numpy ops -------------------------------------------------------------------------------------

def conv2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, stride: int = 1, pad=(0, 0)) -> np.ndarray:
    """NCHW convolution (cross-correlation, as in every framework) by im2col."""
    kh, kw = weight.shape[2:]
    x = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[1]), (pad[0], pad[1])))
    ho, wo = (x.shape[2] - kh) // stride + 1, (x.shape[3] - kw) // stride + 1
    # numpy 1.26's stub types ``axis`` as a single index; the function takes a tuple too (documented, numpy#21500)
    windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))  # type: ignore[call-overload]
    windows = windows[:, :, ::stride, ::stride][:, :, :ho, :wo]
    out = np.einsum("nchwij,ocij->nohw", windows, weight, optimize=True)
    return (out + bias[None, :, None, None]).astype(np.float32)


def conv_transpose2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, stride: int) -> np.ndarray:
    """NCHW transposed convolution, cropped to exactly ``stride`` x the input size."""
    n, _, h, w = x.shape
    _, out_c, k, _ = weight.shape
    full = np.zeros((n, out_c, (h - 1) * stride + k, (w - 1) * stride + k), np.float64)
    contrib = np.einsum("nchw,coij->nohwij", x, weight, optimize=True)
    for i in range(k):
        for j in range(k):
            full[:, :, i:i + (h - 1) * stride + 1:stride, j:j + (w - 1) * stride + 1:stride] += contrib[..., i, j]
    total = k - stride
    top = total // 2
    out = full[:, :, top:top + h * stride, top:top + w * stride]
    return (out + bias[None, :, None, None]).astype(np.float32)


def count_onnx_macs(model) -> dict[str, int]:
    """Multiply-accumulates of Conv, ConvTranspose, Gemm and MatMul nodes, read from
    the graph with ONNX shape inference; also the elementwise Mul count, separately."""
    import onnx
    from onnx import numpy_helper, shape_inference

    inferred = shape_inference.infer_shapes(model)
    shapes = {}
    for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        # a symbolic dimension (the batch) counts as 1: MACs are per item
        shapes[vi.name] = [d.dim_value or 1 for d in vi.type.tensor_type.shape.dim]
    for init in inferred.graph.initializer:
        shapes[init.name] = list(numpy_helper.to_array(init).shape)
    macs = {"conv": 0, "gemm": 0, "elementwise_mul": 0}
    for node in inferred.graph.node:
        if node.op_type == "Conv":
            out = shapes[node.output[0]]
            w = shapes[node.input[1]]  # (out, in / groups, kh, kw)
            macs["conv"] += int(np.prod(out)) * w[1] * w[2] * w[3]
        elif node.op_type == "ConvTranspose":
            x, w = shapes[node.input[0]], shapes[node.input[1]]
            macs["conv"] += int(np.prod(x)) * w[1] * w[2] * w[3]
        elif node.op_type in ("Gemm", "MatMul"):
            a, b = shapes[node.input[0]], shapes[node.input[1]]
            macs["gemm"] += int(np.prod(a[:-1])) * a[-1] * b[-1]
        elif node.op_type == "Mul" and node.output[0] in shapes:
            macs["elementwise_mul"] += int(np.prod(shapes[node.output[0]]))
    onnx.checker.check_model(inferred)
    return macs
