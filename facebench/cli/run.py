"""``facebench run``, ``leaderboard``, ``plot`` and ``report``: evaluate the matrix and show it."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from facebench import registry
from facebench.cli.main import main
from facebench.paths import default_store_path
from facebench.protocol import builtin_protocols, get_protocol


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
@click.option("--skip-bad", is_flag=True,
              help="Skip bad annotation files or lines (counted and listed) instead of stopping.")
@click.option("--no-report", is_flag=True, help="Do not write the HTML report at the end.")
def run(models_, protocols_, roots, store, out, force, runtime, threads, batch_size, workers, jobs, no_progress,
        skip_bad, no_report):
    """Evaluate models on protocols, then write the leaderboard and the report."""
    from facebench.datasets import parse_roots, root_for, unavailable
    from facebench.results.cells import Cell, Settings, run_cells
    from facebench.results.evaluate import IncompatibleError, check_compatible

    root_map = parse_roots(roots)
    chosen = [get_protocol(p) for p in protocols_] if protocols_ else list(builtin_protocols().values())
    names = list(models_) or list(registry.available())
    errors, refused, cells, ready = 0, 0, [], {}
    for protocol in chosen:
        root = root_for(protocol.dataset, root_map)
        reason = unavailable(protocol.dataset, protocol.split, root, protocol.root, skip_bad)
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
                        progress=not no_progress, skip_bad=skip_bad)

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
    _write_outputs(store_path, out, no_report, " ".join(["facebench", *sys.argv[1:]]), {c.protocol.id for c in cells})
    if errors:
        sys.exit(1)


def _write_outputs(store_path: Path, out: Path, no_report: bool, command: str, ran: set[str]) -> None:
    """Print the measured tables of the protocols just run (the papers' rows are in the files and the report),
    then write the leaderboard files and the report."""
    from facebench.report.leaderboard import leaderboard_rows, render, write_leaderboard_files
    from facebench.results.store import Store

    with Store(store_path) as db:
        rows = leaderboard_rows(db)
        click.echo(render([r for r in rows if r.protocol in ran and r.kind != "reported"], "md"))
        if no_report:
            from facebench.report.html import early_exit_figures

            written = write_leaderboard_files(rows, out) + early_exit_figures(db, rows, out)
            click.echo(f"wrote {', '.join(str(p) for p in written)}", err=True)
            return
        from facebench.report.html import write_report

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
    from facebench.report.leaderboard import leaderboard_rows, render
    from facebench.results.store import Store

    protocols = builtin_protocols()
    if protocol and protocol.endswith(".toml"):
        given = get_protocol(protocol)
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
    from facebench.report import plots
    from facebench.report.html import figures_for
    from facebench.report.leaderboard import latency_only_rows, leaderboard_rows
    from facebench.results.store import Store

    all_protocols = builtin_protocols()
    with Store(store or default_store_path()) as db:
        rows = leaderboard_rows(db)
        if kind == "latency":
            written = [plots.latency(rows + latency_only_rows(db, rows), out)]
        else:
            ids = protocols_ or sorted({r["protocol"] for r in rows if r["kind"] == "measured"})
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
@click.option("--store", type=click.Path(path_type=Path), default=None)
@click.option("--out", type=click.Path(path_type=Path), default=Path("reports"), show_default=True)
def report_cmd(store, out):
    """Write <out>/index.html: every table and figure, the environment and the commands."""
    from facebench.report.html import write_report
    from facebench.results.store import Store

    with Store(store or default_store_path()) as db:
        page = write_report(db, out, ["facebench " + " ".join(sys.argv[1:])])
    click.echo(str(page))
