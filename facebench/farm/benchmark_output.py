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
  executed by the delegate"), or unsupported on the platform;
* which GPU API ran (``Initialized OpenCL-based API.`` / ``Initialized OpenGL-based API.``:
  ``gpu_backend`` "cl" / "gl", "" when no such line) and, with
  ``--require_full_delegation``, the tool's refusal of a CPU fallback;
* the op profile (``--enable_op_profiling``, :func:`op_profile`): the
  ``Run Order`` table of ``Operator-wise Profiling Info for Regular Benchmark
  Runs``, one row per node (node type, name, avg ms, %, times called); the
  header names the columns, so builds with and without ``[start]`` both read;
* ``facebench run times in us: t1,t2,…``: the measured runs one by one. The
  real tool never prints this line (facebench's host stand-in does); when it is
  there the percentiles come from the samples.

Percentiles (:func:`percentiles`): p5, median, p90 (MLPerf Mobile's latency
figure) and p95. From the per-run samples when printed (``source =
"samples"``, numpy's linear interpolation); else from the tool's own statistics
line: its p5/median/p95 as printed and p90 interpolated linearly in rank
between the median and p95 (``source = "tool"``; an estimate, since the tool
prints no p90); an older build that prints no percentiles gives the mean as
median and no p5/p90/p95 (``source = "tool-mean"``).

A number that does not parse (``Init: 1.2.3``) makes the whole text garbage:
:class:`OutputError` naming the line, never a ``ValueError`` from deep inside.

Nothing here executes or evaluates device output: numbers are matched by
regular expressions and converted with ``float``.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field

import numpy as np

from facebench.errors import FacebenchError

_NUMBER = r"([0-9][0-9.]*(?:e[+-]?[0-9]+)?)"
_SUMMARY = re.compile(rf"Inference timings in us: Init: {_NUMBER}, First inference: {_NUMBER}, "
                      rf"Warmup \(avg\): {_NUMBER}, Inference \(avg\): {_NUMBER}")
_STAT_FIELD = re.compile(rf"\b(count|first|curr|min|max|avg|std|p5|median|p95)={_NUMBER}")
_MEMORY_DELTA = re.compile(rf"(?:Memory footprint delta from the start of the tool|Peak memory footprint) \(MB\): "
                           rf"init={_NUMBER} overall={_NUMBER}")
_MEMORY_PEAK = re.compile(rf"Overall peak memory footprint \(MB\) via periodic monitoring: {_NUMBER}")
_REPLACED = re.compile(r"Replacing (\d+) (?:out of (\d+) )?node\(s\) with delegate \((TfLiteGpuDelegate\w*)\)")
_BACKEND = re.compile(r"Initialized Open(CL|GL)-based API")
_FULL_DELEGATION_REFUSED = "Disallowed CPU fallback"  # the tool's error under --require_full_delegation
_PROFILE_START = "Operator-wise Profiling Info for Regular Benchmark Runs"
_SECTION = re.compile(r"^=+ ([A-Za-z ]+?) =+$")
_PROFILE_ROW = re.compile(r"^\s*(\S+)\s+((?:-?[0-9][0-9.]*(?:e[+-]?[0-9]+)?%?\s+)+)\[(.*)\]\s*$")
_SAMPLES = re.compile(r"facebench run times in us: ([^\n]*)")
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
    percentiles: dict[str, float] = field(default_factory=dict)  # p5, median, p90, p95 (us) as far as known
    percentiles_from: str = ""  # samples | tool | tool-mean (see the module docstring)
    gpu_backend: str = ""  # cl | gl: the GPU API the delegate initialised ("" when the log does not say)
    full_delegation_refused: bool = False  # --require_full_delegation stopped a partial delegation
    op_profile: list[dict] = field(default_factory=list)  # Run Order rows (see op_profile)

    @property
    def median_us(self) -> float:
        """The run's median (from the samples, else as the tool printed it), else its mean."""
        return self.percentiles.get("median", self.stats.get("median", self.avg_us))

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


def gpu_backend(text: str) -> str:
    """"cl" or "gl": the API the GPU delegate initialised (the last one the log names), "" when none."""
    found = _BACKEND.findall(text)
    return found[-1].lower() if found else ""


def op_profile(text: str) -> list[dict]:
    """The ``Run Order`` table of the regular runs' op profile: one dict per node, in run order.

    Each row: ``node_type``, ``name``, ``avg_ms``, ``percent``, ``times_called`` (and ``first_ms``,
    ``mem_kb`` where printed). Columns are found by the header's bracketed names; a row whose numbers
    do not match the header is skipped (never guessed)."""
    start = text.find(_PROFILE_START)
    if start < 0:
        return []
    rows: list[dict] = []
    columns: list[str] | None = None
    in_run_order = False
    for line in text[start:].splitlines():
        line = re.sub(r"^INFO: ?", "", line.strip("\r"))
        section = _SECTION.match(line.strip())
        if section:
            if in_run_order:
                break
            in_run_order = section.group(1).strip() == "Run Order"
            continue
        if not in_run_order:
            continue
        if "[node type]" in line.lower():
            columns = [c.strip().lower() for c in re.findall(r"\[([^\]]+)\]", line)]
            continue
        match = _PROFILE_ROW.match(line)
        if columns is None or not match:
            continue
        values = match.group(2).split()
        numeric = [c for c in columns if c not in ("node type", "name")]
        if len(values) != len(numeric):
            continue
        cells = dict(zip(numeric, (_cell(v, line) for v in values)))
        if "avg ms" not in cells:
            continue
        row = {"node_type": match.group(1), "name": match.group(3), "avg_ms": cells["avg ms"],
               "percent": cells.get("%"), "times_called": int(cells["times called"])
               if "times called" in cells else None}
        for column, key in (("first", "first_ms"), ("mem kb", "mem_kb")):
            if column in cells:
                row[key] = cells[column]
        rows.append(row)
    return rows


def _cell(value: str, line: str) -> float:
    """One number of an op-profile row (a trailing % allowed), finite and >= 0, else OutputError quoting the row."""
    try:
        number = float(value.rstrip("%"))
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number < 0:
        raise OutputError(f"malformed number {value!r} in the op profile line {line.strip()[:300]!r}")
    return number


def _line_of(text: str, pos: int) -> str:
    start = text.rfind("\n", 0, pos) + 1
    end = text.find("\n", pos)
    return text[start:end if end >= 0 else len(text)].strip()


def _number(value: str, text: str, pos: int) -> float:
    """``float(value)`` when it is a finite time, size or count (>= 0), else OutputError quoting the line it
    sits on: ``Init: 1.2.3``, ``1e999``, ``nan`` and ``-3`` are garbage, never a crash or a stored figure."""
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number < 0:
        raise OutputError(f"malformed number {value!r} in the line {_line_of(text, pos)[:300]!r}") from None
    return number


def percentiles(samples_us=None, stats: dict[str, float] | None = None,
                avg_us: float | None = None) -> tuple[dict[str, float], str]:
    """(p5/median/p90/p95 in us, where they came from): the samples when given, else the tool's statistics."""
    if samples_us is not None and len(samples_us):
        values = np.percentile(np.asarray(samples_us, dtype=np.float64), [5, 50, 90, 95])
        return dict(zip(("p5", "median", "p90", "p95"), map(float, values))), "samples"
    stats = stats or {}
    if "median" in stats:
        out: dict[str, float] = {k: stats[k] for k in ("p5", "median", "p95") if k in stats}
        if "p95" in stats:  # the tool prints no p90: linear in rank between its median (50) and p95
            out["p90"] = stats["median"] + (stats["p95"] - stats["median"]) * (90 - 50) / (95 - 50)
        return out, "tool"
    return ({"median": avg_us}, "tool-mean") if avg_us is not None else ({}, "")


def parse(text: str) -> BenchmarkOutput:
    summaries = list(_SUMMARY.finditer(text))
    summary = summaries[-1] if summaries else None  # the last wins (a tool that benchmarks twice prints two)
    if summary is None:
        tail = text.strip()[-200:]
        raise OutputError(f"no 'Inference timings in us' line in the output; it ended {tail!r}")
    init, first, warmup, avg = (_number(g, text, summary.start()) for g in summary.groups())
    stats: dict[str, float] = {}
    offset = 0
    for line in text[:summary.start()].splitlines(keepends=True):
        fields = {m.group(1): m for m in _STAT_FIELD.finditer(line)}
        if "count" in fields and "avg" in fields:
            stats = {k: _number(m.group(2), text, offset + m.start()) for k, m in fields.items()
                     if k not in ("first", "curr", "avg")}
        offset += len(line)
    memory: dict[str, float] = {}
    for m in _MEMORY_DELTA.finditer(text):
        memory.update(init=_number(m.group(1), text, m.start()), overall=_number(m.group(2), text, m.start()))
    peak = _MEMORY_PEAK.search(text)
    if peak:
        memory["peak"] = _number(peak.group(1), text, peak.start())
    samples = None
    for m in _SAMPLES.finditer(text[:summary.start()]):  # the last before the summary: the measured runs
        samples = [_number(v, text, m.start()) for v in m.group(1).replace(",", " ").split()]
    table, source = percentiles(samples, stats, avg)
    gpu, nodes, message = gpu_outcome(text)
    return BenchmarkOutput(init, first, warmup, avg, stats, memory, gpu, nodes, message, HOST_STAND_IN in text,
                           table, source, gpu_backend(text), full_delegation_refused(text), op_profile(text))


def full_delegation_refused(text: str) -> bool:
    """The tool stopped because ``--require_full_delegation`` met a graph the delegate only partly took."""
    return _FULL_DELEGATION_REFUSED in text
