"""A host-CPU stand-in for TFLite's ``benchmark_model``: same flags, same output, real inference.

The stand-in device (:mod:`facebench.testing.adbd`) runs whatever is pushed to
it on this machine, so an end-to-end test of the farm runner pushes this
program in place of the Android binary. It loads the model with
tflite-runtime, feeds random inputs, and times warmup and measured runs the
way the real tool does (at least N runs and at least S seconds), printing the
newer output format. It has no GPU: ``--use_gpu=true`` fails the way a phone
whose GPU delegate cannot take the model fails. Every run says
"facebench host stand-in", so its figures are labelled host CPU.

Beyond the real tool it prints the measured runs one by one (``facebench run
times in us: …``), so the runner's percentiles, p90 included, come from the
samples. ``--enable_op_profiling=true`` prints an op profile in the real
tool's table format whose rows are the stand-in's own work (invoke, and
setting the inputs, timed here; named "facebench stand-in: ..."), not the
model's operators; ``--report_peak_memory_footprint=true`` adds the periodic
peak line (this process's peak RSS). For tests, ``$FACEBENCH_STANDIN_MALFORMED`` (set by
:func:`write_program`) names a substring of ``--graph``: that model's summary
line carries a malformed number (``Init: 1.2.3``), the others are untouched.

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
    "gpu_backend": (str, ""), "require_full_delegation": (bool, False), "report_peak_memory_footprint": (bool, False),
}
_PROFILE_COLUMNS = ("[node type]", "[first]", "[avg ms]", "[%]", "[cdf%]", "[mem KB]", "[times called]", "[Name]")


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


def _profile_table(title: str, rows: list[tuple[str, str, float, float, int]]) -> list[str]:
    """One section of the real tool's op profile: (node type, name, first ms, avg ms, times called) rows."""
    total = sum(r[3] for r in rows) or 1.0
    lines = [f"============================== {title} ==============================",
             "\t" + "\t".join(f"{c:>16}" for c in _PROFILE_COLUMNS[:-1]) + "\t" + _PROFILE_COLUMNS[-1]]
    cdf = 0.0
    for kind, name, first, avg, called in rows:
        cdf += 100 * avg / total
        lines.append(f"\t{kind:>16}\t{first:16.3f}\t{avg:16.3f}\t{100 * avg / total:15.3f}%\t{cdf:15.3f}%"
                     f"\t{0.0:16.3f}\t{called:16d}\t[{name}]")
    return lines


def _op_profile(runs: list[float], set_inputs_us: float) -> list[str]:
    """The stand-in's own work as the real tool's op profile (the model's operators are not timed one by one)."""
    rows = [("SET_INPUTS", "facebench stand-in: set inputs", set_inputs_us / 1e3, set_inputs_us / 1e3, 1),
            ("INVOKE", "facebench stand-in: interpreter.invoke", runs[0] / 1e3, float(np.mean(runs)) / 1e3,
             len(runs))]
    by_time = sorted(rows, key=lambda r: -r[3])
    out = ["Operator-wise Profiling Info for Regular Benchmark Runs:"]
    out += _profile_table("Run Order", rows) + [""] + _profile_table("Top by Computation Time", by_time) + [""]
    out += ["============================== Summary by node type ==============================",
            "\t" + "\t".join(f"{c:>16}" for c in ("[Node type]", "[count]", "[avg ms]", "[avg %]", "[cdf %]",
                                                    "[mem KB]", "[times called]"))]
    total, cdf = sum(r[3] for r in rows) or 1.0, 0.0
    for kind, _, _, avg, called in by_time:
        cdf += 100 * avg / total
        out.append(f"\t{kind:>16}\t{1:16d}\t{avg:16.3f}\t{100 * avg / total:15.3f}%\t{cdf:15.3f}%\t{0.0:16.3f}"
                   f"\t{called:16d}")
    return out


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
    t_inputs = time.perf_counter()
    for detail in interpreter.get_input_details():
        dtype = np.dtype(detail["dtype"])
        shape = detail["shape"]
        data = rng.random(shape).astype(dtype) if dtype.kind == "f" else rng.integers(0, 127, shape).astype(dtype)
        interpreter.set_tensor(detail["index"], data)
    set_inputs_us = (time.perf_counter() - t_inputs) * 1e6
    rss_init = _rss_mb()
    say(f"Initialized session in {init_us / 1e3:g}ms.")
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
    say("facebench run times in us: " + ",".join(f"{t:.1f}" for t in runs))
    say()
    malformed = os.environ.get("FACEBENCH_STANDIN_MALFORMED")
    init_text = "1.2.3" if malformed and malformed in flags["graph"] else str(int(init_us))
    say(f"Inference timings in us: Init: {init_text}, First inference: {int(warmup[0])}, "
        f"Warmup (avg): {np.mean(warmup):g}, Inference (avg): {np.mean(runs):g}")
    say("Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the "
        "actual memory footprint of the model at runtime. Take the information at your discretion.")
    say(f"Memory footprint delta from the start of the tool (MB): init={rss_init - rss0:g} "
        f"overall={_rss_mb() - rss0:g}")
    if flags["report_peak_memory_footprint"]:
        say(f"Overall peak memory footprint (MB) via periodic monitoring: {_rss_mb():g}")
    if flags["enable_op_profiling"]:  # the real tool prints its profile after the timings
        for line in _op_profile(runs, set_inputs_us):
            say(line)
    return 0


def write_program(path: Path, malformed_for: str | None = None) -> Path:
    """An executable file that runs this stand-in with the current interpreter (to push as benchmark_model).

    ``malformed_for``: a substring of ``--graph`` whose run prints ``Init: 1.2.3`` (a garbage-output test)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    env = f"FACEBENCH_STANDIN_MALFORMED={shlex.quote(malformed_for)} " if malformed_for else ""
    path.write_text(f"#!/bin/sh\n{env}exec {shlex.quote(sys.executable)} -m facebench.testing.host_benchmark \"$@\"\n")
    os.chmod(path, 0o755)
    return path


if __name__ == "__main__":
    raise SystemExit(main())
