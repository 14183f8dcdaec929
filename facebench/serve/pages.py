"""The web leaderboard's pages, each a function of a read-only :class:`~facebench.results.store.Store`.

The tables are the command line's: :func:`~facebench.report.leaderboard.leaderboard_rows` and
:func:`~facebench.report.leaderboard.blocks` give the same rows, columns and cells as
``facebench leaderboard``; a page only adds links (model name to its model page, a measured row to its
run page) and filters. Nothing here writes the store. A name or key the store does not have raises
:class:`NotFound`, which the app turns into a 404 page.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

from facebench.paths import dumps_json
from facebench.protocol import Protocol
from facebench.report.gallery import CROP, crop, dataset_samples, face_results
from facebench.report.leaderboard import (
    STALE,
    Latency,
    Row,
    _grouped,
    blocks,
    column_kind,
    device_latency,
    headline,
    latest_runs,
    leaderboard_rows,
    measured_row,
    protocol_status,
)
from facebench.results.store import Run, Store
from facebench.serve.figures import KINDS, FigureCache, kinds_for
from facebench.serve.html import Html, definition_list, esc, link, page, table_html

FILTERS = ("task", "runtime", "device", "framing", "rows")
FAILURES_SHOWN = 50
WORST_SHOWN = 20
GALLERY_FACES = 8  # the run page's drawn worst faces


class NotFound(LookupError):
    """A protocol, model or run the store does not have: a 404 page saying which."""


def store_state(store: Store) -> str:
    """The hash of what the leaderboard pages show from ``store``: every run's key, status, finish time and item
    counts, and every phone measurement's key, status and finish time. A run's metrics, curves and items change
    only with these (scoring sets ``finished``), so a page rendered for a state is the page of that state."""
    runs = store.run_states()
    phones = [(d.get("key"), d.get("status"), d.get("finished")) for d in store.device_results()]
    return hashlib.sha256(json.dumps([runs, phones], default=str).encode()).hexdigest()


class PageCache:
    """The last rendered pages by (page, arguments, :func:`store_state`): the leaderboard pages are read far more
    often than results change, and rendering every row is most of a request's time. Bounded (least recently
    used out first); thread-safe (the endpoints run on a thread pool)."""

    def __init__(self, size: int = 64):
        self.size = size
        self._pages: OrderedDict[tuple, str] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple, render: Callable[[], str]) -> str:
        with self._lock:
            if key in self._pages:
                self._pages.move_to_end(key)
                return self._pages[key]
        text = render()  # outside the lock: two threads may render the same page once each, never wrongly
        with self._lock:
            self._pages[key] = text
            while len(self._pages) > self.size:
                self._pages.popitem(last=False)
        return text


@dataclass
class Site:
    """What every page needs besides the store: the protocols (built-in and the server's protocol files),
    the figure cache, whether the submission service is on (its link in the navigation), and the cache of
    rendered pages (None: render every request)."""

    protocols: dict[str, Protocol]
    figures: FigureCache
    submissions: bool = False
    pages: PageCache | None = field(default_factory=PageCache)
    roots: dict[str, Path] = field(default_factory=dict)  # dataset -> its copy (facebench serve --root): crops
    _samples: dict[str, tuple[dict | None, str]] = field(default_factory=dict, repr=False)
    _samples_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def samples(self, protocol: Protocol) -> tuple[dict | None, str]:
        """The protocol's samples by id (to draw the gallery's crops), read once; or None and why not."""
        key = f"{protocol.dataset}/{protocol.split}"
        with self._samples_lock:
            if key not in self._samples:
                self._samples[key] = dataset_samples(protocol, self.roots)
            return self._samples[key]

    def page(self, title: str, body: str) -> str:
        return page(title, body, submissions=self.submissions)

    def cached(self, store: Store, what: str, args: Mapping[str, str], render: Callable[[], str]) -> str:
        """``render()``, or the page it gave for the same page, arguments and store state."""
        if self.pages is None:
            return render()
        key = (what, tuple(sorted((k, v) for k, v in args.items() if k in (*FILTERS, "protocol", "id"))),
               store_state(store))
        return self.pages.get(key, render)


class _Reads:
    """A store whose run list and phone measurements are read once per page: the leaderboard rows, the filters
    and each figure's cache key all read them, and decoding every run's JSON is most of a page's time."""

    def __init__(self, store: Store):
        self._store = store
        self._runs: list[Run] | None = None
        self._devices: dict[tuple[str | None, str | None], list[dict]] = {}

    def runs(self, status: str | None = "complete") -> list[Run]:
        if self._runs is None:
            self._runs = self._store.runs(status=None)
        return [r for r in self._runs if status is None or r.status == status]  # the same order as the store's

    def device_results(self, model: str | None = None, status: str | None = None) -> list[dict]:
        if (model, status) not in self._devices:
            self._devices[(model, status)] = self._store.device_results(model=model, status=status)
        return list(self._devices[(model, status)])

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def reads(store: Store) -> Store:
    """``store`` with its run list and phone measurements read at most once (see :class:`_Reads`)."""
    return store if isinstance(store, _Reads) else cast(Store, _Reads(store))


