"""``facebench run``, ``leaderboard``, ``plot`` and ``report``: evaluate the matrix and show it."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import click

from facebench import registry
from facebench.cli.main import STORE, STORE_HELP, main
from facebench.errors import UsageError
from facebench.paths import default_store_path
from facebench.protocol import builtin_protocols, get_protocol
from facebench.results.database import StoreLocation, redact


@main.command()
@click.option("-m", "--model", "models_", multiple=True,
              help="Registered name, module:Class or path/to/file.py:Class (repeatable; default: all registered).")
@click.option("-p", "--protocol", "protocols_", multiple=True,
              help="Protocol id or .toml file (repeatable; default: every protocol whose dataset is here).")
@click.option("--root", "roots", multiple=True,
              help="Dataset folder: NAME=PATH for one dataset (repeatable), or PATH for all; "
                   "default $FACEBENCH_DATA/NAME.")
@click.option("--store", type=STORE, default=None, envvar="FACEBENCH_STORE", help=STORE_HELP)
@click.option("--out", type=click.Path(path_type=Path), default=Path("reports"), show_default=True,
              help="Where the report (index.html, figures, leaderboard.md/.csv, results.json) is written.")
@click.option("--force", is_flag=True, help="Recompute even when a stored result matches.")
@click.option("--runtime", type=click.Choice(["tflite", "onnxruntime"]), default=None)
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="Runtime threads per session.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="Threads for pre/post-processing.")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Cells (model x protocol) run in parallel processes.")
@click.option("--keep-failures", is_flag=True,
              help="Keep a stored run's failed items as they are (default: run them again).")
@click.option("--max-failures", default=None, metavar="N|F", callback=lambda ctx, param, value: _max_failures(value),
              help="Failed items a cell may have before the command fails: an integer N is a count of items "
                   "(0: none may fail), a decimal F in 0..1 (0.1) is a fraction of the cell's items. "
                   "Default: only a cell where every item failed is an error.")
@click.option("--no-progress", is_flag=True)
@click.option("--skip-bad", is_flag=True,
              help="Skip bad annotation files or lines (counted and listed) instead of stopping.")
@click.option("--no-report", is_flag=True, help="Do not write the HTML report at the end.")
@click.option("--item-timeout", type=click.FloatRange(min=0), default=600.0, show_default=True,
              callback=lambda ctx, param, value: _finite(value, "--item-timeout"),
              help="Seconds an item may stay in one phase (load, preprocess, forward, postprocess) before it "
                   "fails as a timeout and its cell goes on (0: no limit).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the cells (model, protocol, status, metrics) as one JSON object instead of the summary.")
@click.option("--engine", type=click.Choice(["local", "dask"]), default="local", show_default=True,
              help="local: cells in supervised processes here. dask: chunks of cells as tasks on a Dask cluster "
                   "(facebench[dask]); only this process writes the store.")
@click.option("--address", default=None, metavar="tcp://HOST:8786",
              help="With --engine dask: the scheduler to join (default: a local cluster of --jobs workers).")
@click.option("--suite", type=click.Choice(["default", "rendered", "all"]), default="default", show_default=True,
              help="Without -p: which protocols run. default: the photo benchmarks; rendered: the controlled renders "
                   "of one 3D scan (pose, size, degradation, sequences); all: both.")
@click.option("--shard", default=None, metavar="K/N",
              help="Run only the K-th of N deterministic parts (cells, or chunks of large cells), e.g. one task of "
                   "a job array with its own --store; join the stores with `facebench merge`.")
def run(models_, protocols_, roots, store, out, force, runtime, threads, batch_size, workers, jobs, keep_failures,
        max_failures, no_progress, skip_bad, no_report, item_timeout, as_json, engine, address, suite, shard):
    """Evaluate models on protocols, then write the leaderboard and the report.

    Prints a short summary (cells ran, reused, failed, skipped; where the files are): the tables are in
    the report, and `facebench leaderboard` prints them."""
    from facebench.datasets import parse_roots, root_for, unavailable
    from facebench.results.cells import Cell, Settings, run_cells
    from facebench.results.evaluate import IncompatibleError, check_compatible, check_runtime
    from facebench.results.shards import parse_shard
    from facebench.runtimes import RuntimeUnavailable

    if address and engine != "dask":
        raise UsageError("--address is for --engine dask")
    shard_part = parse_shard(shard) if shard is not None else None
    root_map = parse_roots(roots)
    chosen = [get_protocol(p) for p in protocols_] if protocols_ else \
        [p for p in builtin_protocols().values() if suite in ("all", p.suite)]
    names = list(models_) or list(registry.available())
    cards, unknown = {}, []
    for name in names:  # every model name is resolved before any work: a typo costs nothing
        try:
            cards[name] = registry.resolve(name).card
        except registry.RegistryError as exc:
            unknown.append(f"error: {exc}")
    for message in unknown:
        click.echo(message, err=True)
    if unknown and models_:  # named with -m: stop before anything runs (default: a broken plugin is said, skipped)
        click.echo("nothing was run: fix the model names above (`facebench models` lists them)", err=True)
        sys.exit(1)
    errors, refused, cells, ready, card_names = len(unknown), 0, [], {}, {}
    skipped: list[dict] = []  # cells left out before any work, each with its reason
    for protocol in chosen:
        root = root_for(protocol.dataset, root_map)
        reason = unavailable(protocol.dataset, protocol.split, root, protocol.root, skip_bad)
        if reason:
            click.echo(f"skip {protocol.id}: {reason}", err=True)
            skipped.append({"model": None, "protocol": protocol.id, "status": "skipped", "reason": reason})
            errors += bool(protocols_)  # asked for by name: a failure; by default: a note
            continue
        ready[protocol.id] = (protocol, root)
    for name, card in cards.items():
        card_names[name] = card.name
        usable = registry.usability(name, with_detector=False)  # a framing detector is checked by its protocol
        if not usable.usable:
            reason = f"{usable.reason}; {usable.fix}" if usable.fix else str(usable.reason)
            click.echo(f"skip {card.name}: cannot run here: {reason}", err=True)
            skipped.append({"model": card.name, "protocol": None, "status": "skipped", "reason": reason})
            errors += bool(models_)  # asked for by name: a failure; by default: a note
            continue
        try:
            check_runtime(card, runtime)
        except RuntimeUnavailable as exc:
            click.echo(f"skip {card.name}: {exc}", err=True)
            skipped.append({"model": card.name, "protocol": None, "status": "skipped", "reason": str(exc)})
            errors += bool(models_)
            continue
        if card.options.get("untrained"):
            click.echo(f"skip {card.name}: untrained (random) weights: it is for cost and latency only, "
                       "and no accuracy is reported for it", err=True)
            skipped.append({"model": card.name, "protocol": None, "status": "skipped",
                            "reason": "untrained (random) weights"})
            continue
        for protocol, root in ready.values():
            try:
                check_compatible(card, protocol)  # task, landmark scheme and framing: said before anything runs
            except IncompatibleError as exc:
                if models_ and (protocols_ or protocol.task in ("any", card.task)):
                    click.echo(f"skip {protocol.id} for {card.name}: {exc}", err=True)
                    skipped.append({"model": card.name, "protocol": protocol.id, "status": "skipped",
                                    "reason": str(exc)})
                    refused += 1
                continue
            if protocol.metric == "early_exit" and not card.options.get("early_exit"):
                if models_:  # asked for by name: say why nothing happens
                    click.echo(f"skip {protocol.id} for {card.name}: not a cascade that reports "
                               f"a prediction and an error estimate per stage", err=True)
                    skipped.append({"model": card.name, "protocol": protocol.id, "status": "skipped",
                                    "reason": "not a cascade"})
                continue
            cells.append(Cell(name, protocol, root))
    if refused and not cells:  # everything asked for was refused: nothing ran, which is not a success
        errors += 1
    store_path = store or default_store_path()
    settings = Settings(force=force, runtime=runtime, threads=threads, batch_size=batch_size, workers=workers,
                        progress=not no_progress, skip_bad=skip_bad, keep_failures=keep_failures,
                        item_timeout=item_timeout)

    def report(result):
        for message in result.messages:
            click.echo(message, err=True)

    started = time.time()
    try:
        results = run_cells(cells, store_path, settings, jobs=jobs, report=report, engine=engine, address=address,
                            shard=shard_part)
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted: finished items and cells are stored in {redact(store_path)}; "
                   "run the same command again to resume", err=True)
        sys.exit(130)
    errors += sum(r.error for r in results)
    errors += _failure_errors(results, store_path, started, card_names, max_failures)
    written: list[Path] = []
    if any(not r.error and not r.skipped and not r.partial for r in results):  # nothing evaluated: leave it be
        ran_roots = {c.protocol.dataset: c.root for c in cells if c.root is not None}
        written = _write_outputs(store_path, out, no_report, " ".join(["facebench", *sys.argv[1:]]), ran_roots)
    else:
        click.echo(f"no cell was evaluated: the report in {out} was not rewritten", err=True)
    statuses = _cell_statuses(results, store_path, started, card_names) + skipped
    _print_summary(statuses, written, store_path, store, as_json)
    if errors:
        sys.exit(1)


def _finite(value: float, name: str) -> float:
    """A number option that must be finite (click's FloatRange lets NaN through)."""
    if not math.isfinite(value):
        raise click.BadParameter(f"{name} must be a finite number of seconds (0: no limit), not {value}")
    return value


def _max_failures(value: str | None) -> int | float | None:
    """``--max-failures``: an integer is a count of items, a decimal in 0..1 a fraction of a cell's items."""
    if value is None:
        return None
    try:
        count = int(value)  # "3": a count
    except ValueError:
        pass
    else:
        if count < 0:
            raise click.BadParameter(f"{value!r}: a count of failed items cannot be negative")
        return count
    try:
        fraction = float(value)  # "0.1", "1.0": a fraction
    except ValueError:
        fraction = -1.0
    if not 0.0 <= fraction <= 1.0:
        raise click.BadParameter(f"{value!r}: give a count of items (3) or a fraction of a cell's items in 0..1 (0.1)")
    return fraction


def _failure_errors(results, store_path: StoreLocation, started: float, card_names: dict[str, str],
                    max_failures: int | float | None) -> int:
    """Cells with more failed items than ``--max-failures`` allows (default: every item failed), each said
    with its numbers; and a command whose every item failed never succeeds. Returns the error count."""
    from facebench.results.store import Store

    with Store(store_path) as db:
        touched = {(r.model, r.protocol): r for r in db.runs_used_since(started)}
        # a shard's part of a cell (not scored here): its stored items are what this command can judge
        parts = {r.key: (len(db.item_keys(r.key)), len(db.failures(r.key))) for r in touched.values()
                 if r.status != "complete"}
    errors, counts, seen = 0, [], set()
    for result in results:
        if result.error or result.skipped:
            continue
        cell = result.cell
        run = touched.get((card_names.get(cell.model, cell.model), cell.protocol.id))
        if run is None or run.key in seen:  # a cell's chunks (local shards) are one run: judged once
            continue
        seen.add(run.key)
        what = "items"
        if result.partial and run.key in parts and parts[run.key][0]:
            (n, failed), what = parts[run.key], "items stored of this shard's part"
        elif run.status != "complete" or run.n_items is None:
            continue
        else:
            n, failed = run.n_items, run.n_failures or 0
        counts.append((n, failed))
        if max_failures is None:
            allowed, said = n - 1, "every item failed"
        elif isinstance(max_failures, int):
            allowed, said = max_failures, f"more than --max-failures {max_failures}"
        else:
            allowed, said = int(max_failures * n), f"more than --max-failures {max_failures:g} of {n} items"
        if failed > allowed or n == 0:
            click.echo(f"error: {run.model} on {run.protocol}: {failed} of {n} {what} failed "
                       f"({said if n else 'no items were evaluated'})", err=True)
            errors += 1
    if not errors and counts and all(failed >= n for n, failed in counts):
        click.echo("error: every item of every cell failed", err=True)
        errors += 1
    return errors


def _write_outputs(store_path: StoreLocation, out: Path, no_report: bool, command: str,
                   roots: dict[str, Path] | None = None) -> list[Path]:
    """Write the leaderboard files and the report (or, with --no-report, the leaderboard files and the
    early-exit figures); return the paths written, the report page first."""
    from facebench.report.leaderboard import leaderboard_rows, write_leaderboard_files
    from facebench.results.store import Store

    with Store(store_path) as db:
        rows = leaderboard_rows(db)
        if no_report:
            from facebench.report.html import early_exit_figures

            return write_leaderboard_files(rows, out) + early_exit_figures(db, rows, out)
        from facebench.report.html import write_report

        page = write_report(db, out, [command], roots=roots)
    return [page, *(Path(out) / name for name in ("leaderboard.md", "leaderboard.csv", "results.json"))]


def _cell_statuses(results, store_path: StoreLocation, started: float, card_names: dict[str, str]) -> list[dict]:
    """One dict per cell run: model, protocol, status (ran, reused, failed, skipped), items, metrics."""
    from facebench.results.store import Store

    touched = {}
    if results:
        with Store(store_path) as db:
            touched = {(r.model, r.protocol): r for r in db.runs_used_since(started)}
    cells = []
    for result in results:
        model, protocol = card_names.get(result.cell.model, result.cell.model), result.cell.protocol.id
        entry: dict = {"model": model, "protocol": protocol}
        stored = touched.get((model, protocol))
        if result.error:
            entry["status"] = "failed"
        elif result.partial:  # a shard's part of the cell: scored by facebench merge
            entry["status"] = "partial"
            entry["chunk"] = None if result.cell.chunk is None else result.cell.chunk + 1
        elif result.skipped:
            entry["status"] = "skipped"
        elif stored is None:
            entry["status"] = "failed"
        else:
            reused = stored.finished is not None and stored.finished < started
            entry["status"] = "reused" if reused else "ran"
        if result.error or result.skipped:
            entry["reason"] = result.messages[0] if result.messages else None
        if stored is not None and not result.error and not result.skipped and not result.partial:
            entry.update(items=stored.n_items, failed_items=stored.n_failures, metrics=stored.metrics or {})
        cells.append(entry)
    return cells


def _json_safe(value):
    """NaN and infinities as null, so that the output is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _print_summary(cells: list[dict], written: list[Path], store_path: StoreLocation, store: StoreLocation | None,
                   as_json: bool) -> None:
    """The end of ``facebench run``: counts and where things are (or, with --json, the cells)."""
    import json

    counts = {s: sum(c["status"] == s for c in cells) for s in ("ran", "reused", "failed", "skipped", "partial")}
    if as_json:
        click.echo(json.dumps(_json_safe({"counts": counts, "cells": cells, "store": redact(store_path),
                                          "files": [str(p) for p in written]}), allow_nan=False, indent=1))
        return
    plural = "" if len(cells) == 1 else "s"
    parts = f", {counts['partial']} stored in part (facebench merge scores them)" if counts["partial"] else ""
    click.echo(f"{len(cells)} cell{plural}: {counts['ran']} ran, {counts['reused']} reused, "
               f"{counts['failed']} failed, {counts['skipped']} skipped{parts}")
    for cell in cells:
        if cell["status"] == "failed":
            click.echo(f"  failed: {cell['model']} on {cell['protocol']}")
    page = [p for p in written if p.name == "index.html"]
    boards = [p for p in written if p.name.startswith("leaderboard.")]
    if page:
        click.echo(f"report: {page[0]}")
    if boards:
        click.echo(f"leaderboard: {', '.join(str(p) for p in boards)}")
    click.echo(f"results store: {redact(store_path)}")
    click.echo("tables: facebench leaderboard" + (f" --store {redact(store)}" if store else ""))


@main.command()
@click.option("-p", "--protocol", "protocol", default=None, help="Only this protocol's rows.")
@click.option("--format", "fmt", type=click.Choice(["md", "csv", "json", "html", "latex"]), default="md",
              show_default=True)
@click.option("--no-reported", is_flag=True, help="Leave out the rows reported in papers.")
@click.option("--store", type=STORE, default=None, envvar="FACEBENCH_STORE", help=STORE_HELP)
def leaderboard(protocol, fmt, no_reported, store):
    """The leaderboard from the results store: measured rows, and papers' rows marked reported.

    -p takes a protocol id or a protocol file: a file's runs are then checked
    against its current content (runs of older content are marked stale).
    """
    from facebench.report.leaderboard import leaderboard_rows, render
    from facebench.results.store import Store

    protocols = builtin_protocols()
    if protocol and protocol.endswith(".toml"):
        given = get_protocol(protocol)
        protocols[given.id] = given
        protocol = given.id
    with Store(_existing_store(store)) as db:
        rows = leaderboard_rows(db, protocol, include_reported=not no_reported, protocols=protocols)
    click.echo(render(rows, fmt, protocols))


@main.command()
@click.argument("kind", type=click.Choice(["tradeoff", "ced", "pr", "early-exit", "sweep", "latency"]))
@click.option("-p", "--protocol", "protocols_", multiple=True, help="Protocol ids (default: every one with results).")
@click.option("--store", type=STORE, default=None, envvar="FACEBENCH_STORE", help=STORE_HELP)
@click.option("--out", type=click.Path(path_type=Path), default=Path("reports"), show_default=True)
def plot(kind, protocols_, store, out):
    """Draw one kind of figure (PNG, SVG and PDF; unchanged figures are not redrawn) from the results store."""
    from facebench.report import plots
    from facebench.report.html import figures_for
    from facebench.report.leaderboard import latency_only_rows, leaderboard_rows
    from facebench.results.store import Store

    all_protocols = builtin_protocols()
    with Store(_existing_store(store)) as db:
        rows = leaderboard_rows(db)
        if kind == "latency":
            written = [plots.latency(rows + latency_only_rows(db, rows), out)]
        else:
            ids = protocols_ or sorted({r.protocol for r in rows if r.kind == "measured"})
            written = []
            for pid in ids:
                protocol = all_protocols.get(pid) or get_protocol(pid)
                written += figures_for(db, protocol, rows, out, kind)
    written = [w for w in written if w is not None]
    for path in written:
        click.echo(str(path))
    if not written:
        click.echo(f"nothing to draw for {kind}: no matching results in the store", err=True)


@main.command("report")
@click.option("--store", type=STORE, default=None, envvar="FACEBENCH_STORE", help=STORE_HELP)
@click.option("--out", type=click.Path(path_type=Path), default=Path("reports"), show_default=True)
@click.option("--root", "roots", multiple=True,
              help="As for run: NAME=PATH (or PATH), so the error gallery can draw faces of that dataset.")
def report_cmd(store, out, roots):
    """Write <out>/index.html: every table and figure, the environment and the commands."""
    from facebench.datasets import DATASETS, parse_roots, root_for
    from facebench.report.html import write_report
    from facebench.results.store import Store

    root_map = parse_roots(roots)
    found = {name: root_for(name, root_map) for name in DATASETS}
    with Store(_existing_store(store)) as db:
        page = write_report(db, out, ["facebench " + " ".join(sys.argv[1:])],
                            roots={name: path for name, path in found.items() if path is not None})
    click.echo(str(page))


def _existing_store(store: str | Path | None) -> str | Path:
    """The store a reading command (leaderboard, plot, report) reads: a file must exist (never made empty here);
    a server's database is checked when it is opened."""
    if isinstance(store, str):
        return store
    path = Path(store or default_store_path())
    if not path.exists():
        raise UsageError(f"no results store at {path}: run `facebench run` first, or name one with --store")
    return path


@main.command()
@click.argument("stores", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--into", type=STORE, required=True, help="The store to merge into (made if absent): a file or a URL.")
@click.option("--root", "roots", multiple=True, help="As for run: where the datasets are, to score merged runs.")
@click.option("-p", "--protocol", "protocols_", multiple=True,
              help="A protocol file the shards ran (built-in protocols need nothing).")
@click.option("--skip-bad", is_flag=True, help="As the shards were run (the dataset's fingerprint depends on it).")
def merge(stores, into, roots, protocols_, skip_bad):
    """Merge shard stores (facebench run --shard K/N --store shard-K.sqlite) into one and score each cell
    whose chunks are all in. Refuses stores whose runs of one cell were made differently (model code,
    protocol, dataset, facebench version); missing chunks are listed and make it exit 1."""
    from facebench.datasets import parse_roots
    from facebench.results.shards import merge as merge_stores

    protocols = {p.id: p for p in (get_protocol(name) for name in protocols_)}
    report = merge_stores(stores, into, parse_roots(roots), protocols, skip_bad)
    for line in report.scored:
        click.echo(f"scored {line}")
    for line in report.missing + report.unscored:
        click.echo(f"incomplete: {line}", err=True)
    click.echo(f"{report.copied} runs from {len(stores)} stores merged into {redact(into)}; "
               f"{len(report.scored)} scored now, "
               f"{len(report.missing) + len(report.unscored)} incomplete; {report.device_results} device results")
    if report.missing or report.unscored:
        sys.exit(1)
