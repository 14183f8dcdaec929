"""The farm runner: TFLite's benchmark tool on many phones at once, surviving what phones do.

One worker thread per device; on a device, models run in series (the
binary and each model pushed only when the device's copy differs), with a
cooldown between runs, the battery temperature read before and after each,
and K repeats for a spread. Each (model, device, repeat) is a
:class:`Measurement`, stored as soon as it ends, so an interrupted run keeps
what it measured and ``resume=True`` does only what is missing.

A device that is unreachable, unauthorised, drops, stays silent past its
timeout, exits non-zero or prints garbage fails its own cells, with the
reason; the other devices carry on. After a dropped connection the worker
reconnects once for the next cell; if the device is gone, the rest of its
cells fail with that reason. A GPU run whose delegate did not take the graph
is a failure of its own kind, never a CPU figure under a GPU label; results
from the host stand-in are labelled host CPU whatever was asked.
"""

from __future__ import annotations

import hashlib
import json
import queue
import re
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from facebench.assets import sha256_file
from facebench.errors import FacebenchError
from facebench.farm.adb import Connection, DeviceError, quote
from facebench.farm.benchmark_output import OutputError, parse
from facebench.farm.inventory import Device, Inventory

_EXTRA_FLAG = re.compile(r"^--[a-z][a-z0-9_]*=[A-Za-z0-9_.,:+-]*$")
PROBE_PROPERTIES = {"model": "ro.product.model", "platform": "ro.board.platform", "soc": "ro.soc.model",
                    "fingerprint": "ro.build.fingerprint", "abi": "ro.product.cpu.abi",
                    "host_stand_in": "ro.facebench.host_stand_in"}


class FarmError(FacebenchError, ValueError):
    """The request cannot start (unknown model, no binary configured, bad flag)."""


@dataclass(frozen=True)
class BenchSettings:
    gpu: bool = True
    fp16: bool = True
    threads: int | None = None
    runs: int = 50
    warmup: int = 1
    cooldown_s: float = 5.0
    repeat: int = 3
    profile: bool = False
    timeout_s: float = 600.0  # one benchmark run; the tool prints nothing while it measures
    connect_timeout_s: float = 10.0  # connecting and authenticating (an unauthorised phone waits this long)
    extra_flags: tuple[str, ...] = ()  # more of the tool's own flags, e.g. --min_secs=0

    def __post_init__(self):
        if (self.runs < 1 or self.warmup < 0 or self.repeat < 1 or self.cooldown_s < 0 or self.timeout_s <= 0
                or self.connect_timeout_s <= 0):
            raise FarmError("runs and repeat must be >= 1; warmup, cooldown >= 0; timeouts > 0")
        if self.threads is not None and self.threads < 1:
            raise FarmError("threads must be >= 1")
        bad = [f for f in self.extra_flags if not _EXTRA_FLAG.match(f)]
        if bad:
            raise FarmError(f"benchmark flags must look like --name=value (letters, digits, . , : + -): {bad}")

    def flags(self) -> list[str]:
        flags = [f"--num_runs={self.runs}", f"--warmup_runs={self.warmup}"]
        if self.threads:
            flags.append(f"--num_threads={self.threads}")
        flags.append(f"--use_gpu={'true' if self.gpu else 'false'}")
        if self.gpu:
            flags.append(f"--gpu_precision_loss_allowed={'true' if self.fp16 else 'false'}")
        if self.profile:
            flags.append("--enable_op_profiling=true")
        return flags + list(self.extra_flags)

    def key(self) -> str:
        """What the numbers depend on (not the cooldown, timeout or repeat count)."""
        return json.dumps({"flags": self.flags()}, sort_keys=True)

    def processor(self, host_stand_in: bool) -> str:
        threads = f", {self.threads} threads" if self.threads else ""
        if host_stand_in:
            return f"host CPU{threads}"
        return f"GPU {'fp16' if self.fp16 else 'fp32'}" if self.gpu else f"CPU{threads}"


@dataclass(frozen=True)
class BenchModel:
    name: str
    path: Path
    sha256: str

    def remote_path(self, device: Device) -> str:
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", self.name)
        return f"{device.workdir}/models/{self.sha256[:12]}-{safe}.tflite"


def resolve_models(spec: str) -> list[BenchModel]:
    """A ``.tflite`` path, or a registered model: each of its card's ``tflite*`` artifacts."""
    from facebench import assets
    from facebench.registry import RegistryError, resolve

    if spec.endswith(".tflite"):
        path = Path(spec)
        if not path.is_file():
            raise FarmError(f"{spec}: no such file")
        return [BenchModel(path.stem, path, sha256_file(path))]
    try:
        card = resolve(spec).card
    except RegistryError as exc:
        raise FarmError(str(exc)) from None
    parts = {k: v for k, v in card.artifacts.items() if k.startswith("tflite")}
    if not parts:
        raise FarmError(f"model {spec}: its card has no .tflite artifact ({', '.join(card.artifacts)}); "
                        "export one and bench the .tflite path")
    models = []
    for key, artifact in parts.items():
        path = assets.asset_path(artifact) if artifact in assets.ASSETS else Path(artifact)
        if not path.is_file():
            raise FarmError(f"model {spec}: artifact {key} ({artifact}) is not a file")
        name = spec if key == "tflite" else f"{spec}:{key}"
        models.append(BenchModel(name, path, sha256_file(path)))
    return models