def model_href(name: str) -> str:
    return "/model/" + quote(name, safe="")


def run_href(key: str) -> str:
    return "/run/" + quote(key, safe="")


def protocol_href(pid: str) -> str:
    return "/protocol/" + quote(pid, safe="")


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t)) if t else ""


# ---- filters ---------------------------------------------------------------------------------------

def _device_name(label: str) -> str:
    """A latency label's device: ``Pixel 7 (GPU fp16)`` -> ``Pixel 7``, ``host CPU (AMD EPYC)`` -> ``host CPU``."""
    return label.split(" (", 1)[0]


def _facets(row: Row, runs: Mapping[str, Run], protocols: Mapping[str, Protocol]) -> dict[str, set[str]]:
    """The values a row has for each filter: a measured row its model card's task, its runtime and framing;
    a reported row its protocol's task; both the devices they were timed on."""
    run = runs.get(row.run_key) if row.kind != "reported" else None
    protocol = protocols.get(row.protocol)
    if run is not None:
        task = {str(run.card.get("task"))} if run.card.get("task") else set()
    else:
        task = {protocol.task} if protocol is not None and protocol.task != "any" else set()
    return {"task": task,
            "runtime": {run.runtime} if run is not None and run.runtime else set(),
            "device": {_device_name(d) for d in row.latency},
            "framing": {row.framing} if row.framing else set(),
            "rows": {"measured" if row.kind == "stale" else row.kind}}


def _filter(rows: list[Row], runs: Mapping[str, Run], protocols: Mapping[str, Protocol],
            query: Mapping[str, str]) -> tuple[list[Row], dict[str, list[str]], dict[str, str]]:
    """(the rows that match every filter given, the values present per filter, the filters in effect)."""
    facets = [(r, _facets(r, runs, protocols)) for r in rows]
    present = {name: sorted({v for _, f in facets for v in f[name]}) for name in FILTERS}
    active = {name: query[name] for name in FILTERS if query.get(name)}
    kept = [r for r, f in facets if all(value in f[name] for name, value in active.items())]
    return kept, present, active


def _filter_form(action: str, present: dict[str, list[str]], active: dict[str, str]) -> str:
    """A GET form with one select per filter (the values present), keeping the current choice."""
    fields = []
    for name in FILTERS:
        values = present[name]
        chosen = active.get(name, "")
        options = [f'<option value=""{" selected" if not chosen else ""}>all</option>']
        options += [f'<option value="{esc(v)}"{" selected" if v == chosen else ""}>{esc(v)}</option>'
                    for v in values]
        if chosen and chosen not in values:
            options.append(f'<option value="{esc(chosen)}" selected>{esc(chosen)} (none)</option>')
        fields.append(f'<label>{esc(name)}<select name="{esc(name)}">{"".join(options)}</select></label>')
    clear = f' <a href="{esc(action)}">clear</a>' if active else ""
    return (f'<form class="filters" method="get" action="{esc(action)}">{"".join(fields)}'
            f'<button type="submit">filter</button>{clear}</form>')


# ---- leaderboard tables ----------------------------------------------------------------------------

