"""Harness throughput against a plain serial loop, in the same process.

Reference: for each item, preprocess -> forward (batch of one) -> postprocess,
one after the other on the main thread. Candidate: facebench's harness with
batched forward and pre/post-processing on worker threads. Prints items per
second for both and the ratio candidate / reference (above 1 is faster).

    python benchmarks/harness_throughput.py [--repeat 16] [--batch-size 8] [--workers 2]
"""

from __future__ import annotations

import argparse
import time

from facebench.baselines.blazeface import BlazeFaceShortRange
from facebench.datasets import load_dataset
from facebench.run.harness import Item, run_adapter


def serial(adapter, items):
    for item in items:
        inputs, ctx = adapter.preprocess(item.sample, item.face_box)
        outputs = adapter.forward({k: v[None] for k, v in inputs.items()})
        adapter.postprocess({k: v[0] for k, v in outputs.items()}, ctx)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=16, help="copies of the 4 mini photos")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    samples = load_dataset("mini")
    items = [Item(f"{s.id}/{k}", s) for k in range(args.repeat) for s in samples]
    adapter = BlazeFaceShortRange()
    adapter.load(threads=args.threads)
    serial(adapter, items[:4])  # warm up

    start = time.perf_counter()
    serial(adapter, items)
    reference = len(items) / (time.perf_counter() - start)

    start = time.perf_counter()
    results = run_adapter(adapter, items, batch_size=args.batch_size, workers=args.workers)
    candidate = len(items) / (time.perf_counter() - start)
    assert all(r.error is None for r in results)

    print(f"items: {len(items)} (BlazeFace short range on the mini photos)")
    print(f"reference serial loop : {reference:8.1f} items/s")
    print(f"facebench harness     : {candidate:8.1f} items/s  (batch {args.batch_size}, {args.workers} workers)")
    print(f"ratio harness/serial  : {candidate / reference:.2f}")


if __name__ == "__main__":
    main()
