"""``facebench devices`` and ``facebench bench``: the phone farm."""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict
from pathlib import Path

import click

from facebench.cli.main import STORE, STORE_HELP, main
from facebench.paths import default_store_path


def _inventory(path: Path | None):
    from facebench.farm.inventory import InventoryError, default_inventory_path, load_inventory

    where = Path(path) if path is not None else default_inventory_path()
    if not where.exists():  # the first thing a newcomer meets: say how to make one
        example = Path(__file__).resolve().parents[2] / "devices" / "farm.example.toml"
        shown = example if example.exists() else Path("devices/farm.example.toml")
        given = ("named by --inventory" if path is not None
                 else "the default: $FACEBENCH_DEVICES, else devices/farm.toml")
        raise InventoryError(
            f"{where}: no inventory file ({given}). Copy the example, {shown}, to devices/farm.toml and list "
            "your phones in it, or name an inventory with --inventory PATH or $FACEBENCH_DEVICES "
            "(the format: devices/README.md)")
    return load_inventory(where)


def _host_key(option: Path | None, inventory) -> Path:
    from facebench.farm.adb import default_key_path, ensure_host_key

    path = Path(option or inventory.key or default_key_path()).expanduser()
    if not path.exists():
        click.echo(f"created the host's ADB key {path} (0600); each phone asks once to allow it", err=True)
    return ensure_host_key(path)


_INVENTORY_OPTION = click.option("--inventory", type=click.Path(path_type=Path), default=None,
                                 help="The farm's TOML file (default: $FACEBENCH_DEVICES or devices/farm.toml).")
_KEY_OPTION = click.option("--key", type=click.Path(path_type=Path), default=None,
                           help="The host's ADB private key (default: [host] key, or ~/.android/adbkey).")


@main.group("devices")
def devices_cmd():
    """The phone farm: its inventory and what each phone is."""


@devices_cmd.command("list")
@_INVENTORY_OPTION
@click.option("--json", "as_json", is_flag=True)
def devices_list(inventory, as_json):
    """The devices in the inventory (no connection is made)."""
    inv = _inventory(inventory)
    if as_json:
        click.echo(json.dumps([{**asdict(d), "benchmark_model": str(d.benchmark_model or "")}
                               for d in inv.devices.values()], indent=2))
        return
    click.echo(f"{'name':<16} {'address':<24} {'workdir':<28} tags")
    for d in inv.devices.values():
        click.echo(f"{d.name:<16} {d.where:<24} {d.workdir:<28} {', '.join(d.tags)}")


@devices_cmd.command("probe")
@click.argument("names", nargs=-1)
@_INVENTORY_OPTION
@_KEY_OPTION
@click.option("--timeout", type=float, default=5.0, show_default=True, help="Seconds to connect and authenticate.")
@click.option("--store", type=STORE, default=None, envvar="FACEBENCH_STORE", help=STORE_HELP)
@click.option("--json", "as_json", is_flag=True)
def devices_probe(names, inventory, key, timeout, store, as_json):
    """Connect to each device (all by default) and record what identifies its results.

    Unreachable and unauthorised devices are reported, not fatal.
    """
    from facebench.farm.bench import probe_devices
    from facebench.results.store import Store

    inv = _inventory(inventory)
    chosen = inv.select(names)
    records = probe_devices(chosen, _host_key(key, inv), timeout)
    with Store(store or default_store_path()) as db:
        for r in records:
            if r["authorised"]:
                db.put_probe(r["name"], r)
    if as_json:
        click.echo(json.dumps(records, indent=2))
    else:
        for r in records:
            if not r["authorised"]:
                state = "unauthorised" if r["reachable"] else "unreachable"
                click.echo(f"{r['name']:<16} {state:<13} {r['error']}")
                continue
            battery = f"{r['battery_c']:.1f} C" if r["battery_c"] is not None else "?"
            click.echo(f"{r['name']:<16} {'ok':<13} {r['model']} | {r['platform']} {r['soc']} | {r['abi']} | "
                       f"GPU {r['gpu'] or '?'} | battery {battery}"
                       + (" | host stand-in" if r["host_stand_in"] else ""))
            click.echo(f"{'':<30} {r['fingerprint']}")
    if not any(r["reachable"] for r in records):
        click.echo(f"no device was reachable (of {len(records)})", err=True)
        sys.exit(1)


@devices_cmd.command("discover")
@click.option("--server", "servers", multiple=True, metavar="HOST[:PORT]",
              help="An adb server to ask (repeatable; default: the local one, 127.0.0.1:5037).")