def _block_rows(group: list[Row]) -> list[list[Row]]:
    """The rows behind each of :func:`blocks`'s tables, in its order (measured, submitted, stale, reported
    groups)."""
    out = [rows for rows in ([r for r in group if r.kind == kind] for kind in ("measured", "submitted", "stale"))
           if rows]
    reported: dict[str, list[Row]] = {}
    for r in group:
        if r.kind == "reported":
            reported.setdefault(r.group or "", []).append(r)
    return out + [rows for _, rows in sorted(reported.items())]


def protocol_tables(pid: str, group: list[Row], protocols: dict[str, Protocol]) -> str:
    """``facebench leaderboard``'s tables of one protocol, with a model link and a run link per measured row."""
    parts = []
    for (block, title, caption, header, body), rows in zip(blocks(pid, group, protocols), _block_rows(group)):
        linked = len(rows) == len(body)
        cells: list[list[object]] = []
        for i, row_cells in enumerate(body):
            row = rows[i] if linked else None
            measured = row is not None and row.kind != "reported"
            first: object = link(model_href(row.model), row_cells[0]) if measured and row else row_cells[0]
            run: object = link(run_href(row.run_key), row.run_key[:10]) if measured and row and row.run_key else ""
            cells.append([first, *row_cells[1:], run])
        cap = Html(esc(title) + (f"<br><small>{esc(caption)}</small>" if caption else ""))
        parts.append(table_html([*header, "run"], cells, caption=cap, row_classes=[block] * len(cells),
                                attrs={"data-protocol": pid, "data-block": block}))
    return "\n".join(parts)


def _rows_and_runs(store: Store, site: Site, protocol: str | None = None) -> tuple[list[Row], dict[str, Run]]:
    rows = leaderboard_rows(store, protocol, protocols=site.protocols)
    runs = {r.key: r for r in store.runs()}
    return rows, runs


def _suite_order(pid: str, protocols: Mapping[str, Protocol]) -> tuple[bool, str]:
    """The report's order: the photo benchmarks, then the controlled renders."""
    known = protocols.get(pid.split(" [", 1)[0])
    return (known is not None and known.suite != "default", pid)


def index(store: Store, site: Site, query: Mapping[str, str] | None = None) -> str:
    """``/``: every protocol with measured results, its leaderboard tables (as the report groups them), the
    filters; protocols with papers' rows only are listed after them."""
    store = reads(store)
    query = query or {}
    return site.cached(store, "index", query, lambda: _index(store, site, query))


def _index(store: Store, site: Site, query: Mapping[str, str]) -> str:
    rows, runs = _rows_and_runs(store, site)
    kept, present, active = _filter(rows, runs, site.protocols, query)
    measured_pids = {r.protocol for r in rows if r.kind != "reported"}
    sections, rendered_heading = [], False
    grouped = _grouped(kept)
    for section in sorted(grouped, key=lambda s: _suite_order(s, site.protocols)):
        group = grouped[section]
        pid = group[0].protocol
        if pid not in measured_pids:
            continue
        protocol = site.protocols.get(pid)
        if protocol is not None and protocol.suite == "rendered" and not rendered_heading:
            rendered_heading = True
            sections.append('<h2 id="rendered">Controlled renders of one 3D scan</h2><p class="muted">Numbers on '
                            "renders of one scan: not comparable with the photo benchmarks above.</p>")
        title = f"{section}: {protocol.title}" if protocol is not None else f"{section} (not a built-in protocol)"
        counts = {kind: sum(r.kind == kind for r in group) for kind in ("measured", "submitted", "stale")}
        counted = ", ".join(f"{n} {kind}" for kind, n in counts.items() if n)
        sections.append(f'<section id="{esc(section)}"><h3>{link(protocol_href(pid), title)} '
                        f'<small class="muted">({counted})</small></h3>'
                        + protocol_tables(section, group, site.protocols) + "</section>")
    if not sections:
        sections.append('<p class="none">' + ("No row matches these filters." if active else
                                              "No results yet: run <code>facebench run</code>.") + "</p>")
    reported_only = sorted({r.protocol for r in rows} - measured_pids)
    if reported_only:
        sections.append("<h2>Protocols with papers' rows only</h2><p>"
                        + ", ".join(link(protocol_href(p), p) for p in reported_only) + "</p>")
    n_measured = sum(r.kind == "measured" for r in rows)
    n_submitted = sum(r.kind == "submitted" for r in rows)
    latest = max((r.finished or 0 for r in runs.values()), default=0)
    summary = (f"<p>{len(measured_pids)} protocols with results, {n_measured} measured rows"
               + (f", {n_submitted} submitted" if n_submitted else "")
               + (f", newest result {esc(_when(latest))}" if latest else "")
               + '. Also as JSON: <a href="/api/leaderboard.json">/api/leaderboard.json</a>.</p>')
    body = "<h1>facebench leaderboard</h1>" + summary + _filter_form("/", present, active) + "\n".join(sections)
    return site.page("Leaderboard", body)


