"""The leaderboard: measured rows and the papers' rows, per protocol, in five formats.

A measured row is keyed on (model, protocol id, protocol content hash,
dataset fingerprint): the newest complete run of each key is its row. So a
3-face debug copy of a dataset never replaces the 2,500-face result (each
copy is its own row, with its fingerprint and face count shown), and a card
change still gives one row (the newest). A run whose protocol hash is not the
current content of its protocol (built-in, or the file given) is not a
current row: it is kept apart, ``kind = "stale"``, shown as "stale protocol".

Reported rows (:mod:`facebench.report.reported`) sit in their own block,
"Reported (not measured here)", with the data and point count they were
measured on, their normaliser or test setting, and the difference to the best
measured row of the protocol (and to a measured model of the same family) on
the headline metric: context, not a ranking, since the data differ.
Latency is per device: measured runs give the host CPU's forward time per
item (batched, median and 10th-90th percentile); device-farm results add
their phones; reported rows carry the paper's device.

Units: JSON and CSV keep every metric as stored (NME and AP as fractions). The
human-facing tables (md, html, latex) show NME-like and AP-like columns
(:func:`column_kind`) as percentages: ``nme (%)`` in the header, the value
times 100 with 2 decimals. ``latex`` is one booktabs table per protocol for a
paper (:func:`render_latex`).
"""

from __future__ import annotations

import csv
import html
import io
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from facebench.paths import dumps_json
from facebench.protocol import Protocol, builtin_protocols
from facebench.report.reported import OTHER_DATA, reported
from facebench.results.store import Run, Store
from facebench.scoring import METRICS

FORMATS = ("md", "csv", "json", "html", "latex")
CURRENT, STALE, UNCHECKED = "current", "stale protocol", "protocol file not given"
REPORTED_BLOCK = "Reported (not measured here)"


def row_key(run: Run) -> tuple[str, ...]:
    """What a leaderboard row stands for: model, protocol id, protocol hash, dataset fingerprint; a submitted
    run also by its team (two teams may name their models alike, and neither replaces a measured row)."""
    base = (run.model, run.protocol, run.protocol_hash, run.dataset_fingerprint)
    return (*base, "submitted", str(run.card.get("team", ""))) if run.kind == "submitted" else base


def latest_runs(runs: Iterable[Run]) -> list[Run]:
    """The newest complete run of each :func:`row_key`."""
    newest: dict[tuple[str, ...], Run] = {}
    for r in runs:
        if r.status != "complete":
            continue
        k = row_key(r)
        if k not in newest or (r.finished or 0) > (newest[k].finished or 0):
            newest[k] = r
    return sorted(newest.values(), key=lambda r: (r.protocol, r.model, r.dataset_fingerprint))


def protocol_status(run: Run, protocols: dict[str, Protocol]) -> str:
    """current, stale protocol (the protocol's content changed since), or unchecked (its file was not given)."""
    protocol = protocols.get(run.protocol)
    if protocol is None:
        return UNCHECKED
    return CURRENT if protocol.content_hash == run.protocol_hash else STALE


class _Indexed:
    """``row["model"]`` reads the field: for callers written when rows were dicts (the CLI)."""

    def __getitem__(self, name: str) -> Any:
        try:
            return getattr(self, name)
        except AttributeError:
            raise KeyError(name) from None


@dataclass(frozen=True)
class Latency(_Indexed):
    """Time per item on one device: median and 10th-90th percentile over ``n`` measurements
    (a paper's figure: the median only).

    Phones (:func:`device_latency`) add, as the median over the repeats, each repeat's
    own 90th percentile of its measured runs (``run_p90_ms``, MLPerf Mobile's latency
    figure; not ``p90_ms``, which is the spread across repeats), init and first-inference time."""

    median_ms: float
    p10_ms: float | None = None
    p90_ms: float | None = None
    n: int | None = None
    run_p90_ms: float | None = None
    init_ms: float | None = None
    first_ms: float | None = None
    peak_memory_mb: float | None = None  # phones: the memory pass's peak (median over repeats), when run

    @classmethod
    def of(cls, ms) -> Latency:
        """The percentiles of ``ms``, the one rule for host forward times and phone repeats."""
        p10, median, p90 = np.percentile(np.asarray(ms, dtype=np.float64), [10, 50, 90])
        return cls(float(median), float(p10), float(p90), int(np.size(ms)))

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