@dataclass
class Measurement:
    """One (model, device, repeat): the parsed timings, or the reason it failed."""

    key: str
    model: str
    model_sha256: str
    device: str
    repeat: int
    settings: str
    status: str = "failed"  # ok | failed
    failure: str = ""  # a DeviceError kind, or "gpu-delegate"
    reason: str = ""
    processor: str = ""
    median_ms: float | None = None
    result: dict | None = None
    device_info: dict = field(default_factory=dict)
    temperature_before_c: float | None = None
    temperature_after_c: float | None = None
    benchmark_s: float = 0.0
    command: str = ""
    output: str = ""  # what the tool printed (the op profile with --profile), its last 100,000 characters
    started: float = 0.0
    finished: float = 0.0


def measurement_key(model: BenchModel, device: Device, settings: BenchSettings, repeat: int) -> str:
    payload = json.dumps([model.name, model.sha256, device.name, settings.key(), repeat])
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def battery_temperature(conn: Connection) -> float | None:
    """Battery temperature in °C (dumpsys reports tenths), or None when the device does not say."""
    try:
        out = conn.shell("dumpsys battery | grep -m1 temperature").output
    except DeviceError as exc:
        if exc.kind in ("dropped", "timeout"):
            raise
        return None
    match = re.search(r"temperature:\s*(-?\d+)", out)
    return int(match.group(1)) / 10 if match else None


def probe(conn: Connection) -> dict:
    """What identifies a result: properties, ABI, the GPU renderer and the battery temperature."""
    script = "; ".join(f"echo {k}=$(getprop {p})" for k, p in PROBE_PROPERTIES.items())
    script += ("; echo gpu=$(dumpsys SurfaceFlinger | grep -m1 GLES)"
               "; echo battery=$(dumpsys battery | grep -m1 temperature)")
    info: dict = {}
    for line in conn.check(script).splitlines():
        name, sep, value = line.partition("=")
        if sep and name in {*PROBE_PROPERTIES, "gpu", "battery"}:
            info[name] = value.strip()
    info["gpu"] = info.get("gpu", "").removeprefix("GLES:").strip()
    temp = re.search(r"-?\d+", info.pop("battery", ""))
    info["battery_c"] = int(temp.group()) / 10 if temp else None
    info["host_stand_in"] = info.get("host_stand_in") == "1"
    return info


def probe_device(device: Device, key: Path, timeout_s: float = 5.0) -> dict:
    """Probe one device; an unreachable or unauthorised one is a record saying so, not an error."""
    record = {"name": device.name, "address": device.where, "tags": list(device.tags),
              "reachable": False, "authorised": False, "error": ""}
    try:
        with Connection(device, key, connect_timeout_s=timeout_s, auth_timeout_s=timeout_s) as conn:
            record.update(reachable=True, authorised=True, **probe(conn))
    except DeviceError as exc:
        record["reachable"] = exc.kind not in ("unreachable",)
        record["error"] = str(exc)
    return record


def probe_devices(devices: list[Device], key: Path, timeout_s: float = 5.0) -> list[dict]:
    results: dict[str, dict] = {}
    threads = [threading.Thread(target=lambda d=d: results.__setitem__(d.name, probe_device(d, key, timeout_s)))
               for d in devices]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [results[d.name] for d in devices]


def _run_once(conn: Connection, m: Measurement, binary: str, model: BenchModel, device: Device,
              settings: BenchSettings) -> None:
    m.temperature_before_c = battery_temperature(conn)
    m.command = " ".join([quote(binary), quote(f"--graph={model.remote_path(device)}"),
                          *map(quote, settings.flags())])
    t0 = time.perf_counter()
    result = conn.shell(m.command, timeout_s=settings.timeout_s)
    m.benchmark_s = time.perf_counter() - t0
    m.temperature_after_c = battery_temperature(conn)
    m.output = result.output[-100_000:]
    try:
        out = parse(result.output)
    except OutputError as exc:
        gpu_failed = settings.gpu and "GPU delegate" in result.output
        m.failure = "gpu-delegate" if gpu_failed else ("exit" if result.status else "garbage")
        last = [line for line in result.output.strip().splitlines() if line.strip()][-3:]
        m.reason = (f"exit status {result.status}: " + " | ".join(last)) if result.status else str(exc)
        return
    m.result = out.to_dict()
    host = out.host_stand_in or bool(m.device_info.get("host_stand_in"))
    m.processor = settings.processor(host)
    if result.status:
        m.failure, m.reason = "exit", f"exit status {result.status} after printing its timings"
    elif settings.gpu and out.gpu not in ("applied", "partial"):
        m.failure, m.reason = "gpu-delegate", f"GPU delegate {out.gpu}: {out.gpu_message or 'no delegate line'}"
    else:
        if settings.gpu and out.gpu == "partial":
            nodes = f": {out.gpu_nodes[0]}/{out.gpu_nodes[1]} nodes" if out.gpu_nodes else ""
            m.processor += f" (partial{nodes})"
        m.status, m.median_ms = "ok", out.median_us / 1e3