def _protocol_details(p: Protocol) -> str:
    dataset = p.dataset + (f" / {p.split}" if p.split else "") + (f", {p.transform}" if p.transform else "")
    fields: list[tuple[object, object]] = [("dataset", dataset), ("task", p.task), ("metric", p.metric),
                                           ("options", json.dumps(p.options, sort_keys=True)),
                                           ("content hash", p.content_hash)]
    if p.scheme:
        fields.insert(2, ("scheme, points", f"{p.scheme}, {p.points}"))
    if p.task != "detector":
        fb = p.face_box
        fields.append(("face box", f"{fb.source}: {fb.rule or fb.detector or ''}"
                       + (f", margin {fb.margin}" if fb.margin else "")))
    if p.reference:
        fields.append(("reference", p.reference))
    return definition_list(fields)


def protocol_page(store: Store, site: Site, pid: str, query: Mapping[str, str] | None = None) -> str:
    """``/protocol/{id}``: the protocol's tables (filtered like the index) and its figures."""
    store = reads(store)
    query = query or {}
    return site.cached(store, "protocol", {**query, "id": pid}, lambda: _protocol_page(store, site, pid, query))


def _protocol_page(store: Store, site: Site, pid: str, query: Mapping[str, str]) -> str:
    protocol = site.protocols.get(pid)
    rows, runs = _rows_and_runs(store, site, pid)
    if protocol is None and not rows:
        raise NotFound(f"no protocol {pid!r}: neither a built-in protocol, nor one the server was given, nor in "
                       "the store")
    kept, present, active = _filter(rows, runs, site.protocols, query)
    title = f"{pid}: {protocol.title}" if protocol is not None else pid
    body = [f"<h1>{esc(title)}</h1>", _protocol_details(protocol) if protocol is not None else
            '<p class="muted">Not a built-in protocol, and not among the protocol files the server was given: its '
            "content is not checked.</p>", _filter_form(protocol_href(pid), present, active)]
    tables = [protocol_tables(section, group, site.protocols) for section, group in _grouped(kept).items()]
    body += tables or ['<p class="none">' + ("No row matches these filters." if active else
                                             f"No result yet: <code>facebench run -p {esc(pid)}</code>.") + "</p>"]
    if protocol is not None:
        figures = []
        ours = sum(r.kind != "reported" for r in rows)
        if ours > site.figures.max_rows:
            figures.append(f'<p class="muted">The figures draw the best {site.figures.max_rows} of the {ours} '
                           "rows by the headline metric (all of them are in the tables).</p>")
        for kind in kinds_for(protocol):
            key, png = site.figures.resolve(store, protocol, kind, rows)
            if png is not None:
                src = f"/figure/{quote(pid, safe='')}/{kind}.png?v={key[:12]}"
                figures.append(f'<figure><img src="{esc(src)}" alt="{esc(kind)} figure of {esc(pid)}">'
                               f"<figcaption>{esc(KINDS[kind])}</figcaption></figure>")
        drawn = any(f.startswith("<figure>") for f in figures)
        body.append("<h2>Figures</h2>" + ("".join(figures) if drawn else '<p class="none">Nothing to draw yet.</p>'))
    return site.page(pid, "\n".join(body))