_REPORTED_ONLY = {"reported_only": True}
_MEASURED_ONLY = {"measured_only": True}


@dataclass(frozen=True)
class Row(_Indexed):
    """One leaderboard row: measured here (``kind`` measured or stale) or reported in a paper.

    ``to_dict`` is the JSON form (``facebench leaderboard --format json``);
    the fields marked reported-only appear there for reported rows only, those marked
    measured-only (``key_parts``: what the run's key was made of) for measured and stale rows only."""

    model: str
    protocol: str
    kind: str  # measured | stale | reported | submitted (scored from a team's uploaded predictions)
    status: str = ""  # measured rows: current | stale protocol | protocol file not given
    metrics: dict = field(default_factory=dict)
    macs: float | None = None
    macs_image: str | None = None  # the image size the MACs are for, when they grow with it (an image pyramid)
    parameters: Any = None
    latency: dict[str, Latency] = field(default_factory=dict)  # "DEVICE (processor)" -> time per item
    items: int | None = None
    failures: int | None = None
    date: str = ""
    versions: dict = field(default_factory=dict)
    source: str = ""
    dataset: str = ""  # a measured row's dataset fingerprint; a reported row's data in words
    faces: int | None = None
    framing: str = ""
    points: int | None = None
    protocol_hash: str = ""
    run_key: str = ""
    key_parts: dict = field(default_factory=dict, metadata=_MEASURED_ONLY)
    note: str = ""
    variant: str = field(default="", metadata=_REPORTED_ONLY)
    gflops: float | None = field(default=None, metadata=_REPORTED_ONLY)
    source_location: str = field(default="", metadata=_REPORTED_ONLY)
    normalisation: str = field(default="", metadata=_REPORTED_ONLY)
    basis: str = field(default="", metadata=_REPORTED_ONLY)
    group: str = field(default="", metadata=_REPORTED_ONLY)
    image_read: bool = field(default=False, metadata=_REPORTED_ONLY)

    def to_dict(self) -> dict:
        out = {}
        for f in fields(self):
            if f.metadata.get("reported_only") and self.kind != "reported":
                continue
            if f.metadata.get("measured_only") and self.kind == "reported":
                continue
            value = getattr(self, f.name)
            if f.name == "latency":
                value = {device: t.to_dict() for device, t in value.items()}
            elif isinstance(value, dict):
                value = dict(value)
            out[f.name] = value
        return out


def host_latency(forward_s: np.ndarray, cpu: str | None) -> dict[str, Latency]:
    f = np.asarray(forward_s, dtype=np.float64)
    f = f[f > 0]
    if not f.size:
        return {}
    return {f"host CPU ({cpu or 'unknown'})": Latency.of(f * 1e3)}


def _macs_text(row: Row) -> str:
    """MACs in millions, with the image size they are for when they grow with it."""
    if not row.macs:
        return ""
    return f"{row.macs / 1e6:.1f}" + (f" (at {row.macs_image})" if row.macs_image else "")


def measured_row(run: Run, forward_s: np.ndarray | None = None, status: str = CURRENT) -> Row:
    env = run.environment or {}
    runtime = env.get("runtime", {})
    metrics = run.metrics or {}
    return Row(
        model=run.model, protocol=run.protocol,
        kind="submitted" if run.kind == "submitted" else "stale" if status == STALE else "measured",
        status=status, metrics=metrics,
        macs=sum(run.card.get("macs", {}).values()) or None,
        macs_image=run.card.get("options", {}).get("macs_image"),
        parameters=run.card.get("options", {}).get("parameters"),
        latency=host_latency(forward_s, env.get("cpu")) if forward_s is not None else {},
        items=run.n_items, failures=run.n_failures,
        date=time.strftime("%Y-%m-%d", time.gmtime(run.finished or run.started or 0)),
        versions={"facebench": env.get("facebench"),
                  "runtime": f"{runtime.get('runtime', run.runtime)} {runtime.get('version', '')}".strip()},
        source=f"submitted by {run.card.get('team')}" if run.kind == "submitted" else "facebench",
        dataset=run.dataset_fingerprint, faces=metrics.get("faces", run.n_items),
        # the lead's run metrics: how the face was framed and how many points compared (shown, never computed here)
        framing=metrics.get("framing") or "", points=metrics.get("points"),
        protocol_hash=run.protocol_hash, run_key=run.key, key_parts=run.key_parts or {},
    )


