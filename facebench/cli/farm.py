"""``facebench devices`` and ``facebench bench``: the phone farm."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import click

from facebench.cli.main import main
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
@click.option("--store", type=click.Path(path_type=Path), default=None)
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
        return
    for r in records:
        if not r["authorised"]:
            state = "unauthorised" if r["reachable"] else "unreachable"
            click.echo(f"{r['name']:<16} {state:<13} {r['error']}")
            continue
        battery = f"{r['battery_c']:.1f} C" if r["battery_c"] is not None else "?"
        click.echo(f"{r['name']:<16} {'ok':<13} {r['model']} | {r['platform']} {r['soc']} | {r['abi']} | "
                   f"GPU {r['gpu'] or '?'} | battery {battery}" + (" | host stand-in" if r["host_stand_in"] else ""))
        click.echo(f"{'':<30} {r['fingerprint']}")


def _bench_line(m) -> str:
    if m.status != "ok":
        return f"[{m.device}] {m.model} #{m.repeat + 1}: FAILED ({m.failure}) {m.reason}"
    temps = ""
    if m.temperature_before_c is not None and m.temperature_after_c is not None:
        temps = f", battery {m.temperature_before_c:.1f}->{m.temperature_after_c:.1f} C"
    return f"[{m.device}] {m.model} #{m.repeat + 1}: {m.median_ms:.3f} ms median ({m.processor}{temps})"


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
@click.option("--profile", is_flag=True, help="Per-op profiling (--enable_op_profiling).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=600.0, show_default=True,
              help="Seconds one benchmark run may take.")
@click.option("--connect-timeout", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True,
              help="Seconds to connect and authenticate to a device.")
@click.option("--benchmark-flag", "extra", multiple=True, help="Another flag for the tool, as --name=value.")
@click.option("--resume", is_flag=True, help="Only the measurements the store does not have yet.")
@_INVENTORY_OPTION
@_KEY_OPTION
@click.option("--store", type=click.Path(path_type=Path), default=None)
def bench(models, device_names, gpu, threads, runs, warmup, cooldown, repeat, fp16, profile, timeout, connect_timeout,
          extra, resume, inventory, key, store):
    """Time MODEL... (registered names or .tflite files) on phones with TFLite's benchmark_model.

    Devices run in parallel, models in series on each. Every measurement is
    stored as it ends; a failed device is reported and the others finish.
    """
    from facebench.farm.bench import BenchSettings, resolve_models, run_bench
    from facebench.report.leaderboard import device_latency
    from facebench.results.store import Store

    inv = _inventory(inventory)
    settings = BenchSettings(gpu=gpu, fp16=fp16, threads=threads, runs=runs, warmup=warmup, cooldown_s=cooldown,
                             repeat=repeat, profile=profile, timeout_s=timeout, connect_timeout_s=connect_timeout,
                             extra_flags=tuple(extra))
    chosen = inv.select(device_names)
    for d in chosen:
        inv.binary_for(d)
    bench_models = [m for spec in models for m in resolve_models(spec)]
    host_key = _host_key(key, inv)
    with Store(store or default_store_path()) as db:
        measured = run_bench(bench_models, chosen, inv, settings, host_key, db, resume,
                             progress=lambda m: click.echo(_bench_line(m), err=True))
        names = {m.name for m in bench_models}
        latency = {k: v for k, v in device_latency(db.device_results(status="ok")).items() if k in names}
    for model, by_device in sorted(latency.items()):
        for label, t in by_device.items():
            click.echo(f"{model:<28} {label:<40} {t.median_ms:9.3f} ms  "
                       f"({t.p10_ms:.3f}-{t.p90_ms:.3f}, n={t.n})")
    failed = [m for m in measured if m.status != "ok"]
    if not measured:
        click.echo("nothing to do: every measurement is already in the store", err=True)
    if failed:
        click.echo(f"{len(failed)} of {len(measured)} measurements failed; `facebench bench ... --resume` "
                   "redoes only those", err=True)
        sys.exit(1)