def leaderboard_json(store: Store, site: Site, query: Mapping[str, str] | None = None) -> str:
    """``/api/leaderboard.json``: the rows as ``facebench leaderboard --format json`` gives them (``protocol``
    and the filters narrow them)."""
    store = reads(store)
    query = query or {}
    return site.cached(store, "json", query, lambda: _leaderboard_json(store, site, query))


def _leaderboard_json(store: Store, site: Site, query: Mapping[str, str]) -> str:
    pid = query.get("protocol") or None
    if pid is not None and pid not in site.protocols and not any(r.protocol == pid for r in store.runs(status=None)):
        raise NotFound(f"no protocol {pid!r}")
    rows, runs = _rows_and_runs(store, site, pid)
    kept, _, _ = _filter(rows, runs, site.protocols, query)
    return dumps_json({"rows": [r.to_dict() for r in kept]}, sort_keys=True)


# ---- models ----------------------------------------------------------------------------------------

def _macs_m(card: dict) -> str:
    macs = sum(card.get("macs", {}).values())
    return f"{macs / 1e6:.1f}" if macs else ""


def models_page(store: Store, site: Site) -> str:
    """``/models``: every model with a result or a phone measurement."""
    store = reads(store)
    return site.cached(store, "models", {}, lambda: _models_page(store, site))


def _models_page(store: Store, site: Site) -> str:
    runs = latest_runs(store.runs())
    by_model: dict[str, list[Run]] = {}
    for run in runs:
        by_model.setdefault(run.model, []).append(run)
    phones = device_latency(store.device_results(status="ok"))
    body_rows = []
    for name in sorted(set(by_model) | set(phones)):
        mine = sorted(by_model.get(name, []), key=lambda r: r.finished or 0)
        card = _card_run(mine).card if mine else {}
        protocols = sorted({r.protocol for r in mine})
        body_rows.append([link(model_href(name), name), card.get("task", ""), card.get("scheme", ""),
                          " ".join(sorted({r.runtime for r in mine})), _macs_m(card),
                          Html(", ".join(link(protocol_href(p), p) for p in protocols)),
                          ", ".join(sorted(phones.get(name, {}))),
                          _when(max((r.finished or 0 for r in mine), default=0))])
    table = table_html(["model", "task", "scheme", "runtime", "MACs (M)", "protocols", "phones", "newest result"],
                       body_rows) if body_rows else '<p class="none">No model has a result yet.</p>'
    return site.page("Models", f"<h1>Models</h1><p>{len(body_rows)} models.</p>" + table)


def _latency_cells(label: str, t: Latency) -> list[object]:
    def ms(v: float | None) -> str:
        return "" if v is None else f"{v:.2f}"

    spread = f"{t.p10_ms:.2f}-{t.p90_ms:.2f}" if t.p10_ms is not None and t.p90_ms is not None else ""
    return [label, ms(t.median_ms), spread, "" if t.n is None else t.n, ms(t.run_p90_ms), ms(t.init_ms),
            ms(t.first_ms), "" if t.peak_memory_mb is None else f"{t.peak_memory_mb:.1f}"]


LATENCY_HEADER = ["device (processor)", "median (ms)", "p10-p90 (ms)", "n", "run p90 (ms)", "init (ms)",
                  "first (ms)", "peak memory (MB)"]


def _metric_value(column: str, value, protocol: Protocol | None) -> str:
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, float):
        return f"{value * 100:.2f} %" if column_kind(column, protocol) else f"{value:.4f}"
    if isinstance(value, (dict, list)):
        text = json.dumps(value, sort_keys=True)
        return text if len(text) <= 200 else text[:200] + " …"
    return str(value)


def is_submitted(run: Run) -> bool:
    """A run scored from a team's uploaded predictions, not measured by facebench."""
    return run.kind == "submitted"


def _card_run(runs: list[Run]) -> Run:
    """The run whose card a model's page shows: the newest measured one; a team's submission only when nothing
    else has the name (a team that names its predictions after a measured model must not take over its card)."""
    measured = [r for r in runs if not is_submitted(r)]
    return (measured or runs)[-1]


