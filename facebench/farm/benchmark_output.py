"""Reading what TFLite's ``benchmark_model`` prints, in its older and newer formats.

Older builds print bare lines; newer ones prefix ``INFO: `` (or a logcat tag)
and add ``p5= median= p95=`` to the statistics. The lines read are:

* ``Inference timings in us: Init: …, First inference: …, Warmup (avg): …, Inference (avg): …``
  (required: without it the output is not a benchmark result);
* the last ``count=… first=… curr=… min=… max=… avg=… std=…[ p5=… median=… p95=…]``
  line (the measured runs; the one before it is the warmup);
* ``Memory footprint delta from the start of the tool (MB): init=… overall=…``,
  the older ``Peak memory footprint (MB): init=… overall=…`` and
  ``Overall peak memory footprint (MB) via periodic monitoring: …``;
* what happened to the GPU delegate: applied to all nodes, to some, not
  applied ("Failed to apply GPU delegate", or the graph "will not be
  executed by the delegate"), or unsupported on the platform.

Nothing here executes or evaluates device output: numbers are matched by
regular expressions and converted with ``float``.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from facebench.errors import FacebenchError

_NUMBER = r"([0-9][0-9.]*(?:e[+-]?[0-9]+)?)"
_SUMMARY = re.compile(rf"Inference timings in us: Init: {_NUMBER}, First inference: {_NUMBER}, "
                      rf"Warmup \(avg\): {_NUMBER}, Inference \(avg\): {_NUMBER}")
_STAT_FIELD = re.compile(rf"\b(count|first|curr|min|max|avg|std|p5|median|p95)={_NUMBER}")
_MEMORY_DELTA = re.compile(rf"(?:Memory footprint delta from the start of the tool|Peak memory footprint) \(MB\): "
                           rf"init={_NUMBER} overall={_NUMBER}")
_MEMORY_PEAK = re.compile(rf"Overall peak memory footprint \(MB\) via periodic monitoring: {_NUMBER}")
_REPLACED = re.compile(r"Replacing (\d+) (?:out of (\d+) )?node\(s\) with delegate \((TfLiteGpuDelegate\w*)\)")
_GPU_FAILED = ("Failed to apply GPU delegate", "Failed to create GPU delegate",
               "GPU delegate is not available", "will not be executed by the delegate")
HOST_STAND_IN = "facebench host stand-in"


class OutputError(FacebenchError, ValueError):
    """The text is not a benchmark result (garbage, a crash, a different program)."""


@dataclass
class BenchmarkOutput:
    init_us: float
    first_us: float
    warmup_avg_us: float
    avg_us: float
    stats: dict[str, float] = field(default_factory=dict)  # the measured runs: count, min, max, std, p5, median, p95
    memory_mb: dict[str, float] = field(default_factory=dict)  # init, overall, peak
    gpu: str = "not requested"  # applied | partial | failed | unsupported | not requested
    gpu_nodes: tuple[int, int] | None = None  # (delegated, total)
    gpu_message: str = ""
    host_stand_in: bool = False  # produced by facebench's host-CPU stand-in, never a phone

    @property
    def median_us(self) -> float:
        """The run's median when the tool printed one (newer builds), else its mean."""
        return self.stats.get("median", self.avg_us)

    def to_dict(self) -> dict:
        return asdict(self)


def gpu_outcome(text: str) -> tuple[str, tuple[int, int] | None, str]:
    """(outcome, (delegated, total) nodes, the line that says so) for the GPU delegate."""
    for line in text.splitlines():
        if any(marker in line for marker in _GPU_FAILED):
            return "failed", None, line.strip()
        if "GPU acceleration is unsupported on this platform" in line:
            return "unsupported", None, line.strip()
    match = _REPLACED.search(text)
    if match:
        done = int(match.group(1))
        total = int(match.group(2)) if match.group(2) else done
        return ("applied" if done == total else "partial"), (done, total), match.group(0)
    for line in text.splitlines():
        if "GPU delegate, and the model graph will be completely executed" in line:
            return "applied", None, line.strip()
        if "GPU delegate, and the model graph will be partially executed" in line:
            return "partial", None, line.strip()
    if "Created TensorFlow Lite delegate for GPU" in text:
        return "applied", None, "Created TensorFlow Lite delegate for GPU"
    return "not requested", None, ""


def parse(text: str) -> BenchmarkOutput:
    summaries = list(_SUMMARY.finditer(text))
    summary = summaries[-1] if summaries else None  # the last wins (a tool that benchmarks twice prints two)
    if summary is None:
        tail = text.strip()[-200:]
        raise OutputError(f"no 'Inference timings in us' line in the output; it ended {tail!r}")
    init, first, warmup, avg = (float(g) for g in summary.groups())
    stats: dict[str, float] = {}
    for line in text[:summary.start()].splitlines():
        fields = dict(_STAT_FIELD.findall(line))
        if "count" in fields and "avg" in fields:
            stats = {k: float(v) for k, v in fields.items() if k not in ("first", "curr", "avg")}
    memory: dict[str, float] = {}
    for m in _MEMORY_DELTA.finditer(text):
        memory.update(init=float(m.group(1)), overall=float(m.group(2)))
    peak = _MEMORY_PEAK.search(text)
    if peak:
        memory["peak"] = float(peak.group(1))
    gpu, nodes, message = gpu_outcome(text)
    return BenchmarkOutput(init, first, warmup, avg, stats, memory, gpu, nodes, message, HOST_STAND_IN in text)
