"""The farm runner's parallel efficiency and its own overhead, against stand-in devices in this process.

Reference: the same cells (models x repeats) on ONE stand-in device. Candidate:
those cells on each of N devices at once. Parallel efficiency = reference wall
time / candidate wall time (1.0 is perfect; the target is >= 0.8 at 8).

A phone computes on its own chip, but stand-in devices all compute on this
host, whose few cores would make 8 concurrent inferences slow for reasons that
have nothing to do with the runner. So the efficiency run uses a "phone"
whose benchmark tool spends its time off the host CPU: a script that sleeps
--phone-ms and prints the output the real stand-in printed for the same model.
The same measurement with the real stand-in (host-CPU inference, contended)
is printed too, for information.

Overhead: per (model, device), the runner's wall time beyond the benchmark
tool's own (the shell call running it), with binary and models already on
the device: connect and probe amortised, hash checks that skip the pushes,
battery temperatures, parsing and storing. Target: under 0.5 s.

    python benchmarks/farm_runner.py [--devices 8] [--models 3] [--repeat 2] [--phone-ms 1000]
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import tempfile
import time
from pathlib import Path

from facebench.farm.adb import ensure_host_key
from facebench.farm.bench import BenchSettings, resolve_models, run_bench
from facebench.farm.inventory import Device, Inventory
from facebench.results.store import Store
from facebench.testing.adbd import StandInDevice
from facebench.testing.host_benchmark import write_program


def timed_bench(models, devices, inventory, settings, key, store) -> tuple[float, list]:
    t0 = time.perf_counter()
    measured = run_bench(models, devices, inventory, settings, key, store)
    wall = time.perf_counter() - t0
    failed = [m for m in measured if m.status != "ok"]
    if failed:
        raise SystemExit(f"{len(failed)} measurements failed, first: {failed[0].reason}")
    return wall, measured


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--models", type=int, default=3, help="copies of BlazeFace short range, as distinct files")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--phone-ms", type=float, default=1000.0, help="time one simulated benchmark run takes")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="facebench-farm-bench-"))
    key = ensure_host_key(work / "adbkey")
    public = Path(f"{key}.pub").read_bytes()
    program = write_program(work / "benchmark_model")
    source = resolve_models("blazeface-short")[0]
    models = []
    for i in range(args.models):  # distinct bytes, so each is its own model on the device
        path = work / f"model{i}.tflite"
        path.write_bytes(source.path.read_bytes() + bytes(i))
        models.extend(resolve_models(str(path)))

    standins = [StandInDevice(work / f"device{i}", [public]).start() for i in range(args.devices)]
    devices = [Device(f"device{i}", address=d.address, workdir=str(d.root / "w")) for i, d in enumerate(standins)]
    store = Store(work / "results.sqlite")
    fast = ("--min_secs=0", "--warmup_min_secs=0")
    settings = BenchSettings(gpu=False, runs=5, repeat=args.repeat, cooldown_s=0, extra_flags=fast)
    cells = len(models) * args.repeat

    # overhead: one device, real stand-in inference, files pushed by a first pass
    real = Inventory(None, {d.name: d for d in devices}, key, program)
    timed_bench(models, devices[:1], real, settings, key, store)
    wall, measured = timed_bench(models, devices[:1], real, settings, key, store)
    tool = sum(m.benchmark_s for m in measured)
    overhead = (wall - tool) / cells
    print(f"overhead per (model, device), files on the device: {overhead * 1e3:.0f} ms "
          f"(wall {wall:.2f} s - benchmark tool {tool:.2f} s over {cells} cells; target < 500 ms)")

    # parallel efficiency with a phone that computes off the host CPU
    text = _sample_output(standins[0], measured[0].command)
    phone = work / "phone_benchmark_model"
    phone.write_text(f"#!/bin/sh\nsleep {args.phone_ms / 1e3:.3f}\ncat {shlex.quote(str(text))}\n")
    phone.chmod(0o755)
    simulated = Inventory(None, {d.name: d for d in devices}, key, phone)
    timed_bench(models, devices, simulated, settings, key, store)  # push the phone binary everywhere first
    reference, _ = timed_bench(models, devices[:1], simulated, settings, key, store)
    candidate, _ = timed_bench(models, devices, simulated, settings, key, store)
    print(f"reference: 1 device, {cells} cells of {args.phone_ms:.0f} ms: {reference:.2f} s")
    print(f"candidate: {args.devices} devices at once, {cells} cells each: {candidate:.2f} s")
    print(f"parallel efficiency (reference / candidate): {reference / candidate:.2f} (target >= 0.8)")

    # for information: the real stand-in, whose inference all runs on this host's CPU
    reference, _ = timed_bench(models, devices[:1], real, settings, key, store)
    candidate, _ = timed_bench(models, devices, real, settings, key, store)
    print(f"with host-CPU inference on every device (contended, information only): "
          f"{reference:.2f} s vs {candidate:.2f} s, ratio {reference / candidate:.2f}")
    for d in standins:
        d.stop()


def _sample_output(standin: StandInDevice, command: str) -> Path:
    """What the real stand-in prints for this model, saved for the simulated phone to replay."""
    out = subprocess.run(["/bin/sh", "-c", command], cwd=standin.root, env=standin.env(), capture_output=True,
                         text=True, check=True).stdout
    path = standin.root.parent / "sample_output.txt"
    path.write_text(out)
    return path


if __name__ == "__main__":
    main()
