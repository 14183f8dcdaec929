"""The farm runner: TFLite's benchmark tool on many phones at once, surviving what phones do.

One worker thread per device; on a device, models run in series (the
binary and each model pushed only when the device's copy differs), with a
cooldown between runs, the battery temperature read before and after each,
and K repeats for a spread. Each (model, device, repeat) is a
:class:`Measurement`, stored as soon as it ends, so an interrupted run keeps
what it measured and ``resume=True`` does only what is missing.

Pushes are keyed by the remote path (``<workdir>/models/<sha256[:12]>-<name>.tflite``,
one file per model name, so the command line says which model ran): two
models with the same bytes each get their own file; an unchanged file is not
sent again (``push_if_changed`` compares size and hash on the device).

``shuffle_seed`` interleaves models and repeats in a seeded random order per
device (``random.Random(f"{seed}/{device}")``), spreading thermal drift over
all models instead of loading it onto the last; the seed and each cell's place
in its device's order are stored with the measurement. Cooldowns are as without.

Besides the median each measurement stores p5/p90/p95 (p90: MLPerf Mobile's
latency figure), init and first-inference time, in ms; where the percentiles
came from (per-run samples, or the tool's statistics line) is
``percentiles_from`` (see :mod:`facebench.farm.benchmark_output`).

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
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from facebench.assets import sha256_file
from facebench.errors import FacebenchError
from facebench.farm import conditions
from facebench.farm.adb import Connection, DeviceError, quote, session
from facebench.farm.benchmark_output import OutputError, full_delegation_refused, gpu_backend, gpu_outcome, parse
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
    timeout_s: float = 600.0  # one benchmark run; the tool prints nothing while it measures
    connect_timeout_s: float = 10.0  # connecting and authenticating (an unauthorised phone waits this long)
    extra_flags: tuple[str, ...] = ()  # more of the tool's own flags, e.g. --min_secs=0
    # measurement conditions (facebench.farm.conditions)
    thermal_wait_s: float = 120.0  # wait at most this for thermal status 0 and a cool battery; 0: only record
    max_battery_c: float | None = 40.0  # the battery must be below this to count as cool; None: not checked
    cores: str | None = None  # big | little | hex mask: taskset the tool onto those CPUs; None or all: not pinned
    # GPU and passes
    gpu_backend: str = "auto"  # auto (the tool picks; not passed) | cl | gl (forced: another API is a failure)
    require_full_delegation: bool = False  # GPU only: a partly delegated graph is a failure, not a CPU mix
    memory_pass: bool = False  # a separate run after the timed one with --report_peak_memory_footprint
    profile_pass: bool = False  # a separate run after the timed one with --enable_op_profiling

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
        if self.gpu_backend not in ("auto", "cl", "gl"):
            raise FarmError(f"gpu_backend must be auto, cl or gl, not {self.gpu_backend!r}")
        if not self.gpu and (self.gpu_backend != "auto" or self.require_full_delegation):
            raise FarmError("a GPU backend and --require-full-delegation are for GPU runs (drop --cpu)")
        if self.gpu:  # always explicit: the tool's default (true = fp16) differs between builds' docs and users
            flags.append(f"--gpu_precision_loss_allowed={'true' if self.fp16 else 'false'}")
            if self.gpu_backend != "auto":
                flags.append(f"--gpu_backend={self.gpu_backend}")
            if self.require_full_delegation:
                flags.append("--require_full_delegation=true")
        return flags + list(self.extra_flags)  # the timed run's flags: never a profiling or memory flag

    def pass_flags(self, kind: str) -> list[str]:
        """The flags of a separate pass after the timed run: ``memory`` or ``op-profile``."""
        extra = {"memory": "--report_peak_memory_footprint=true", "op-profile": "--enable_op_profiling=true"}[kind]
        return self.flags() + [extra]

    def key(self) -> str:
        """What the numbers depend on (not the cooldown, timeout or repeat count)."""
        cores = conditions.normalise_cores(self.cores)  # pinned: another measurement; unpinned keys unchanged
        return json.dumps({"flags": self.flags(), **({"cores": cores} if cores else {})}, sort_keys=True)

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
    p5_ms: float | None = None
    p90_ms: float | None = None  # MLPerf Mobile's figure: the 90th percentile of the measured runs
    p95_ms: float | None = None
    init_ms: float | None = None
    first_ms: float | None = None  # the first inference (the warmup's first run)
    percentiles_from: str = ""  # samples | tool | tool-mean
    shuffle_seed: int | None = None  # set when the device's cells ran in a seeded random order
    position: int | None = None  # the cell's place in its device's order (0-based)
    result: dict | None = None
    device_info: dict = field(default_factory=dict)
    temperature_before_c: float | None = None
    temperature_after_c: float | None = None
    # conditions (facebench.farm.conditions)
    thermal_before: int | None = None  # dumpsys thermalservice status as the run started: 0 none .. 6 shutdown
    thermal_after: int | None = None
    waited_s: float = 0.0  # seconds spent waiting for the phone to cool before the run
    started_hot: bool = False  # still hot when the wait's cap passed: measured, and labelled in ``processor``
    core_mask: str | None = None  # the taskset mask (hex) the tool ran under; None: not pinned
    benchmark_s: float = 0.0
    command: str = ""
    output: str = ""  # what the timed run printed, its last 100,000 characters
    started: float = 0.0
    finished: float = 0.0
    # GPU and passes
    precision_loss_allowed: bool | None = None  # GPU runs: the --gpu_precision_loss_allowed passed (true = fp16)
    gpu_backend_requested: str = ""  # GPU runs: auto | cl | gl
    gpu_backend_ran: str = ""  # cl | gl as the tool's log says ("" when it does not)
    delegated_nodes: int | None = None  # "Replacing X out of Y node(s)": X
    total_nodes: int | None = None  # ... and Y
    peak_memory_mb: float | None = None  # the memory pass's periodic peak (a separate run after the timed one)
    op_profile: list[dict] | None = None  # the profiling pass's Run Order rows (stored in their own table)
    pass_commands: dict = field(default_factory=dict)  # memory / op-profile: the command each pass ran


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
        with session(device, key, connect_timeout_s=timeout_s, auth_timeout_s=timeout_s) as conn:
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
    try:  # measurement conditions: the cores (a device that cannot be pinned fails this cell), then a cool phone
        m.core_mask = conditions.core_mask(conn, settings.cores)
    except conditions.ConditionError as exc:
        m.failure, m.reason = "cores", str(exc)
        return
    ready = conditions.wait_until_cool(conn, settings.thermal_wait_s, settings.max_battery_c)
    m.thermal_before, m.waited_s, m.started_hot = ready.status, round(ready.waited_s, 3), ready.hot
    m.temperature_before_c = battery_temperature(conn)
    m.command = " ".join([quote(binary), quote(f"--graph={model.remote_path(device)}"),
                          *map(quote, settings.flags())])
    m.command = conditions.taskset_prefix(m.core_mask) + m.command  # measurement conditions: pinned to the chosen cores
    t0 = time.perf_counter()
    result = conn.shell(m.command, timeout_s=settings.timeout_s)
    m.benchmark_s = time.perf_counter() - t0
    m.temperature_after_c = battery_temperature(conn)
    m.thermal_after = conditions.thermal_status(conn)  # measurement conditions
    m.output = result.output[-100_000:]
    if settings.gpu:
        m.precision_loss_allowed, m.gpu_backend_requested = settings.fp16, settings.gpu_backend
        m.gpu_backend_ran = gpu_backend(result.output)
        m.delegated_nodes, m.total_nodes = gpu_outcome(result.output)[1] or (None, None)
    refused = settings.gpu and settings.require_full_delegation and full_delegation_refused(result.output)
    try:
        out = parse(result.output)
    except OutputError as exc:
        gpu_failed = settings.gpu and "GPU delegate" in result.output
        m.failure = ("gpu-partial" if refused else "gpu-delegate" if gpu_failed
                     else "exit" if result.status else "garbage")
        last = [line for line in result.output.strip().splitlines() if line.strip()][-3:]
        m.reason = (f"exit status {result.status}: " + " | ".join(last)) if result.status else str(exc)
        return
    m.result = out.to_dict()
    pct = out.percentiles
    m.p5_ms, m.p90_ms, m.p95_ms = (pct[k] / 1e3 if k in pct else None for k in ("p5", "p90", "p95"))
    m.init_ms, m.first_ms, m.percentiles_from = out.init_us / 1e3, out.first_us / 1e3, out.percentiles_from
    host = out.host_stand_in or bool(m.device_info.get("host_stand_in"))
    m.processor = settings.processor(host)
    forced = settings.gpu and settings.gpu_backend != "auto"
    if result.status:
        m.failure, m.reason = "exit", f"exit status {result.status} after printing its timings"
    elif settings.gpu and out.gpu not in ("applied", "partial"):
        m.failure, m.reason = "gpu-delegate", f"GPU delegate {out.gpu}: {out.gpu_message or 'no delegate line'}"
    elif settings.gpu and settings.require_full_delegation and (out.gpu == "partial" or refused):
        nodes = f"{m.delegated_nodes} of {m.total_nodes} nodes" if m.total_nodes else "part of the graph"
        m.failure, m.reason = "gpu-partial", f"--require_full_delegation: the GPU delegate took only {nodes}"
    elif forced and out.gpu_backend != settings.gpu_backend:
        ran = f"the log shows Open{out.gpu_backend.upper()}" if out.gpu_backend else \
            "no 'Initialized Open..-based API' line in the log"
        m.failure, m.reason = "gpu-backend", f"GPU backend {settings.gpu_backend} was forced but {ran}"
    else:
        if settings.gpu and out.gpu_backend:
            m.processor += f" Open{out.gpu_backend.upper()}"
        if settings.gpu and out.gpu == "partial":
            nodes = f": {out.gpu_nodes[0]}/{out.gpu_nodes[1]} nodes" if out.gpu_nodes else ""
            m.processor += f" (partial{nodes})"
        m.status, m.median_ms = "ok", out.median_us / 1e3
    # measurement conditions: a hot start or a pinned run never pools with a cool, unpinned one
    cores = conditions.normalise_cores(settings.cores)
    m.processor += (f", cores {cores if cores == m.core_mask else f'{cores} {m.core_mask}'}" if m.core_mask else "")
    m.processor += ready.label()
    if m.status == "ok":  # GPU and passes: memory / op profile, separate runs after the timed one
        run_passes(conn, m, binary, model, device, settings)


def run_passes(conn: Connection, m: Measurement, binary: str, model: BenchModel, device: Device,
               settings: BenchSettings) -> None:
    """The memory and op-profile passes: separate runs after the timed one (both perturb timing), same settings.

    Their figures join ``m``; a pass that fails (or prints no peak / no profile) fails the measurement with
    kind ``memory-pass`` / ``op-profile-pass`` (its timings kept), so ``--resume`` redoes it."""
    for kind, wanted in (("memory", settings.memory_pass), ("op-profile", settings.profile_pass)):
        if not wanted:
            continue
        command = " ".join([quote(binary), quote(f"--graph={model.remote_path(device)}"),
                            *map(quote, settings.pass_flags(kind))])
        command = conditions.taskset_prefix(m.core_mask) + command  # the same cores as the timed run
        m.pass_commands[kind] = command
        try:
            result = conn.shell(command, timeout_s=settings.timeout_s)
        except DeviceError:
            m.status = "failed"  # the caller records the device's reason
            raise
        why = f"exit status {result.status}" if result.status else ""
        try:
            out = parse(result.output)
        except OutputError as exc:
            why = why or str(exc)
        else:
            if settings.gpu and out.gpu not in ("applied", "partial"):
                why = why or f"GPU delegate {out.gpu}"
            elif kind == "memory" and "peak" not in out.memory_mb:
                why = why or "no 'Overall peak memory footprint' line"
            elif kind == "op-profile" and not out.op_profile:
                why = why or "no 'Run Order' op profile table"
        if why:
            last = " | ".join([line for line in result.output.strip().splitlines() if line.strip()][-2:])
            m.status, m.failure, m.reason = "failed", f"{kind}-pass", f"{kind} pass: {why}: {last}"[:2000]
            return
        if kind == "memory":
            m.peak_memory_mb = out.memory_mb["peak"]
        else:
            m.op_profile = out.op_profile


def _session(device: Device, key: Path, settings: BenchSettings, binary: Path, remote_binary: str):
    """A connection that is probed and has the tool on the device, or a DeviceError (and nothing left open)."""
    conn = session(device, key, settings.connect_timeout_s, settings.connect_timeout_s)
    conn.connect()
    try:
        info = probe(conn)
        conn.push_if_changed(binary, remote_binary, mode=0o755)
    except DeviceError:
        conn.close()
        raise
    return conn, info


def cell_order(cells: list[tuple[BenchModel, int]], device: Device,
               shuffle_seed: int | None) -> list[tuple[BenchModel, int]]:
    """The device's cells in running order: as given, or shuffled by a generator seeded per device."""
    if shuffle_seed is None:
        return list(cells)
    order = list(cells)
    random.Random(f"{shuffle_seed}/{device.name}").shuffle(order)
    return order


