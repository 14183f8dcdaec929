"""Multiply-accumulates counted from a model graph, to check model cards.

Counts the ops that carry the arithmetic of mobile face models: convolutions
(``out_h * out_w * out_c * k_h * k_w * in_c``), depthwise convolutions
(``out_h * out_w * out_c * k_h * k_w``), transposed convolutions (per input
pixel) and fully connected layers. Element-wise ops, activations and pooling
are not multiply-accumulates and are left out, as in the papers' tables.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def count_tflite_macs(path: str | Path, custom_ops: bool = False) -> int:
    """MACs of one forward pass; ``custom_ops`` loads MediaPipe's ops first.

    The custom ops themselves (crops and 4x4 matrices) are not counted.
    """
    from tflite_runtime.interpreter import Interpreter, OpResolverType

    if custom_ops:
        from facebench.runtimes.mediapipe_ops import make_interpreter

        interp, _ = make_interpreter(path, default_delegates=False)
    else:
        interp = Interpreter(model_path=str(path),
                             experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp.allocate_tensors()

    # tensor shapes one by one: tflite-runtime 2.14 crashes describing sparse tensors
    class _Shapes(dict):
        def __missing__(self, index):
            self[index] = tuple(int(x) for x in interp._interpreter.TensorSize(int(index), 0))
            return self[index]

    shapes = _Shapes()
    total = 0
    for op in interp._get_ops_details():  # the only public-enough view of the graph in tflite-runtime
        name, inputs, outputs = op["op_name"], op["inputs"], op["outputs"]
        if name == "CONV_2D":
            out, w = shapes[outputs[0]], shapes[inputs[1]]      # w: (out_c, kh, kw, in_c)
            total += int(np.prod(out)) * w[1] * w[2] * w[3]
        elif name == "DEPTHWISE_CONV_2D":
            out, w = shapes[outputs[0]], shapes[inputs[1]]      # w: (1, kh, kw, out_c)
            total += int(np.prod(out)) * w[1] * w[2]
        elif name == "TRANSPOSE_CONV":
            w, x = shapes[inputs[1]], shapes[inputs[2]]         # w: (out_c, kh, kw, in_c)
            total += int(np.prod(x)) * w[0] * w[1] * w[2]
        elif name == "FULLY_CONNECTED":
            out, w = shapes[outputs[0]], shapes[inputs[1]]      # w: (units, in)
            total += int(np.prod(out)) * w[1]
    return total