def model_page(store: Store, site: Site, name: str) -> str:
    """``/model/{name}``: the model card, its result on every protocol, its latency per device."""
    store = reads(store)
    runs = sorted((r for r in latest_runs(store.runs()) if r.model == name), key=lambda r: r.finished or 0)
    records = store.device_results(model=name)
    if not runs and not records:
        raise NotFound(f"no model {name!r} in the store (no result, no phone measurement)")
    body = [f"<h1>{esc(name)}</h1>"]
    if runs:
        newest = _card_run(runs)
        card, parts = newest.card, newest.key_parts or {}
        stages = "; ".join(f"{stage}: {macs / 1e6:.1f} M" for stage, macs in card.get("macs", {}).items())
        artifact_hashes = parts.get("artifacts", {})
        artifacts = [[fmt, name_, artifact_hashes.get(fmt, "")] for fmt, name_ in card.get("artifacts", {}).items()]
        options = card.get("options", {})
        fields: list[tuple[object, object]] = [] if is_submitted(newest) else [
            ("task", card.get("task", "")), ("scheme", card.get("scheme", "")),
            ("input", f"shape {card.get('input_shape')}, range {card.get('input_range')}")]
        if is_submitted(newest):  # a team's card: what they sent (the model never ran here)
            fields += [("submitted by", card.get("team", "")), ("link", card.get("link", ""))]
        fields += [
            ("MACs per stage", stages or (options.get("cost") or "")),
            ("face-box convention", card.get("box_convention", "")),
            ("description", card.get("description", "")), ("source", card.get("source", "")),
            ("card hash", parts.get("card", "")) if isinstance(parts.get("card"), str) else ("card", ""),
            ("runtime", " ".join(sorted({r.runtime for r in runs})))]
        fields = [(k, v) for k, v in fields if v not in ("", None)]
        if card.get("extras"):
            fields.append(("extras", ", ".join(card["extras"])))
        if options:
            fields.append(("options", json.dumps(options, sort_keys=True, default=str)))
        cards = {json.dumps(r.card, sort_keys=True) for r in runs if is_submitted(r) == is_submitted(newest)}
        note = (f'<p class="muted">The card as of the newest run; {len(cards)} versions of it among the results.</p>'
                if len(cards) > 1 else "")
        teams = sorted({str(r.card.get("team", "")) for r in runs if is_submitted(r)})
        if teams and not is_submitted(newest):
            note += (f'<p class="muted">Also the name of predictions submitted by {esc(", ".join(teams))}: their '
                     "rows are marked submitted below; the card above is facebench's own measurement's.</p>")
        body += ["<h2>Model card</h2>", definition_list(fields), note, "<h3>Artifacts</h3>",
                 table_html(["format", "artifact", "hash (SHA-256)"], artifacts, sortable=False, css_class="plain")]
        phones = device_latency(store.device_results(model=name, status="ok")).get(name, {})
        result_rows, classes = [], []
        for run in sorted(runs, key=lambda r: (r.protocol, r.dataset_fingerprint)):
            status = protocol_status(run, site.protocols)
            row = measured_row(run, store.forward_times(run.key), status)
            if status != STALE:
                row.latency.update(phones)
            protocol = site.protocols.get(run.protocol)
            rule = headline(protocol)
            head = (f"{rule[0]} {_metric_value(rule[0], row.metrics.get(rule[0]), protocol)}" if rule else "")
            others = "; ".join(f"{k} {_metric_value(k, v, protocol)}" for k, v in sorted(row.metrics.items())
                               if not k.startswith("_") and not isinstance(v, (dict, list, str))
                               and (rule is None or k != rule[0]))
            host = "; ".join(f"{d}: {t.median_ms:.2f} ms" for d, t in row.latency.items() if d.startswith("host"))
            if is_submitted(run):
                status = f"submitted by {run.card.get('team', 'a team')}"
            result_rows.append([link(protocol_href(run.protocol), run.protocol), status, head, others,
                                row.framing, f"{(row.dataset or '')[:12]} ({row.faces} faces)",
                                f"{row.failures}/{row.items}" if row.items is not None else "", host, row.date,
                                link(run_href(run.key), run.key[:10])])
            classes.append("stale" if status == STALE else "submitted" if is_submitted(run) else "measured")
        body += ["<h2>Results</h2>",
                 table_html(["protocol", "status", "headline", "other metrics", "framing", "dataset (faces)",
                             "failures", "host latency", "date", "run"], result_rows, row_classes=classes)]
    phones_all = device_latency(store.device_results(model=name, status="ok")).get(name, {})
    body.append("<h2>Latency per device</h2>")
    if phones_all:
        body.append(table_html(LATENCY_HEADER, [_latency_cells(d, t) for d, t in phones_all.items()]))
    else:
        body.append('<p class="none">Not timed on a phone: <code>facebench bench</code>.</p>')
    failed = [r for r in records if r.get("status") != "ok"]
    if failed:
        body.append(f"<h3>Failed measurements ({len(failed)})</h3>" + table_html(
            ["device", "repeat", "failure", "reason", "finished"],
            [[r.get("device"), r.get("repeat"), r.get("failure"), str(r.get("reason", ""))[:300],
              _when(r.get("finished"))] for r in failed[-FAILURES_SHOWN:]], css_class="plain"))
    return site.page(name, "\n".join(body))


