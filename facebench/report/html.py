"""``facebench report``: the leaderboard and every figure as one HTML page.

``<out>/index.html`` with the PNGs next to it (SVG and PDF beside them), one section
per protocol: what it measures, its table (measured and reported rows), its
figures; then device latency, the environment, and the commands that
produced the page. Also writes ``leaderboard.md``, ``leaderboard.csv`` and
``results.json``. Every file is written atomically.
"""

from __future__ import annotations

import html
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

from facebench.paths import UnsafeNameError, check_name, write_atomic
from facebench.protocol import Protocol, builtin_protocols
from facebench.report import plots
from facebench.report.leaderboard import (
    Row,
    latency_only_rows,
    leaderboard_rows,
    render_html_tables,
    write_leaderboard_files,
)
from facebench.report.reported import OTHER_DATA
from facebench.results.store import Run, Store
from facebench.scoring import METRICS

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table.leaderboard { border-collapse: collapse; margin: 0.8em 0; font-size: 12px; }
table.leaderboard th, table.leaderboard td { border: 1px solid #ddd; padding: 3px 6px; \
text-align: left; vertical-align: top; }
table.leaderboard th { background: #f3f3f3; }
tr.reported td { color: #555; font-style: italic; background: #fffbea; }
tr.stale td { color: #888; text-decoration: line-through; }
table.leaderboard caption { text-align: left; font-weight: 600; padding: 0.3em 0; }
table.leaderboard caption small { font-weight: normal; color: #555; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.4em 0; display: block; }
dl { display: grid; grid-template-columns: max-content auto; gap: 2px 1em; font-size: 12px; }
dt { font-weight: 600; } pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; }
.none { color: #888; }
"""


def _protocol_details(p: Protocol) -> str:
    dataset = f"{p.dataset}" + (f" / {p.split}" if p.split else "") + (f", {p.transform}" if p.transform else "")
    fields = [("dataset", dataset),
              ("task", p.task), ("metric", p.metric), ("options", json.dumps(p.options, sort_keys=True)),
              ("content hash", p.content_hash)]
    if p.scheme:
        fields.insert(2, ("scheme, points", f"{p.scheme}, {p.points}"))
    if p.task != "detector":
        fb = p.face_box
        box = f"{fb.source}: {fb.rule or fb.detector or ''}" + (f", margin {fb.margin}" if fb.margin else "")
        fields.append(("face box", box))
    if p.reference:
        fields.append(("reference", p.reference))
    return "<dl>" + "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(str(v))}</dd>" for k, v in fields) + "</dl>"


def _measured_run(store: Store, row: Row) -> Run:
    """The stored run behind a measured row; a row whose run has left the store is an error."""
    run = store.get_run(row.run_key)
    if run is None:
        raise LookupError(f"{row.model} on {row.protocol}: run {row.run_key!r} is not in the store")
    return run


def figures_for(store: Store, protocol: Protocol, rows: list[Row], out: Path, kind: str | None = None) -> list[Path]:
    """The protocol's figures (``kind``: only tradeoff, ced, pr or early-exit).

    Those with nothing to draw are left out."""
    check_name(protocol.id, "protocol id")  # every figure's file name holds it
    runs = [_measured_run(store, r) for r in rows if r.kind == "measured" and r.protocol == protocol.id]
    copies: dict[str, int] = {}
    for run in runs:
        copies[run.model] = copies.get(run.model, 0) + 1

    def label(run: Run) -> str:  # a model measured on several copies of the data gets one curve per copy
        return run.model if copies[run.model] == 1 else f"{run.model} [{run.dataset_fingerprint[:8]}]"

    feeds = METRICS[protocol.metric].figures
    figures = []
    if kind in (None, "tradeoff") and "tradeoff" in feeds:
        figures.append(plots.tradeoff(rows, protocol, out))
    if kind in (None, "ced") and "ced" in feeds:
        curves = {}
        for run in runs:
            errors = [m["nme"] if m.get("nme") is not None else np.inf
                      for m in store.item_metrics(run.key).values()]
            if errors:
                curves[label(run)] = (np.array(errors), run.metrics or {})
        figures.append(plots.ced(curves, protocol, out))
    if kind in (None, "pr") and "pr" in feeds:
        pr_curves = {label(r): store.curves(r.key).get("pr", {}) for r in runs}
        figures.append(plots.precision_recall(pr_curves, protocol, out))
    if kind in (None, "sweep") and "sweep" in feeds:
        from facebench.datasets.rendered import CAVEAT

        figures.append(plots.sweep({label(r): store.curves(r.key).get("sweep", {}) for r in runs}, protocol, out,
                                   CAVEAT))
    if kind in (None, "early-exit") and "early-exit" in feeds:
        from facebench.report.early_exit import write_early_exit

        figures += [write_early_exit(out, protocol, run, store.item_metrics(run.key),
                                     store.curves(run.key).get("early_exit"))[1] for run in _named(runs)]
    return [f for f in figures if f is not None]


def early_exit_figures(store: Store, rows: list[Row], out: Path) -> list[Path]:
    """Every early-exit run's curve file and plot (``out/early-exit/``)."""
    from facebench.report.early_exit import write_early_exit

    written: list[Path] = []
    for protocol in builtin_protocols().values():
        if "early-exit" not in METRICS[protocol.metric].figures:
            continue
        for row in rows:
            if row.kind == "measured" and row.protocol == protocol.id:
                named = _named([_measured_run(store, row)])
                if not named:
                    continue
                run = named[0]
                written += write_early_exit(out, protocol, run, store.item_metrics(run.key),
                                            store.curves(run.key).get("early_exit"))
    return written


def _named(runs: list[Run]) -> list[Run]:
    """The runs whose model name can be a file name (early-exit files are ``<protocol>--<model>``);
    the others are left out with a warning, so no file lands outside ``out``."""
    kept = []
    for run in runs:
        try:
            check_name(run.model, "model name")
            kept.append(run)
        except UnsafeNameError as exc:
            print(f"facebench: warning: no early-exit figure for {run.model!r} on {run.protocol}: {exc}",
                  file=sys.stderr)
    return kept


def _render_strip(out: Path, caveat: str) -> Path | None:
    """The yaw sweep's renders over grey, for a look at what the rendered protocols score (None: the scan's
    assets cannot be had here)."""
    from facebench.datasets import load_dataset

    try:
        samples = [s for s in load_dataset("rendered", split="pose")
                   if s.attributes["factor"] == "yaw" and s.attributes["background"] == "grey"]
    except (OSError, ValueError, RuntimeError):
        return None
    return plots.render_strip(samples[::2], out, "render-strip-yaw", caveat)


def _figure_html(png: Path, out: Path) -> str:
    """A figure's PNG on the page, with links to its vector copies (SVG, PDF) for papers."""
    rel = png.relative_to(out).as_posix()
    links = " ".join(f'<a href="{html.escape(rel[:-3] + fmt)}">{fmt.upper()}</a>' for fmt in ("svg", "pdf")
                     if png.with_suffix(f".{fmt}").exists())
    return (f'<figure><img src="{html.escape(rel)}" alt="{html.escape(png.stem)}">'
            + (f'<figcaption class="none">vector: {links}</figcaption>' if links else "") + "</figure>")


def _environment() -> dict:
    from facebench.results.environment import environment

    return environment({})


def write_report(store: Store, out: str | Path, commands: list[str] | None = None,
                 protocols: dict[str, Protocol] | None = None, roots: dict[str, Path] | None = None) -> Path:
    """Write the page and everything it shows; return the path of index.html. ``roots`` (dataset name ->
    its copy) lets the error gallery draw faces of datasets that are not embedded."""
    out = Path(out)
    protocols = protocols if protocols is not None else builtin_protocols()
    rows = leaderboard_rows(store, protocols=protocols)
    write_leaderboard_files(rows, out, protocols)
    sections, toc = [], []
    rendered_heading = False

    def suite_order(pid: str) -> tuple[bool, str]:  # the controlled renders after every photo benchmark
        known = protocols.get(pid)
        return (known is not None and known.suite != "default", pid)

    for pid in sorted({r.protocol for r in rows} | set(protocols), key=suite_order):
        protocol = protocols.get(pid)
        group = [r for r in rows if r.protocol == pid]
        measured = sum(r.kind == "measured" for r in group)
        if not group:
            continue
        if protocol is not None and protocol.suite == "rendered" and not rendered_heading:
            from facebench.datasets.rendered import CAVEAT

            rendered_heading = True
            sections.append('<h2 id="rendered">Controlled renders of one 3D scan</h2>'
                            f"<p>{html.escape(CAVEAT[0].upper() + CAVEAT[1:])}. Each protocol below changes one "
                            "factor at a time with exact landmarks; its numbers are not comparable with the photo "
                            "benchmarks above.</p>")
            toc.append('<li><a href="#rendered">Controlled renders of one 3D scan</a></li>')
            strip = _render_strip(out, CAVEAT)
            if strip is not None:
                sections.append(_figure_html(strip, out))
        if protocol is None:  # reported on data no protocol has, or runs of a protocol file not given
            what = OTHER_DATA.get(pid, "a protocol that is not built in (its file was not given: content unchecked)")
            sections.append(f'<h2 id="{html.escape(pid)}">{html.escape(pid)}</h2>'
                            f"<p>Measured on {html.escape(what)}.</p>"
                            + render_html_tables(group, protocols))
            toc.append(f'<li><a href="#{html.escape(pid)}">{html.escape(pid)}</a> (not a built-in protocol)</li>')
            continue
        body = [f'<h2 id="{html.escape(pid)}">{html.escape(pid)}: {html.escape(protocol.title)}</h2>',
                _protocol_details(protocol), render_html_tables(group, protocols)]
        if not measured:
            body.append('<p class="none">No measured result yet (reported rows only): '
                        f"<code>facebench run -p {html.escape(pid)}" + (" --root ..." if protocol.root else "")
                        + "</code>" + (f"; --root must hold {html.escape(protocol.root)}" if protocol.root else "")
                        + ".</p>")
        figures = figures_for(store, protocol, rows, out)
        if "tradeoff" in METRICS[protocol.metric].figures and not any(f.stem.startswith("tradeoff-") for f in figures):
            body.append('<p class="none">No tradeoff figure: nothing measured on MACs/latency.</p>')
        body += [_figure_html(figure, out) for figure in figures]
        sections.append("\n".join(body))
        n_reported = sum(r.kind == "reported" for r in group)
        toc.append(f'<li><a href="#{html.escape(pid)}">{html.escape(pid)}</a> '
                   f"({measured} measured, {n_reported} reported)</li>")
    from facebench.report.gallery import write_gallery

    gallery = write_gallery(store, rows, protocols, out, roots)  # the worst faces of each landmark model, drawn
    if gallery:
        sections.append(gallery)
    latency = plots.latency(rows + latency_only_rows(store, rows), out)
    if latency is not None:
        sections.append('<h2 id="latency">Latency per device</h2>' + _figure_html(latency, out))
    from facebench.report.op_profile import render_op_profiles

    ops = render_op_profiles(store)  # the farm's op-profile passes: one small table per model and device
    if ops:
        sections.append(ops)
    env = _environment()
    commands = commands or []
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>facebench report</title><style>{STYLE}</style></head>
<body>
<h1>facebench report</h1>
<p>{len(rows)} rows: {sum(r.kind == 'measured' for r in rows)} measured by facebench, \
{sum(r.kind == 'reported' for r in rows)}
reported in papers (each protocol's "Reported (not measured here)" block, shaded, with the data, normaliser or
test setting and source of each figure; never mixed with measured rows), {sum(r.kind == 'stale' for r in rows)}
of a protocol whose content has changed since (struck through).
Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.</p>
<ul>{''.join(toc)}</ul>
{''.join(f'<section>{s}</section>' for s in sections)}
<h2 id="environment">Environment</h2>
<dl>{''.join(f'<dt>{html.escape(k)}</dt><dd>{html.escape(json.dumps(v) if isinstance(v, dict) else str(v))}</dd>'
              for k, v in env.items() if k != 'runtime')}</dl>
<h2 id="commands">Commands</h2>
<pre>{html.escape(chr(10).join(commands + ['facebench report  # regenerates this page from the store']))}</pre>
<p>Python {html.escape(sys.version.split()[0])} on {html.escape(platform.platform())}.</p>
</body></html>
"""
    return write_atomic(out / "index.html", page)