def reported_rows(protocol: str | None = None) -> list[Row]:
    return [Row(model=r.model, variant=r.variant, protocol=r.protocol, kind="reported", metrics=dict(r.metrics),
                macs=r.macs, gflops=r.gflops, parameters=r.params,
                latency={device: Latency(ms) for device, ms in r.latency_ms.items()}, source=r.source,
                source_location=r.source_location, dataset=r.dataset, points=r.points,
                normalisation=r.normalisation, basis=r.basis, group=r.group, image_read=r.image_read, note=r.note)
            for r in reported(protocol)]


def device_latency(records: Iterable[dict]) -> dict[str, dict[str, Latency]]:
    """model -> {"DEVICE (processor)": Latency} from the farm's successful measurements.

    Per device and processor, the newest settings' repeats count: ``median_ms``
    is the median of the repeats' medians, ``p10_ms``/``p90_ms`` their spread
    across repeats and ``n`` the number of repeats; ``run_p90_ms``, ``init_ms`` and
    ``first_ms`` (and ``peak_memory_mb``, from the memory pass) the median over repeats of each
    repeat's figure (None when no repeat has it: measurements stored before they were recorded).
    """
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in sorted(records, key=lambda r: r["finished"]):
        if r["status"] == "ok" and r["median_ms"] is not None:
            groups.setdefault((r["model"], r["device"], r["processor"]), []).append(r)
    out: dict[str, dict[str, Latency]] = {}
    for (model, device, processor), group in sorted(groups.items()):
        newest = [r for r in group if r["settings"] == group[-1]["settings"]]

        def median_of(name: str, rs: list[dict] = newest) -> float | None:
            values = [r[name] for r in rs if r.get(name) is not None]
            return float(np.median(values)) if values else None

        out.setdefault(model, {})[f"{device} ({processor})"] = replace(
            Latency.of([r["median_ms"] for r in newest]), run_p90_ms=median_of("p90_ms"),
            init_ms=median_of("init_ms"), first_ms=median_of("first_ms"), peak_memory_mb=median_of("peak_memory_mb"))
    return out


def leaderboard_rows(store: Store, protocol: str | None = None, include_reported: bool = True,
                     protocols: dict[str, Protocol] | None = None, include_stale: bool = True) -> list[Row]:
    """Measured rows (current first, then stale ones unless left out), then reported rows.

    ``protocols``: the protocols whose current content decides what is stale
    (default: the built-in ones; add a user's protocol file to check its runs).
    """
    protocols = protocols if protocols is not None else builtin_protocols()
    runs = [r for r in latest_runs(store.runs()) if protocol is None or r.protocol == protocol]
    phones = device_latency(store.device_results(status="ok"))
    rows = []
    for r in runs:
        status = protocol_status(r, protocols)
        if status == STALE and not include_stale:
            continue
        row = measured_row(r, store.forward_times(r.key), status)
        if status != STALE and row.kind != "submitted":  # a team's model is not the one the farm timed
            row.latency.update(phones.get(row.model, {}))
        rows.append(row)
    return rows + (reported_rows(protocol) if include_reported else [])


def latency_only_rows(store: Store, rows: list[Row]) -> list[Row]:
    """Rows for models timed on the farm but not evaluated for accuracy (for the latency figure)."""
    evaluated = {r.model for r in rows}
    return [Row(model=model, protocol="", kind="measured", latency=latency)
            for model, latency in device_latency(store.device_results(status="ok")).items() if model not in evaluated]


def _columns(pid: str, group: list[Row], protocols: dict[str, Protocol]) -> list[str]:
    """The protocol's columns, then any other metric a row of ``group`` has (reported subsets, e.g. pose_fr)."""
    protocol = protocols.get(pid)
    base = list(protocol.columns) if protocol and protocol.columns else []
    extra = sorted({k for r in group for k, v in r.metrics.items()
                    if k not in base and not k.startswith("_") and not isinstance(v, (dict, list, str))})
    if protocol and protocol.columns and any(r.kind != "reported" for r in group):
        return base  # measured rows: the protocol's own columns
    return base + extra


def _fmt(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, float):
        return "nan" if np.isnan(value) else f"{value:.4f}"
    return "" if value is None else str(value)


_NME_LIKE = re.compile(r"nme|^yaw(balanced|[\[(][^_]*)$|^(random|oracle)@")
_AP_LIKE = re.compile(r"^ap\d*$")
_LOWER = re.compile(r"(^|_)fr$|jitter|missed|(^|_)failed$|^stages@|^cost@")
_HIGHER = re.compile(r"auc|recall|precision|^tpr@")