# ---- runs ------------------------------------------------------------------------------------------

def item_error(metrics: dict) -> float | None:
    """An item's error for ranking the worst: its NME (the regions metric's ``all``, an early-exit cascade's
    last stage), a sequence's jitter, or a detector's missed faces plus false positives."""
    for name in ("nme", "all", "jitter"):
        if name in metrics:
            value = metrics[name]
            if isinstance(value, list):
                value = value[-1] if value else None
            return None if value is None else float(value)
    if "tp" in metrics and "faces" in metrics:
        return float(metrics["faces"] - metrics["tp"] + metrics.get("fp", 0))
    return None


def _worst(store: Store, key: str, errors: dict[str, str]) -> list[list[object]]:
    """The gallery's rows: failed items first, then by error, highest first."""
    metrics = store.item_metrics(key)
    ranked = []
    for item, m in metrics.items():
        if m.get("unscored"):
            continue
        value = item_error(m)
        failed = item in errors or bool(m.get("failed")) or value is None
        ranked.append((not failed, -(value or 0.0), item, value, m))
    for item in errors.keys() - metrics.keys():
        ranked.append((False, 0.0, item, None, {}))
    ranked.sort(key=lambda t: t[:3])
    rows: list[list[object]] = []
    for i, (ok, _, item, value, m) in enumerate(ranked[:WORST_SHOWN], 1):
        details = json.dumps({k: v for k, v in m.items() if k not in ("nme", "all")}, sort_keys=True)
        rows.append([i, item, "" if value is None else f"{value:.4f}", "" if ok else (errors.get(item) or "failed"),
                     details])
    return rows


def _gallery(store: Store, site: Site, run: Run, protocol: Protocol) -> str:
    """The report's error gallery for one run: its worst faces drawn (ground truth green, prediction red), when
    the dataset's images are here (embedded, or ``facebench serve --root``)."""
    faces = face_results(store, run.key)[:GALLERY_FACES]
    if not faces:
        return ""
    samples, why = site.samples(protocol)
    if samples is None:
        return f'<p class="none">No crops: {esc(why)}; the worst items are listed below.</p>'
    figures = []
    for n, face in enumerate(faces):
        what = (f"FAILED {face['item']}: {face['error']}" if face["failed"]
                else f"{face['item']}: NME {face['nme'] * 100:.2f}%")
        sample_id, _, index = face["item"].rpartition("#")
        if sample_id not in samples or not index.isdigit():  # a copy of the dataset other than the run's
            figures.append(f'<figure class="gallery"><figcaption>{esc(what)} (its image is not in the dataset\'s '
                           "copy here)</figcaption></figure>")
            continue
        src = f"/run/{quote(run.key, safe='')}/face/{n}.png"
        figures.append(f'<figure class="gallery"><img src="{esc(src)}" alt="{esc(face["item"])}" '
                       f'width="{CROP}"><figcaption>{esc(what)}</figcaption></figure>')
    return f'<div class="gallery">{"".join(figures)}</div>'