def bench_device(device: Device, cells: list[tuple[BenchModel, int]], settings: BenchSettings, binary: Path,
                 key: Path, emit: Callable[[Measurement], None], shuffle_seed: int | None = None) -> None:
    """Run ``cells`` (model, repeat) on one device in order, emitting one Measurement each."""
    conn: Connection | None = None
    info: dict = {}
    remote_binary = f"{device.workdir}/benchmark_model"
    pushed: set[str] = set()
    ran_before = False
    for i, (model, repeat) in enumerate(cells):
        m = Measurement(measurement_key(model, device, settings, repeat), model.name, model.sha256, device.name,
                        repeat, settings.key(), started=time.time(), shuffle_seed=shuffle_seed, position=i)
        try:
            if conn is None:
                conn, info = _session(device, key, settings, binary, remote_binary)
                pushed.clear()
            m.device_info = info
            remote = model.remote_path(device)
            if remote not in pushed:  # by path: two models with the same bytes still each need their file
                conn.push_if_changed(model.path, remote)
                pushed.add(remote)
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
                for j, (model_left, repeat_left) in enumerate(cells[i + 1:], i + 1):
                    emit(Measurement(measurement_key(model_left, device, settings, repeat_left), model_left.name,
                                     model_left.sha256, device.name, repeat_left, settings.key(), failure=exc.kind,
                                     reason=f"not run: {exc}", started=time.time(), finished=time.time(),
                                     shuffle_seed=shuffle_seed, position=j))
                return
        m.finished = time.time()
        emit(m)
    if conn is not None:
        conn.close()


