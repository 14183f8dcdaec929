"""GPU settings made explicit, and the memory / op-profile passes run apart from the timed run.

The GPU path (backend, delegated nodes, a forced backend that did not run, partial
delegation under --require_full_delegation) is read from captured text in the
real benchmark_model's format; the passes run end to end against a stand-in phone
running the host stand-in, whose op profile and memory lines use the real format.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from facebench.cli import main
from facebench.farm.adb import ensure_host_key
from facebench.farm.bench import BenchModel, BenchSettings, FarmError, Measurement, _run_once
from facebench.farm.benchmark_output import OutputError, gpu_backend, op_profile, parse
from facebench.farm.inventory import Device
from facebench.report.leaderboard import device_latency
from facebench.report.op_profile import op_profiles
from facebench.results.store import Store
from facebench.testing import adbd
from facebench.testing.host_benchmark import write_program

FAST = ("--min_secs=0", "--warmup_min_secs=0")

# -- captured text in the real tool's format ---------------------------------------------------------------------

TIMINGS = ("INFO: count=50 first=5120 curr=5001 min=4900 max=5400 avg=5050 std=80 p5=4950 median=5040 p95=5300\n"
           "INFO: Inference timings in us: Init: 812000, First inference: 21000, Warmup (avg): 9000, "
           "Inference (avg): 5050\n")


def gpu_log(api: str | None, done: int = 161, total: int = 161) -> str:
    lines = ["INFO: STARTING!", "INFO: Use gpu: [1]", "INFO: Created TensorFlow Lite delegate for GPU.",
             f"INFO: Replacing {done} out of {total} node(s) with delegate (TfLiteGpuDelegateV2) node, "
             f"yielding {1 if done == total else 3} partitions."]
    if api:
        lines.append(f"INFO: Initialized {dict(cl='OpenCL', gl='OpenGL')[api]}-based API.")
    lines.append("INFO: Created 1 GPU delegate kernels.")
    return "\n".join(lines) + "\n" + TIMINGS


def _profile_line(*cells: str) -> str:
    """One line of the tool's profile table: tab-separated cells right-aligned in 16 characters, Name last."""
    return "INFO: \t" + "\t".join(f"{c:>16}" for c in cells[:-1]) + "\t" + cells[-1]


HEADER = _profile_line("[node type]", "[start]", "[first]", "[avg ms]", "[%]", "[cdf%]", "[mem KB]",
                       "[times called]", "[Name]")
CONV = _profile_line("CONV_2D", "0.000", "1.220", "1.171", "61.089%", "61.089%", "0.000", "1", "[model/conv 0/Relu6]")
DW = _profile_line("DEPTHWISE_CONV_2D", "1.171", "0.700", "0.746", "38.911%", "100.000%", "0.000", "2", "[model/dw_1]")
RUN_ORDER = "\n".join([
    "INFO: Operator-wise Profiling Info for Regular Benchmark Runs:",
    "INFO: ============================== Run Order ==============================", HEADER, CONV, DW, "INFO:",
    "INFO: ============================== Top by Computation Time ==============================", HEADER, CONV, ""])


class FakeConn:
    """A connection whose shell prints canned tool output (the battery and everything else: nothing)."""

    def __init__(self, tool_output: str, status: int = 0):
        self.tool_output, self.status, self.commands = tool_output, status, []

    def shell(self, command: str, timeout_s: float | None = None):
        self.commands.append(command)
        from types import SimpleNamespace

        if "benchmark_model" in command:
            return SimpleNamespace(output=self.tool_output, status=self.status)
        return SimpleNamespace(output="", status=0)

    def check(self, command: str) -> str:
        return ""


def _measure(text: str, status: int = 0, **settings) -> tuple[Measurement, FakeConn]:
    s = BenchSettings(**{"gpu": True, "repeat": 1, "cooldown_s": 0, "thermal_wait_s": 0, "max_battery_c": None,
                         **settings})
    m = Measurement("k", "m", "0" * 64, "phone", 0, s.key())
    conn = FakeConn(text, status)
    _run_once(conn, m, "/w/benchmark_model", BenchModel("m", Path("m.tflite"), "0" * 64), Device("phone", "x:1"), s)
    return m, conn