def face_crop(store: Store, site: Site, key: str, n: int) -> bytes:
    """The PNG of the run's ``n``-th worst face (the gallery's order), drawn from the dataset's image."""
    run = store.get_run(key)
    protocol = site.protocols.get(run.protocol) if run is not None else None
    if run is None or protocol is None or protocol.task != "landmarks":
        raise NotFound(f"no landmark run {key!r} with a known protocol")
    faces = face_results(store, key)[:GALLERY_FACES]
    if not 0 <= n < len(faces):
        raise NotFound(f"run {key!r} has no face {n} in its gallery")
    samples, why = site.samples(protocol)
    if samples is None:
        raise NotFound(f"no crops: {why}")
    sample_id, _, index = faces[n]["item"].rpartition("#")
    sample = samples.get(sample_id)
    if sample is None or not index.isdigit():
        raise NotFound(f"item {faces[n]['item']!r} is not in the dataset's copy here")
    return crop(sample, int(index), faces[n]["prediction"])


def run_page(store: Store, site: Site, key: str) -> str:
    """``/run/{key}``: what the run is (environment, key parts), its metrics, failures and worst items."""
    run = store.get_run(key)
    if run is None:
        raise NotFound(f"no run {key!r} in the store")
    protocol = site.protocols.get(run.protocol)
    parts = run.key_parts or {}
    body = [f"<h1>Run {esc(run.key)}</h1>",
            f"<p>{link(model_href(run.model), run.model)} on {link(protocol_href(run.protocol), run.protocol)}: "
            f"{esc(run.status)}, {esc(run.n_items)} items, {esc(run.n_failures)} failed; "
            f"finished {esc(_when(run.finished) or 'not yet')}.</p>"]
    fields: list[tuple[object, object]] = [
        ("protocol hash", f"{run.protocol_hash} ({protocol_status(run, site.protocols)})"),
        ("dataset fingerprint", run.dataset_fingerprint), ("runtime", run.runtime),
        ("started", _when(run.started)), ("finished", _when(run.finished))]
    for name in ("framing", "card", "engine", "runtime_version"):
        if parts.get(name) and isinstance(parts[name], str):  # a submission's card is its own section
            fields.append((name if name != "card" else "card hash", parts[name]))
    for what in ("code", "artifacts", "extras"):
        for k, v in (parts.get(what) or {}).items():
            fields.append((f"{what}: {k}", v))
    if parts.get("settings"):
        fields.append(("settings", json.dumps(parts["settings"], sort_keys=True)))
    body += ["<h2>Key parts</h2>" + ("" if parts else '<p class="muted">Stored before key parts were kept.</p>'),
             definition_list(fields)]
    metrics = run.metrics or {}
    body.append("<h2>Metrics</h2>" + (table_html(
        ["metric", "value"], [[k, _metric_value(k, v, protocol)] for k, v in sorted(metrics.items())],
        css_class="plain") if metrics else '<p class="none">No metrics (the run is not complete).</p>'))
    failures = store.failures(run.key)
    errors = dict(failures)
    body.append(f"<h2>Failures ({len(failures)})</h2>")
    if failures:
        shown = sorted(failures)[:FAILURES_SHOWN]
        more = f" (first {len(shown)} of {len(failures)})" if len(failures) > len(shown) else ""
        body.append(table_html(["item", "error"], [[item, error] for item, error in shown], css_class="plain",
                               caption=f"Failed items{more}"))
    worst = _worst(store, run.key, errors)
    body.append("<h2>Error gallery: the worst items</h2>")
    if protocol is not None and protocol.task == "landmarks" and run.status == "complete":
        body.append(_gallery(store, site, run, protocol))
    body.append(table_html(["rank", "item", "error", "failure", "item metrics"], worst,
                           caption=f"The {len(worst)} worst items by the stored per-item error") if worst
                else '<p class="none">No per-item numbers stored.</p>')
    env = run.environment or {}
    body.append("<h2>Environment</h2>" + definition_list(
        [(k, json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v) for k, v in env.items()]))
    return site.page(f"run {run.key}", "\n".join(body))