def run_bench(models: list[BenchModel], devices: list[Device], inventory: Inventory, settings: BenchSettings,
              key: Path, store=None, resume: bool = False,
              progress: Callable[[Measurement], None] | None = None,
              shuffle_seed: int | None = None) -> list[Measurement]:
    """Every (model, repeat) on every device, one worker per device; results stored as they arrive.

    ``shuffle_seed``: run each device's cells in a seeded random order (:func:`cell_order`), not model by model."""
    binaries = {d.name: inventory.binary_for(d) for d in devices}  # a missing binary stops before anything runs
    done = set()
    if resume and store is not None:
        done = {r["key"] for r in store.device_results(status="ok")}
    plan = {d.name: cell_order([(m, r) for m in models for r in range(settings.repeat)
                                if measurement_key(m, d, settings, r) not in done], d, shuffle_seed)
            for d in devices}
    results: queue.Queue[Measurement | None] = queue.Queue()

    def worker(device: Device) -> None:
        cells = plan[device.name]
        emitted: set[str] = set()

        def emit(m: Measurement) -> None:
            emitted.add(m.key)
            results.put(m)

        try:
            bench_device(device, cells, settings, binaries[device.name], key, emit, shuffle_seed)
        except Exception as exc:  # noqa: BLE001 - a runner bug on one device must not lose the others
            for model, repeat in cells:
                k = measurement_key(model, device, settings, repeat)
                if k not in emitted:
                    results.put(Measurement(k, model.name, model.sha256, device.name, repeat, settings.key(),
                                            failure="runner", reason=f"runner error: {type(exc).__name__}: {exc}",
                                            started=time.time(), finished=time.time(), shuffle_seed=shuffle_seed))
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
