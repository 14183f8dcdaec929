"""MACs (analytic, counted from the exported ONNX graph, the paper's) and CPU latency
per iteration for MuSiCa's five Table 1 variants and PRNet; reference: the paper's MACs.

    python benchmarks/cascade_costs.py

Latency here is host CPU through onnxruntime (one thread), untrained weights:
cost only, never accuracy.
"""

from __future__ import annotations

import time

import numpy as np
import onnxruntime as ort

from facebench.baselines import musica, prnet
from facebench.runtimes.graph import count_onnx_macs


def _ms(session, feeds, repeats=20):
    session.run(None, feeds)
    start = time.perf_counter()
    for _ in range(repeats):
        session.run(None, feeds)
    return 1000 * (time.perf_counter() - start) / repeats


def main():
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    print(f"{'model':<14} {'analytic':>10} {'counted':>10} {'paper':>8} {'ratio':>6} {'ms/iter (CPU)':>14}")
    for (points, patches), paper in sorted(musica.PAPER_MACS.items()):
        config = musica.MusicaConfig(points=points, patches=patches)
        weights = musica.random_weights(config)
        counted, times = 0, []
        for k in range(config.iterations):
            r = config.resolution(k)
            graph = musica.iteration_graph(config, weights, k, np.zeros((1, 1, r, r)),
                                           weights["mean_shape"] * 2 ** k, np.zeros((1, config.hidden)))
            model = graph.to_onnx()
            macs = count_onnx_macs(model)
            counted += macs["conv"] + macs["gemm"]
            session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
            times.append(_ms(session, {t.name: t.value.astype(np.float32) for t in graph.inputs}))
        analytic = config.iterations * config.iteration_macs()
        print(f"musica {points}/{patches:<6} {analytic / 1e6:>9.1f}M {counted / 1e6:>9.1f}M {paper / 1e6:>7.0f}M "
              f"{analytic / paper:>6.3f} {' '.join(f'{t:.2f}' for t in times):>14}")
    graph = prnet.build_graph(prnet.random_weights(), np.zeros((1, 3, 32, 32)))
    model = graph.to_onnx()
    prnet._set_input_size(model, prnet.RESOLUTION)
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    ms = _ms(session, {"image": np.zeros((1, 3, 256, 256), np.float32)}, repeats=5)
    print(f"{'prnet':<14} {prnet.analytic_macs() / 1e6:>9.1f}M {count_onnx_macs(model)['conv'] / 1e6:>9.1f}M "
          f"{'-':>8} {'-':>6} {ms:>14.1f}")


if __name__ == "__main__":
    main()
