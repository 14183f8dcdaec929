"""A host-CPU stand-in for TFLite's ``benchmark_model``: same flags, same output, real inference.

The stand-in device (:mod:`facebench.testing.adbd`) runs whatever is pushed to
it on this machine, so an end-to-end test of the farm runner pushes this
program in place of the Android binary. It loads the model with
tflite-runtime, feeds random inputs, and times warmup and measured runs the
way the real tool does (at least N runs and at least S seconds), printing the
newer output format. It has no GPU: ``--use_gpu=true`` fails the way a phone
whose GPU delegate cannot take the model fails. Every run says
"facebench host stand-in", so its figures are labelled host CPU.

``python -m facebench.testing.host_benchmark --graph=model.tflite``; or
:func:`write_program` for an executable file to configure as ``benchmark_model``.
"""

from __future__ import annotations

import os
import platform
import resource
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from facebench.farm.benchmark_output import HOST_STAND_IN

FLAGS = {  # name -> (type, default), as the real tool spells them
    "graph": (str, ""), "num_threads": (int, -1), "num_runs": (int, 50), "warmup_runs": (int, 1),
    "min_secs": (float, 1.0), "warmup_min_secs": (float, 0.5), "max_secs": (float, 150.0),
    "run_delay": (float, -1.0), "use_gpu": (bool, False), "gpu_precision_loss_allowed": (bool, True),
    "enable_op_profiling": (bool, False), "use_xnnpack": (bool, True), "verbose": (bool, False),
}


def _value(kind, text: str):
    if kind is bool:
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(text)
        return text.lower() in ("true", "1")
    return kind(text)


def parse_flags(argv: list[str]) -> tuple[dict, list[str]]:
    """(flags, the arguments it could not use)."""
    flags = {name: default for name, (_, default) in FLAGS.items()}
    unused = []
    for arg in argv:
        name, sep, text = arg.removeprefix("--").partition("=")
        if not arg.startswith("--") or name not in FLAGS:
            unused.append(arg)
            continue
        kind = FLAGS[name][0]
        try:
            flags[name] = _value(kind, text) if sep else True if kind is bool else _value(kind, "")
        except ValueError:
            unused.append(arg)
    return flags, unused


class _Stat:
    """The tool's per-run statistics line."""

    def __init__(self, times_us: list[float]):
        self.t = np.asarray(times_us, dtype=np.float64)

    def line(self) -> str:
        t = self.t
        p5, median, p95 = (int(np.percentile(t, q, method="nearest")) for q in (5, 50, 95))
        return (f"count={t.size} first={int(t[0])} curr={int(t[-1])} min={int(t.min())} max={int(t.max())} "
                f"avg={t.mean():g} std={int(t.std())} p5={p5} median={median} p95={p95}")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _loop(interpreter, min_runs: int, min_secs: float, max_secs: float, delay: float) -> list[float]:
    times, start = [], time.perf_counter()
    while True:
        t0 = time.perf_counter()
        interpreter.invoke()
        times.append((time.perf_counter() - t0) * 1e6)
        elapsed = time.perf_counter() - start
        if (len(times) >= min_runs and elapsed >= min_secs) or elapsed >= max_secs:
            return times
        if delay > 0:
            time.sleep(delay)


def main(argv: list[str] | None = None) -> int:
    def say(text: str = "") -> None:
        print(f"INFO: {text}" if text else "", flush=True)

    flags, unused = parse_flags(sys.argv[1:] if argv is None else argv)
    say("STARTING!")
    if unused:
        print(f"ERROR: Unconsumed cmdline flags: {' '.join(unused)}", flush=True)
        print("ERROR: Benchmarking failed.", flush=True)
        return 1
    threads = flags["num_threads"] if flags["num_threads"] > 0 else 1
    say("Log parameter values verbosely: [0]")
    say(f"Min num runs: [{flags['num_runs']}]")
    say(f"Num threads: [{threads}]")
    say(f"Min warmup runs: [{flags['warmup_runs']}]")
    say(f"Graph: [{flags['graph']}]")
    say(f"Enable op profiling: [{int(flags['enable_op_profiling'])}]")
    say(f"Use gpu: [{int(flags['use_gpu'])}]")
    say(f"{HOST_STAND_IN}: tflite-runtime on the host CPU ({platform.machine()}), no GPU")
    rss0 = _rss_mb()
    graph = Path(flags["graph"])
    if not graph.is_file():
        print(f"ERROR: Could not open '{graph}'.", flush=True)
        print("ERROR: Benchmarking failed.", flush=True)
        return 1
    say(f"Loaded model {graph}")
    say(f"The input model file size (MB): {graph.stat().st_size / 1e6:g}")
    if flags["use_gpu"]:
        print("ERROR: GPU delegate is not available on the facebench host stand-in (host CPU only).", flush=True)
        print("ERROR: Failed to apply GPU delegate.", flush=True)
        print("ERROR: Benchmarking failed.", flush=True)
        return 1
    t0 = time.perf_counter()
    try:
        from tflite_runtime.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(graph), num_threads=threads)
        interpreter.allocate_tensors()
    except Exception as exc:  # noqa: BLE001 - the tool reports any load failure and exits 1
        print(f"ERROR: {type(exc).__name__}: {exc}", flush=True)
        print("ERROR: Benchmarking failed.", flush=True)
        return 1
    init_us = (time.perf_counter() - t0) * 1e6
    rng = np.random.default_rng(0)
    for detail in interpreter.get_input_details():
        dtype = np.dtype(detail["dtype"])
        shape = detail["shape"]
        data = rng.random(shape).astype(dtype) if dtype.kind == "f" else rng.integers(0, 127, shape).astype(dtype)
        interpreter.set_tensor(detail["index"], data)
    rss_init = _rss_mb()
    say(f"Initialized session in {init_us / 1e3:g}ms.")
    if flags["enable_op_profiling"]:
        say("Op profiling is not available in the facebench host stand-in.")
    delay = flags["run_delay"]
    say(f"Running benchmark for at least {flags['warmup_runs']} iterations and at least "
        f"{flags['warmup_min_secs']:g} seconds but terminate if exceeding {flags['max_secs']:g} seconds.")
    warmup = _loop(interpreter, flags["warmup_runs"], flags["warmup_min_secs"], flags["max_secs"], delay)
    say(_Stat(warmup).line())
    say()
    say(f"Running benchmark for at least {flags['num_runs']} iterations and at least "
        f"{flags['min_secs']:g} seconds but terminate if exceeding {flags['max_secs']:g} seconds.")
    runs = _loop(interpreter, flags["num_runs"], flags["min_secs"], flags["max_secs"], delay)
    say(_Stat(runs).line())
    say()
    say(f"Inference timings in us: Init: {int(init_us)}, First inference: {int(warmup[0])}, "
        f"Warmup (avg): {np.mean(warmup):g}, Inference (avg): {np.mean(runs):g}")
    say("Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the "
        "actual memory footprint of the model at runtime. Take the information at your discretion.")
    say(f"Memory footprint delta from the start of the tool (MB): init={rss_init - rss0:g} "
        f"overall={_rss_mb() - rss0:g}")
    say(f"Overall peak memory footprint (MB) via periodic monitoring: {_rss_mb():g}")
    return 0


def write_program(path: Path) -> Path:
    """An executable file that runs this stand-in with the current interpreter (to push as benchmark_model)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m facebench.testing.host_benchmark \"$@\"\n")
    os.chmod(path, 0o755)
    return path


if __name__ == "__main__":
    raise SystemExit(main())