@click.option("--timeout", type=float, default=5.0, show_default=True, help="Seconds for each server and device.")
@click.option("--json", "as_json", is_flag=True)
def devices_discover(servers, timeout, as_json):
    """List what adb servers see (serial, state, model) and print inventory lines to paste.

    Exits non-zero when no server answered.
    """
    import re

    from facebench.farm.adb import DeviceError
    from facebench.farm.adb_server import discover
    from facebench.farm.inventory import LOCAL_SERVER, split_server

    found, answered = [], 0
    for spec in servers or (LOCAL_SERVER,):
        try:
            host, port = split_server(spec)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--server") from None
        try:
            found += discover(f"{host}:{port}", timeout)
            answered += 1
        except DeviceError as exc:
            click.echo(str(exc), err=True)
    if as_json:
        click.echo(json.dumps(found, indent=2))
    else:
        click.echo(f"{'serial':<24} {'state':<13} {'server':<22} model")
        for r in found:
            click.echo(f"{r['serial']:<24} {r['state']:<13} {r['server']:<22} {r['model'] or r.get('error', '')}")
        if found:
            click.echo("\n# inventory lines for devices/farm.toml")
        taken: set[str] = set()
        for r in found:
            base = re.sub(r"[^A-Za-z0-9._-]+", "-", r["model"] or r["serial"]).strip("-._").lower() or "device"
            name, k = base, 1
            while name in taken:  # two phones of one model: a TOML table may be declared once
                k += 1
                name = f"{base}-{k}"
            taken.add(name)
            click.echo(f"\n[devices.{name}]" + ("" if r["state"] == "device" else f"  # state: {r['state']}"))
            if r["server"] != LOCAL_SERVER:
                click.echo(f'server = "{r["server"]}"')
            click.echo(f"serial = {json.dumps(r['serial'])}")
    if not answered:
        sys.exit(1)


def _bench_line(m) -> str:
    if m.status != "ok":
        return f"[{m.device}] {m.model} #{m.repeat + 1}: FAILED ({m.failure}) {m.reason}"
    temps = ""
    if m.temperature_before_c is not None and m.temperature_after_c is not None:
        temps = f", battery {m.temperature_before_c:.1f}->{m.temperature_after_c:.1f} C"
    p90 = f", p90 {m.p90_ms:.3f}" if m.p90_ms is not None else ""
    init = f", init {m.init_ms:.1f}, first {m.first_ms:.3f} ms" if m.init_ms is not None else ""
    return f"[{m.device}] {m.model} #{m.repeat + 1}: {m.median_ms:.3f} ms median{p90}{init} ({m.processor}{temps})"


def _battery_limit(_ctx, _param, value: str) -> float | None:
    if value.strip().lower() in ("off", "none"):
        return None
    try:
        limit = float(value)
    except ValueError:
        limit = math.nan
    if not math.isfinite(limit):  # nan would switch the check off silently, -inf make every run hot
        raise click.BadParameter(f"{value!r} is not a temperature in degrees Celsius or 'off'")
    return limit


def _cores(_ctx, _param, value: str) -> str | None:
    from facebench.farm.conditions import ConditionError, normalise_cores

    try:
        return normalise_cores(value)
    except ConditionError as exc:
        raise click.BadParameter(str(exc)) from None


@main.command()
@click.argument("models", nargs=-1, required=True)
@click.option("--devices", "device_names", multiple=True, required=True,
              help="Device names (repeatable or comma-separated), or 'all'.")
@click.option("--gpu/--cpu", default=True, show_default=True, help="Run on the GPU delegate, or on the CPU.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads (--num_threads); the tool's default if unset.")
@click.option("--runs", type=click.IntRange(min=1), default=50, show_default=True,
              help="Measured runs per repeat (--num_runs).")
@click.option("--warmup", type=click.IntRange(min=0), default=1, show_default=True, help="Warmup runs (--warmup_runs).")
@click.option("--cooldown", type=click.FloatRange(min=0), default=5.0, show_default=True,
              help="Seconds between runs on a device.")
@click.option("--repeat", type=click.IntRange(min=1), default=3, show_default=True,
              help="Repeats per model and device (the spread).")
@click.option("--fp16/--fp32", default=True, show_default=True, help="Allow fp16 on the GPU.")
@click.option("--gpu-backend", type=click.Choice(["auto", "cl", "gl"]), default="auto", show_default=True,
              help="Force the GPU delegate's API (--gpu_backend); a forced API that does not run is a failure.")
@click.option("--require-full-delegation", is_flag=True,
              help="GPU: a graph the delegate takes only in part is a failure (--require_full_delegation).")
@click.option("--memory", "memory_pass", is_flag=True,
              help="After each timed run, a separate run for the peak memory (--report_peak_memory_footprint).")