def test_flags_follow_the_settings():
    assert BenchSettings(gpu=True, fp16=True).flags()[-1] == "--gpu_precision_loss_allowed=true"
    assert "--gpu_precision_loss_allowed=false" in BenchSettings(gpu=True, fp16=False).flags()
    auto = BenchSettings(gpu=True).flags()
    assert not any(f.startswith(("--gpu_backend", "--require_full")) for f in auto)
    forced = BenchSettings(gpu=True, gpu_backend="gl", require_full_delegation=True).flags()
    assert "--gpu_backend=gl" in forced and "--require_full_delegation=true" in forced
    cpu = BenchSettings(gpu=False, memory_pass=True, profile_pass=True)
    assert not any("gpu_precision" in f or "profiling" in f or "peak_memory" in f for f in cpu.flags())
    assert cpu.pass_flags("memory")[-1] == "--report_peak_memory_footprint=true"
    assert cpu.pass_flags("op-profile")[-1] == "--enable_op_profiling=true"
    with pytest.raises(FarmError):
        BenchSettings(gpu=False, gpu_backend="cl").flags()
    with pytest.raises(FarmError):
        BenchSettings(gpu=True, gpu_backend="vulkan").flags()


def test_backend_and_nodes_are_read_from_the_log():
    assert gpu_backend(gpu_log("cl")) == "cl" and gpu_backend(gpu_log("gl")) == "gl" and gpu_backend(TIMINGS) == ""
    out = parse(gpu_log("cl", 150, 161))
    assert (out.gpu, out.gpu_nodes, out.gpu_backend) == ("partial", (150, 161), "cl")
    m, conn = _measure(gpu_log("cl"))
    assert m.status == "ok", m.reason
    assert (m.gpu_backend_requested, m.gpu_backend_ran, m.delegated_nodes, m.total_nodes) == ("auto", "cl", 161, 161)
    assert m.precision_loss_allowed is True and "--gpu_precision_loss_allowed=true" in m.command
    assert "OpenCL" in m.processor and m.p90_ms is not None


def test_a_forced_backend_that_did_not_run_is_a_failure():
    m, _ = _measure(gpu_log("gl"), gpu_backend="cl")
    assert (m.status, m.failure, m.gpu_backend_ran) == ("failed", "gpu-backend", "gl") and "OpenGL" in m.reason
    m, _ = _measure(gpu_log(None), gpu_backend="cl")
    assert (m.status, m.failure) == ("failed", "gpu-backend") and "no 'Initialized" in m.reason
    m, _ = _measure(gpu_log("cl"), gpu_backend="cl", fp16=False)
    assert m.status == "ok" and "--gpu_backend=cl" in m.command and m.precision_loss_allowed is False


def test_partial_delegation_fails_only_when_full_delegation_is_required():
    m, _ = _measure(gpu_log("cl", 150, 161))
    assert m.status == "ok" and "partial: 150/161" in m.processor
    m, _ = _measure(gpu_log("cl", 150, 161), require_full_delegation=True)
    assert (m.status, m.failure, m.delegated_nodes, m.total_nodes) == ("failed", "gpu-partial", 150, 161)
    refused = gpu_log("cl", 150, 161).replace(TIMINGS, "ERROR: Disallowed CPU fallback detected.\n"
                                                       "ERROR: Benchmarking failed.\n")
    m, _ = _measure(refused, status=1, require_full_delegation=True)
    assert (m.status, m.failure) == ("failed", "gpu-partial")


def test_the_op_profile_table_is_parsed_by_its_header():
    rows = op_profile(RUN_ORDER)  # a build that prints [start]; the Top-by-time section is not read again
    assert [(r["node_type"], r["name"], r["avg_ms"], r["percent"], r["times_called"]) for r in rows] == [
        ("CONV_2D", "model/conv 0/Relu6", 1.171, 61.089, 1), ("DEPTHWISE_CONV_2D", "model/dw_1", 0.746, 38.911, 2)]
    assert op_profile(TIMINGS) == []


def test_passes_run_separately_with_their_own_flags():
    m, conn = _measure(gpu_log("cl") + "INFO: Overall peak memory footprint (MB) via periodic monitoring: 61.5\n"
                       + RUN_ORDER, memory_pass=True, profile_pass=True)
    tool = [c for c in conn.commands if "benchmark_model" in c]
    assert len(tool) == 3 and not any(f in tool[0] for f in ("profiling", "peak_memory"))
    assert tool[1].endswith("--report_peak_memory_footprint=true") and tool[2].endswith("--enable_op_profiling=true")
    assert m.status == "ok" and m.peak_memory_mb == 61.5 and len(m.op_profile or []) == 2
    m, _ = _measure(gpu_log("cl"), memory_pass=True)  # a pass that prints no peak fails the measurement
    assert (m.status, m.failure) == ("failed", "memory-pass") and m.median_ms is not None