def column_kind(column: str, protocol: Protocol | None = None) -> str:
    """"nme" (an NME, shown in %, lower is better), "ap" (an average precision, shown in %, higher is better)
    or "" (anything else: shown as stored).

    The rule, by name: a column containing ``nme``, a yaw bin or ``yawbalanced`` (AFLW2000-3D's NMEs), or
    ``random@``/``oracle@`` (early-exit NMEs) is an NME; ``ap``, ``ap50``, ... is an AP. By the protocol's
    metric: a ``regions`` protocol's ``all`` and region columns are NMEs, a ``wider_ap`` protocol's
    settings (easy, medium, hard) are APs."""
    if _NME_LIKE.search(column):
        return "nme"
    if _AP_LIKE.match(column):
        return "ap"
    if protocol is not None:
        options = METRICS[protocol.metric].resolve(protocol.options) if protocol.metric in METRICS else {}
        if protocol.metric == "regions" and column in {"all", *options.get("regions", ())}:
            return "nme"
        if protocol.metric == "wider_ap" and column in set(options.get("settings", ())):
            return "ap"
    return ""


def lower_is_better(column: str, protocol: Protocol | None = None) -> bool | None:
    """Which way a column is better, for marking the best value: the protocol's headline column as its
    metric's record says; NME-like, FR-like (``fr``, ``*_fr``), jitter, missed, failed, stages and cost
    columns lower; AP-like, AUC, recall, precision and TPR columns higher; None for anything else (counts:
    faces, points, detections, operating points), which is never marked."""
    rule = headline(protocol)
    if rule is not None and rule[0] == column:
        return rule[1]
    kind = column_kind(column, protocol)
    if kind:
        return kind == "nme"
    if _LOWER.search(column):
        return True
    if _HIGHER.search(column):
        return False
    return None


def _column_label(column: str, protocol: Protocol | None) -> str:
    """A human-facing table's header of a metric column: ``nme (%)`` for a percentage."""
    return f"{column} (%)" if column_kind(column, protocol) else column


def _metric_text(column: str, value, protocol: Protocol | None) -> str:
    """A human-facing table's metric cell: a percentage column's value times 100 with 2 decimals."""
    number = _number(value)
    if number is not None and column_kind(column, protocol):
        return f"{number * 100:.2f}"
    return _fmt(value)


def _latency_text(latency: dict[str, Latency]) -> str:
    parts = []
    for device, t in latency.items():
        spread = f" ({t.p10_ms:.2f}-{t.p90_ms:.2f})" if t.p10_ms is not None else ""
        run_p90 = f", p90 {t.run_p90_ms:.2f} ms" if t.run_p90_ms is not None else ""  # a phone's, per run
        parts.append(f"{device}: {t.median_ms:.2f} ms{spread}{run_p90}")
    return "; ".join(parts)


def headline(protocol: Protocol | None) -> tuple[str, bool] | None:
    """The metric a protocol is ranked on and whether lower is better, from its metric's record
    (None: no such protocol or metric)."""
    if protocol is None:
        return None
    spec = METRICS.get(protocol.metric)
    if spec is None:
        return None
    return spec.headline_for(protocol.options)[0], not spec.higher_is_better


def family(name: str) -> str:
    """A model's family for matching papers' rows with measured ones: 'BlazeFace (paper)' -> 'blazeface'."""
    return re.sub(r"[^a-z0-9]", "", name.split("(")[0].lower())


def _number(value) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value):
        return float(value)
    return None


def versus_measured(row: Row, measured: list[Row], protocol: Protocol | None) -> str:
    """The reported row's headline metric minus the best measured row's, and minus the same family's."""
    rule = headline(protocol)
    if rule is None:
        return ""
    key, lower = rule
    mine = _number(row.metrics.get(key))
    if protocol is not None and protocol.faces:  # a partial copy (a debug subset) is no basis for a difference
        partial = sorted({r.faces for r in measured if r.faces != protocol.faces and r.faces is not None})
        measured = [r for r in measured if r.faces == protocol.faces]
        if mine is not None and not measured and partial:
            return (f"no full-set measured row ({protocol.faces} faces); measured rows have "
                    f"{', '.join(str(n) for n in partial)}")
    scored: list[tuple[Row, float]] = []
    for r in measured:
        value = _number(r.metrics.get(key))
        if value is not None:
            scored.append((r, value))
    if mine is None or not scored:
        return ""
    best = (min if lower else max)(scored, key=lambda rv: rv[1])
    parts = [f"{key} {mine - best[1]:+.4f} vs best measured ({best[0].model})"]
    fam = family(row.model)
    same = [(r, v) for r, v in scored if fam and (family(r.model).startswith(fam) or fam.startswith(family(r.model)))]
    if same:
        near = (min if lower else max)(same, key=lambda rv: rv[1])
        if near[0] is not best[0]:
            parts.append(f"{mine - near[1]:+.4f} vs same family ({near[0].model})")
        else:
            parts[0] += " (same family)"
    return "; ".join(parts)