def _session(device: Device, key: Path, settings: BenchSettings, binary: Path, remote_binary: str):
    """A connection that is probed and has the tool on the device, or a DeviceError (and nothing left open)."""
    conn = Connection(device, key, settings.connect_timeout_s, settings.connect_timeout_s)
    conn.connect()
    try:
        info = probe(conn)
        conn.push_if_changed(binary, remote_binary, mode=0o755)
    except DeviceError:
        conn.close()
        raise
    return conn, info


def bench_device(device: Device, cells: list[tuple[BenchModel, int]], settings: BenchSettings, binary: Path,
                 key: Path, emit: Callable[[Measurement], None]) -> None:
    """Run ``cells`` (model, repeat) on one device in order, emitting one Measurement each."""
    conn: Connection | None = None
    info: dict = {}
    remote_binary = f"{device.workdir}/benchmark_model"
    pushed: set[str] = set()
    ran_before = False
    for i, (model, repeat) in enumerate(cells):
        m = Measurement(measurement_key(model, device, settings, repeat), model.name, model.sha256, device.name,
                        repeat, settings.key(), started=time.time())
        try:
            if conn is None:
                conn, info = _session(device, key, settings, binary, remote_binary)
                pushed.clear()
            m.device_info = info
            if model.sha256 not in pushed:
                conn.push_if_changed(model.path, model.remote_path(device))
                pushed.add(model.sha256)
            if ran_before and settings.cooldown_s:
                time.sleep(settings.cooldown_s)
            ran_before = True
            _run_once(conn, m, remote_binary, model, device, settings)
        except DeviceError as exc:
            m.failure, m.reason = exc.kind, str(exc)
            if conn is not None and not conn.connected:  # the session died with it: reconnect for the next cell
                conn = None
            if exc.kind in ("unreachable", "unauthorised"):
                m.finished = time.time()
                emit(m)
                for model_left, repeat_left in cells[i + 1:]:
                    emit(Measurement(measurement_key(model_left, device, settings, repeat_left), model_left.name,
                                     model_left.sha256, device.name, repeat_left, settings.key(), failure=exc.kind,
                                     reason=f"not run: {exc}", started=time.time(), finished=time.time()))
                return
        m.finished = time.time()
        emit(m)
    if conn is not None:
        conn.close()


def run_bench(models: list[BenchModel], devices: list[Device], inventory: Inventory, settings: BenchSettings,
              key: Path, store=None, resume: bool = False,
              progress: Callable[[Measurement], None] | None = None) -> list[Measurement]:
    """Every (model, repeat) on every device, one worker per device; results stored as they arrive."""
    binaries = {d.name: inventory.binary_for(d) for d in devices}  # a missing binary stops before anything runs
    done = set()
    if resume and store is not None:
        done = {r["key"] for r in store.device_results(status="ok")}
    plan = {d.name: [(m, r) for m in models for r in range(settings.repeat)
                     if measurement_key(m, d, settings, r) not in done] for d in devices}
    results: queue.Queue[Measurement | None] = queue.Queue()

    def worker(device: Device) -> None:
        cells = plan[device.name]
        emitted: set[str] = set()

        def emit(m: Measurement) -> None:
            emitted.add(m.key)
            results.put(m)

        try:
            bench_device(device, cells, settings, binaries[device.name], key, emit)
        except Exception as exc:  # noqa: BLE001 - a runner bug on one device must not lose the others
            for model, repeat in cells:
                k = measurement_key(model, device, settings, repeat)
                if k not in emitted:
                    results.put(Measurement(k, model.name, model.sha256, device.name, repeat, settings.key(),
                                            failure="runner", reason=f"runner error: {type(exc).__name__}: {exc}",
                                            started=time.time(), finished=time.time()))
        finally:
            results.put(None)

    workers = [threading.Thread(target=worker, args=(d,), daemon=True, name=f"bench-{d.name}")
               for d in devices if plan[d.name]]
    for w in workers:
        w.start()
    measured, running = [], len(workers)
    while running:
        m = results.get()
        if m is None:
            running -= 1
            continue
        if store is not None:
            store.put_device_result(asdict(m))
        measured.append(m)
        if progress is not None:
            progress(m)
    return measured