@click.option("--op-profile", "--profile", "profile_pass", is_flag=True,
              help="After each timed run, a separate run for the per-op profile (--enable_op_profiling).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=600.0, show_default=True,
              help="Seconds one benchmark run may take.")
@click.option("--connect-timeout", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True,
              help="Seconds to connect and authenticate to a device.")
@click.option("--benchmark-flag", "extra", multiple=True, help="Another flag for the tool, as --name=value.")
@click.option("--resume", is_flag=True, help="Only the measurements the store does not have yet.")
@click.option("--shuffle", is_flag=True,
              help="Interleave models and repeats in a seeded random order per device (spreads thermal drift).")
@click.option("--seed", type=int, default=None, help="The --shuffle seed (default: a random one, printed and stored).")
@click.option("--thermal-wait", type=click.FloatRange(min=0), default=120.0, show_default=True, metavar="S",
              help="Before each run wait up to S seconds for thermal status 0 and a cool battery; a run still hot "
                   "after it is labelled 'started hot'. 0: no wait (still recorded).")
@click.option("--max-battery-temp", default="40", show_default=True, metavar="C|off", callback=_battery_limit,
              help="The battery counts as cool below C degrees Celsius; 'off': not checked.")
@click.option("--cores", default="all", show_default=True, metavar="big|little|all|MASK", callback=_cores,
              help="Pin the tool with taskset: the fastest or slowest CPU cluster (by cpuinfo_max_freq), "
                   "or a hex CPU mask such as 0xf0. A pinned run is a separate measurement.")
@_INVENTORY_OPTION
@_KEY_OPTION
@click.option("--store", type=STORE, default=None, envvar="FACEBENCH_STORE", help=STORE_HELP)
def bench(models, device_names, gpu, threads, runs, warmup, cooldown, repeat, fp16,
          gpu_backend, require_full_delegation, memory_pass, profile_pass, timeout, connect_timeout,
          extra, resume, shuffle, seed, inventory, key, store, thermal_wait, max_battery_temp, cores):
    """Time MODEL... (registered names or .tflite files) on phones with TFLite's benchmark_model.

    Devices run in parallel, models in series on each. Every measurement is
    stored as it ends; a failed device is reported and the others finish.
    """
    import random

    from facebench.farm.bench import BenchSettings, resolve_models, run_bench
    from facebench.report.leaderboard import device_latency
    from facebench.results.store import Store

    inv = _inventory(inventory)
    settings = BenchSettings(gpu=gpu, fp16=fp16, threads=threads, runs=runs, warmup=warmup, cooldown_s=cooldown,
                             repeat=repeat, gpu_backend=gpu_backend, require_full_delegation=require_full_delegation,
                             memory_pass=memory_pass, profile_pass=profile_pass, timeout_s=timeout,
                             connect_timeout_s=connect_timeout,
                             extra_flags=tuple(extra), thermal_wait_s=thermal_wait, max_battery_c=max_battery_temp,
                             cores=cores)
    chosen = inv.select(device_names)
    for d in chosen:
        inv.binary_for(d)
    bench_models = [m for spec in models for m in resolve_models(spec)]
    host_key = _host_key(key, inv)
    if seed is not None and not shuffle:
        raise click.UsageError("--seed is for --shuffle")
    shuffle_seed = (seed if seed is not None else random.SystemRandom().randrange(2**31)) if shuffle else None
    if shuffle_seed is not None:
        click.echo(f"shuffled order per device, seed {shuffle_seed} (stored; --shuffle --seed {shuffle_seed} repeats "
                   "it)", err=True)
    with Store(store or default_store_path()) as db:
        measured = run_bench(bench_models, chosen, inv, settings, host_key, db, resume,
                             progress=lambda m: click.echo(_bench_line(m), err=True), shuffle_seed=shuffle_seed)
        names = {m.name for m in bench_models}
        latency = {k: v for k, v in device_latency(db.device_results(status="ok")).items() if k in names}
    for model, by_device in sorted(latency.items()):
        for label, t in by_device.items():
            p90 = f"{t.run_p90_ms:9.3f}" if t.run_p90_ms is not None else f"{'-':>9}"
            click.echo(f"{model:<28} {label:<40} {t.median_ms:9.3f} ms  p90 {p90} ms  "
                       f"(repeats' medians {t.p10_ms:.3f}-{t.p90_ms:.3f}, n={t.n})")
    failed = [m for m in measured if m.status != "ok"]
    if not measured:
        click.echo("nothing to do: every measurement is already in the store", err=True)
    if failed:
        click.echo(f"{len(failed)} of {len(measured)} measurements failed; `facebench bench ... --resume` "
                   "redoes only those", err=True)
        sys.exit(1)