def _dataset_text(r: Row) -> str:
    fingerprint = (r.dataset or "")[:12]
    faces = r.faces
    return f"{fingerprint} ({faces} faces)" if faces is not None else fingerprint


def measured_table(pid: str, group: list[Row], protocols: dict[str, Protocol]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of a protocol's measured (or stale) rows, in the order given."""
    columns = _columns(pid, group, protocols)
    points = [] if "points" in columns else ["points"]
    protocol = protocols.get(pid)
    labels = [_column_label(c, protocol) for c in columns]
    header = ["model", "kind", *labels, "framing", *points, "dataset (faces)", "MACs (M)", "params", "latency",
              "failures", "date", "versions", "source"]
    body = []
    for r in group:
        versions = " ".join(f"{k} {v}" for k, v in r.versions.items() if v)
        failures = f"{r.failures}/{r.items}" if r.items is not None else ""
        kind = STALE if r.kind == "stale" else r.kind
        status = f" (protocol {r.protocol_hash}: {r.status})" if r.status != CURRENT else ""
        source = (r.source or "facebench") + status  # a submitted row: "submitted by TEAM"
        body.append([r.model, kind, *[_metric_text(c, r.metrics.get(c), protocol) for c in columns], r.framing or "",
                     *[_fmt(r.points) for _ in points], _dataset_text(r),
                     _macs_text(r), _fmt(r.parameters),
                     _latency_text(r.latency), failures, r.date, versions, source])
    return header, body


def reported_table(pid: str, group: list[Row], measured: list[Row],
                   protocols: dict[str, Protocol]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of a protocol's reported rows, with their data, setting and the delta to measured rows."""
    columns = _columns(pid, group, protocols)
    protocol = protocols.get(pid)
    labels = [_column_label(c, protocol) for c in columns]
    header = ["model", "kind", *labels, "vs measured here", "variant", "normalisation / test setting", "basis",
              "measured on", "points", "MACs (M)", "GFLOPs", "params (M)", "latency", "read from image", "source"]
    body = []
    for r in group:
        source = r.source + (f" <{r.source_location}>" if r.source_location else "")
        if r.note:
            source += f" ({r.note})"
        params = r.parameters
        body.append([r.model, r.kind, *[_metric_text(c, r.metrics.get(c), protocol) for c in columns],
                     versus_measured(r, measured, protocol), r.variant or "", r.normalisation or "",
                     r.basis or "", r.dataset, _fmt(r.points),
                     f"{r.macs / 1e6:.1f}" if r.macs else "", f"{r.gflops:g}" if r.gflops else "",
                     f"{params / 1e6:.2f}" if isinstance(params, (int, float)) else "",
                     _latency_text(r.latency), "yes" if r.image_read else "", source])
    return header, body


def table(pid: str, group: list[Row], protocols: dict[str, Protocol]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the measured rows of ``group`` (reported rows: :func:`blocks`)."""
    return measured_table(pid, [r for r in group if r.kind != "reported"], protocols)


def _title(pid: str, protocols: dict[str, Protocol]) -> str:
    protocol = protocols.get(pid)
    if protocol:
        return f"{pid}: {protocol.title}"
    if pid in OTHER_DATA:
        return f"{pid}: measured on {OTHER_DATA[pid]}"
    return pid


def blocks(pid: str, group: list[Row], protocols: dict[str, Protocol]) -> list[tuple[str, str, str, list, list]]:
    """A protocol's tables: (block, title, caption, header, body) for measured, submitted, stale and each reported
    group."""
    measured = [r for r in group if r.kind == "measured"]
    stale = [r for r in group if r.kind == "stale"]
    submitted = [r for r in group if r.kind == "submitted"]
    out = []
    if measured:
        out.append(("measured", "Measured here", "", *measured_table(pid, measured, protocols)))
    if submitted:
        caption = ("Scored here, by facebench score's code, from predictions a team uploaded (facebench submit): "
                   "the ground truth is held out, but the model was not run here.")
        out.append(("submitted", "Submitted", caption, *measured_table(pid, submitted, protocols)))
    if stale:
        caption = ("Stored runs of an earlier content of this protocol (their protocol hash is not the current "
                   "one): kept for reference, not comparable with the rows above.")
        out.append(("stale", "Stale protocol (not current)", caption, *measured_table(pid, stale, protocols)))
    rep = [r for r in group if r.kind == "reported"]
    groups: dict[str, list[Row]] = {}
    for r in rep:
        groups.setdefault(r.group or "", []).append(r)
    for name, rows in sorted(groups.items()):
        title = REPORTED_BLOCK + (f": {name}" if name.startswith("test setting") else
                                  f": test setting {name}" if name else "")
        caption = ("Figures published by their authors or third parties on their own copy of the data, crops and "
                   "settings, never run here: 'measured on', 'points' and 'normalisation / test setting' say what they "
                   "are; 'basis' says how the normaliser or setting is known (stated, inferred from the source's own "
                   "figures, the benchmark's single convention, or not stated). 'vs measured here' is the difference "
                   "on the headline metric to the best measured row of this protocol (and to a measured model of the "
                   "same family): context, not a ranking. Disagreeing sources are separate rows.")
        if name:
            caption += (" This protocol does not fix a test setting (facebench runs each detector at its own input); "
                        "rows of different settings are not comparable with each other.")
        if pid in OTHER_DATA:
            caption += f" Measured on {OTHER_DATA[pid]}: no facebench protocol runs on that data."
        out.append(("reported", title, caption, *reported_table(pid, rows, measured, protocols)))
    return out


def _grouped(rows: Iterable[Row]) -> dict[str, list[Row]]:
    """Rows by protocol; in each, measured rows first, then stale, then reported, by model. Runs of a protocol
    whose file was not given are grouped by content hash: two versions of a user's protocol never share a table."""
    order = {"measured": 0, "submitted": 1, "stale": 2, "reported": 3}
    out: dict[str, list[Row]] = {}
    for r in sorted(rows, key=lambda r: (order.get(r.kind, 4), r.model, r.dataset or "")):
        section = f"{r.protocol} [protocol {r.protocol_hash}]" if r.status == UNCHECKED else r.protocol
        out.setdefault(section, []).append(r)
    return dict(sorted(out.items()))


def render(rows: list[Row], fmt: str, protocols: dict[str, Protocol] | None = None) -> str:
    protocols = protocols if protocols is not None else builtin_protocols()
    if fmt == "json":  # valid JSON: a NaN/inf metric becomes null, its value kept under "non_finite"
        return dumps_json({"rows": [r.to_dict() for r in rows]}, indent=2, sort_keys=True)
    if fmt == "csv":
        return _render_csv(rows)
    if fmt == "html":
        return render_html_tables(rows, protocols)
    if fmt == "latex":
        return render_latex(rows, protocols)
    if fmt != "md":
        raise ValueError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    lines = ["# facebench leaderboard", ""]
    if not rows:
        lines.append("No results yet: run `facebench run`.")
    for pid, group in _grouped(rows).items():
        lines += [f"## {_md_line(_title(pid, protocols))}", ""]
        for _, title, caption, header, body in blocks(pid, group, protocols):
            lines += [f"### {_md_line(title)}", ""] + ([_md_line(caption), ""] if caption else [])
            lines.append("| " + " | ".join(_md_cell(h) for h in header) + " |")
            lines.append("|" + "---|" * len(header))
            lines += ["| " + " | ".join(_md_cell(c) for c in cells) + " |" for cells in body]
            lines.append("")
    return "\n".join(lines)


def _md_line(text: str) -> str:
    """Text on one Markdown line: a line break (any kind) in a name must not start a row or a heading."""
    return " ".join(str(text).splitlines())


def _md_cell(text: str) -> str:
    """A Markdown table cell: one line, ``|`` escaped so a name cannot add a column."""
    return _md_line(text).replace("\\", "\\\\").replace("|", "\\|")


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(value):
    """A CSV cell a spreadsheet will not run: text starting with = + - @ tab or CR gets a leading
    single quote (OWASP's CSV injection advice). Numbers (-0.5) are left as they are."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        try:
            float(value)
            return value
        except ValueError:
            return "'" + value
    return value


class _SafeWriter:
    """``csv.writer`` whose rows go through :func:`_csv_cell`."""

    def __init__(self, out):
        self._writer = csv.writer(out)

    def writerow(self, row):
        self._writer.writerow([_csv_cell(v) for v in row])


def _render_csv(rows: list[Row]) -> str:
    fixed = {"failures", "faces", "framing", "points"}  # row columns of their own: never a second column of a name
    metric_names = sorted({k for r in rows for k, v in r.metrics.items()
                           if not k.startswith("_") and not isinstance(v, (dict, list)) and k not in fixed})
    out = io.StringIO()
    writer = _SafeWriter(out)
    writer.writerow(["protocol", "model", "kind", *metric_names, "status", "variant", "macs", "gflops", "parameters",
                     "latency", "items", "failures", "faces", "framing", "points", "date", "facebench", "runtime",
                     "source", "source_location", "dataset", "protocol_hash", "normalisation", "basis", "group",
                     "image_read", "note"])
    for r in rows:
        writer.writerow([r.protocol, r.model, r.kind, *[_fmt(r.metrics.get(m)) for m in metric_names],
                         r.status, r.variant, r.macs or "", _fmt(r.gflops),
                         r.parameters or "", _latency_text(r.latency), _fmt(r.items), _fmt(r.failures),
                         _fmt(r.faces), r.framing, _fmt(r.points), r.date,
                         r.versions.get("facebench") or "", r.versions.get("runtime") or "", r.source,
                         r.source_location, r.dataset, r.protocol_hash,
                         r.normalisation, r.basis, r.group,
                         _fmt(r.image_read), r.note])
    return out.getvalue()


def render_html_tables(rows: list[Row], protocols: dict[str, Protocol]) -> str:
    """HTML tables, per protocol one per block; reported rows carry class ``reported``, stale ones ``stale``."""
    parts = []
    for pid, group in _grouped(rows).items():
        for block, title, caption, header, body in blocks(pid, group, protocols):
            head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
            trs = "".join(f'<tr class="{block}">' + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>"
                          for cells in body)
            cap = html.escape(title) + (f'<br><small>{html.escape(caption)}</small>' if caption else "")
            parts.append(f'<table class="leaderboard" data-protocol="{html.escape(pid)}" data-block="{block}">'
                         f"<caption>{cap}</caption><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table>")
    return "\n".join(parts)


def write_leaderboard_files(rows: list[Row], out: Path, protocols: dict[str, Protocol] | None = None) -> list[Path]:
    """``leaderboard.md``, ``leaderboard.csv`` and ``results.json`` in ``out``, each written atomically."""
    from facebench.paths import write_atomic

    return [write_atomic(Path(out) / name, render(rows, fmt, protocols))
            for name, fmt in (("leaderboard.md", "md"), ("leaderboard.csv", "csv"), ("results.json", "json"))]


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_LATEX_RE = re.compile("|".join(re.escape(c) for c in _LATEX_SPECIAL))


def latex_escape(text) -> str:
    """Text as LaTeX typesets it literally: ``\\ & % $ # _ { } ~ ^`` escaped, on one line."""
    return _LATEX_RE.sub(lambda m: _LATEX_SPECIAL[m.group(0)], _md_line(str(text)))


def _latex_value(column: str, value, protocol: Protocol | None) -> str:
    text = _metric_text(column, value, protocol)
    return "--" if text in ("", "nan") else latex_escape(text)


def _best(column: str, rows: list[Row], protocol: Protocol | None) -> float | None:
    """The best finite value of ``column`` among ``rows`` (None: no direction, or no value)."""
    lower = lower_is_better(column, protocol)
    values = [v for v in (_number(r.metrics.get(column)) for r in rows) if v is not None]
    if lower is None or not values:
        return None
    return min(values) if lower else max(values)


def _units_text(columns: list[str], protocol: Protocol | None) -> str:
    nme = [c for c in columns if column_kind(c, protocol) == "nme"]
    ap = [c for c in columns if column_kind(c, protocol) == "ap"]
    norm = protocol.options.get("norm", "inter-ocular") if protocol is not None else ""
    parts = []
    if nme:
        parts.append(f"{', '.join(nme)} in % of the {norm} distance" if norm else f"{', '.join(nme)} in %")
    if ap:
        parts.append(f"{', '.join(ap)} in %")
    fractions = [c for c in columns if c not in nme and c not in ap and lower_is_better(c, protocol) is not None]
    if fractions:
        parts.append(f"{', '.join(fractions)} as fractions")
    return "; ".join(parts)


def _latex_table(pid: str, group: list[Row], protocols: dict[str, Protocol]) -> str:
    protocol = protocols.get(pid)
    measured = [r for r in group if r.kind == "measured"]
    rep = [r for r in group if r.kind == "reported"]
    columns = _columns(pid, measured + rep, protocols)
    extra = ["framing", *([] if "points" in columns else ["points"])]
    best = {c: _best(c, measured, protocol) for c in columns}
    header = ["model", *[_column_label(c, protocol) for c in columns], *extra]
    spec = "l" + "r" * len(columns) + "l" + ("r" if "points" in extra else "")
    lines = [r"\begin{table}[tbp]", r"\centering"]
    if protocol is not None:
        split = f", split {protocol.split}" if protocol.split else ""
        faces = sorted({r.faces for r in measured if r.faces is not None})
        counted = (f"{protocol.faces} faces" if protocol.faces else
                   f"{', '.join(str(n) for n in faces)} faces" if faces else "face count not known")
        what = f"{pid}: {protocol.title}. Data: {protocol.dataset}{split} ({counted})"
    else:
        what = f"{pid}: measured on {OTHER_DATA.get(pid, 'data no built-in protocol runs on')}"
    units = _units_text(columns, protocol)
    caption = latex_escape(what + (f". Units: {units}" if units else "") + ". Bold: best measured value per column")
    if rep:
        caption += r"; rows marked $^\dagger$ are reported, not measured here"
    lines.append(r"\caption{" + caption + ".}")
    lines.append(r"\label{tab:" + re.sub(r"[^A-Za-z0-9:.-]", "-", pid) + "}")
    lines += [r"\begin{tabular}{" + spec + "}", r"\toprule",
              " & ".join(latex_escape(h) for h in header) + r" \\", r"\midrule"]

    def cells(r: Row, reported: bool) -> list[str]:
        out = []
        for c in columns:
            text = _latex_value(c, r.metrics.get(c), protocol)
            value = _number(r.metrics.get(c))
            if reported and text != "--":
                text = r"\textit{" + text + "}"
            elif not reported and value is not None and best[c] is not None and value == best[c]:
                text = r"\textbf{" + text + "}"
            out.append(text)
        framing = latex_escape(r.framing) if r.framing else "--"
        points = [] if "points" in columns else [_latex_value("points", r.points, protocol)]
        return out + [framing, *points]

    for r in measured:
        lines.append(" & ".join([latex_escape(r.model), *cells(r, False)]) + r" \\")
    if not measured:
        lines.append(r"\multicolumn{" + str(len(header)) + r"}{l}{no measured row} \\")
    if rep:
        lines.append(r"\midrule")
        lines.append(r"\multicolumn{" + str(len(header)) + r"}{l}{\textit{"
                     + latex_escape(REPORTED_BLOCK) + r"}} \\")
        for r in rep:
            name = latex_escape(r.model + (f" ({r.variant})" if r.variant else ""))
            lines.append(" & ".join([r"\textit{" + name + r"}$^\dagger$", *cells(r, True)]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if rep:
        lines += [r"\par\smallskip", r"{\footnotesize $^\dagger$ reported, not measured here: the authors' own data, "
                  r"crops and settings (\texttt{facebench leaderboard --format md} names each source).}"]
    lines.append(r"\end{table}")
    return "\n".join(lines)


def render_latex(rows: list[Row], protocols: dict[str, Protocol]) -> str:
    """One booktabs table per protocol (needs ``\\usepackage{booktabs}``): the measured rows, the best value of
    each column with a direction (:func:`lower_is_better`) in bold among them, then the reported rows in their
    own block, in italics with a dagger. Stale rows are left out (not comparable). Every cell is escaped."""
    parts = ["% facebench leaderboard; needs \\usepackage{booktabs}"]
    for pid, group in _grouped(rows).items():
        group = [r for r in group if r.kind in ("measured", "reported")]
        if group:
            parts.append(_latex_table(pid, group, protocols))
    if len(parts) == 1:
        parts.append("% no results yet: run `facebench run`")
    return "\n\n".join(parts) + "\n"