# -- end to end: facebench bench --cpu --memory --op-profile against a stand-in phone --------------------------

@pytest.mark.farm
@pytest.mark.slow
def test_bench_with_memory_and_op_profile_passes_end_to_end(tmp_path, facebench_home):
    host_key = ensure_host_key(tmp_path / "adbkey")
    program = write_program(tmp_path / "bin" / "benchmark_model")
    phone = adbd.StandInDevice(tmp_path / "phone", [Path(f"{host_key}.pub").read_bytes()], faults=adbd.Faults())
    phone.start()
    try:
        inventory = tmp_path / "farm.toml"
        inventory.write_text(f'[host]\nkey = "{host_key}"\nbenchmark_model = "{program}"\n'
                             f'[devices.phone]\naddress = "{phone.address}"\nworkdir = "{phone.root / "w"}"\n')
        store = tmp_path / "results.sqlite"
        result = CliRunner().invoke(main, [
            "bench", "blazeface-short", "--devices", "phone", "--cpu", "--memory", "--op-profile", "--runs", "2",
            "--repeat", "1", "--cooldown", "0", "--thermal-wait", "0", "--inventory", str(inventory),
            "--store", str(store), *[f"--benchmark-flag={f}" for f in FAST]])
    finally:
        phone.stop()
    assert result.exit_code == 0, result.output
    with Store(store) as db:
        [record] = db.device_results()
        ops = db.device_op_profile(record["key"])
        profiles = op_profiles(db)
        latency = device_latency(db.device_results(status="ok"))
    assert record["status"] == "ok" and record["peak_memory_mb"] > 0
    assert not any(f in record["command"] for f in ("enable_op_profiling", "report_peak_memory_footprint"))
    assert record["pass_commands"]["memory"].endswith("--report_peak_memory_footprint=true")
    assert record["pass_commands"]["op-profile"].endswith("--enable_op_profiling=true")
    assert record["op_profile_rows"] == len(ops) == 2 and {op["node_type"] for op in ops} == {"SET_INPUTS", "INVOKE"}
    assert abs(sum(op["percent"] for op in ops) - 100) < 0.01 and all(op["name"].startswith("facebench stand-in")
                                                                        for op in ops)
    [(label, t)] = latency["blazeface-short"].items()
    assert t.to_dict()["peak_memory_mb"] == record["peak_memory_mb"]
    assert profiles[("blazeface-short", label)]["key"] == record["key"]
    from facebench.report.op_profile import render_op_profiles

    with Store(store) as db:
        page = render_op_profiles(db)
    assert "facebench stand-in: interpreter.invoke" in page and "Per-op profile" in page
    (tmp_path / "record.json").write_text(json.dumps({**record, "output": record["output"][-200:], "op_rows": ops},
                                                     indent=1))


@pytest.mark.parametrize("bad", ["0.1.0", "1e999", "-1.000"])
def test_a_malformed_number_in_the_op_profile_is_the_cells_garbage(bad):
    """A profile row the header matches but whose number is not one: an OutputError naming the row (the cell's
    garbage), not a ValueError or OverflowError that the runner would take for its own failure."""
    broken = RUN_ORDER.replace(_profile_line("CONV_2D", "0.000", "1.220", "1.171", "61.089%", "61.089%", "0.000", "1",
                                             "[model/conv 0/Relu6]"),
                               _profile_line("CONV_2D", "0.000", "1.220", bad, "61.089%", "61.089%", "0.000", "1",
                                             "[model/conv 0/Relu6]"))
    with pytest.raises(OutputError, match=f"malformed number '{bad}' in the op profile line"):
        op_profile(broken)


@pytest.mark.parametrize("line", [
    "INFO: Inference timings in us: Init: 1e999, First inference: 1, Warmup (avg): 1, Inference (avg): 1",
    "INFO: count=5 first=1 curr=1 min=1 max=1 avg=1 std=0 p5=1 median=1e999 p95=1",
])
def test_infinite_figures_are_garbage_not_stored_results(line):
    text = TIMINGS.replace(TIMINGS.splitlines()[1 if "Inference timings" in line else 0], line)
    with pytest.raises(OutputError, match="malformed number '1e999'"):
        parse(text)
