"""The leaderboard: one row per model and protocol, measured and reported, in four formats.

Measured rows come from the results store. A model whose card changed has
several complete runs for one protocol; the newest is its row (the others
stay in the store). Reported rows (:mod:`facebench.reported`) are marked
``reported`` with their source, and sorted after the measured ones.
Latency is per device: measured runs give the host CPU's forward time per
item (batched, median and 10th-90th percentile); device-farm results add
their phones; reported rows carry the paper's device.
"""

from __future__ import annotations

import csv
import html
import io
import json
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from facebench.protocol import Protocol, builtin_protocols
from facebench.reported import reported
from facebench.store import Run, Store

FORMATS = ("md", "csv", "json", "html")


def latest_runs(runs: Iterable[Run]) -> list[Run]:
    """The newest complete run of each (model, protocol)."""
    newest: dict[tuple[str, str], Run] = {}
    for r in runs:
        k = (r.model, r.protocol)
        if k not in newest or (r.finished or 0) > (newest[k].finished or 0):
            newest[k] = r
    return sorted(newest.values(), key=lambda r: (r.protocol, r.model))


def host_latency(forward_s: np.ndarray, cpu: str | None) -> dict[str, dict]:
    f = np.asarray(forward_s, dtype=np.float64)
    f = f[f > 0]
    if not f.size:
        return {}
    p10, median, p90 = np.percentile(f * 1e3, [10, 50, 90])
    return {f"host CPU ({cpu or 'unknown'})": {"median_ms": float(median), "p10_ms": float(p10),
                                               "p90_ms": float(p90), "n": int(f.size)}}


def measured_row(run: Run, forward_s: np.ndarray | None = None) -> dict:
    env = run.environment or {}
    runtime = env.get("runtime", {})
    return {
        "model": run.model, "protocol": run.protocol, "kind": "measured",
        "metrics": run.metrics or {},
        "macs": sum(run.card.get("macs", {}).values()) or None,
        "parameters": run.card.get("options", {}).get("parameters"),
        "latency": host_latency(forward_s, env.get("cpu")) if forward_s is not None else {},
        "items": run.n_items, "failures": run.n_failures,
        "date": time.strftime("%Y-%m-%d", time.gmtime(run.finished or run.started or 0)),
        "versions": {"facebench": env.get("facebench"),
                     "runtime": f"{runtime.get('runtime', run.runtime)} {runtime.get('version', '')}".strip()},
        "source": "facebench", "dataset": run.dataset_fingerprint, "protocol_hash": run.protocol_hash,
        "run_key": run.key, "note": "",
    }


def reported_rows(protocol: str | None = None) -> list[dict]:
    return [{"model": r.model, "protocol": r.protocol, "kind": "reported", "metrics": dict(r.metrics),
             "macs": r.macs, "parameters": None,
             "latency": {device: {"median_ms": ms} for device, ms in r.latency_ms.items()},
             "items": None, "failures": None, "date": "", "versions": {}, "source": r.source,
             "dataset": r.dataset, "protocol_hash": "", "run_key": "", "note": r.note}
            for r in reported(protocol)]


def device_latency(records: Iterable[dict]) -> dict[str, dict[str, dict]]:
    """model -> {"DEVICE (processor)": summary} from the farm's successful measurements.

    Per device and processor, the newest settings' repeats count: ``median_ms``
    is the median of the repeats' medians, ``p10_ms``/``p90_ms`` their spread
    across repeats and ``n`` the number of repeats.
    """
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in sorted(records, key=lambda r: r["finished"]):
        if r["status"] == "ok" and r["median_ms"] is not None:
            groups.setdefault((r["model"], r["device"], r["processor"]), []).append(r)
    out: dict[str, dict[str, dict]] = {}
    for (model, device, processor), group in sorted(groups.items()):
        newest = [r["median_ms"] for r in group if r["settings"] == group[-1]["settings"]]
        p10, median, p90 = np.percentile(newest, [10, 50, 90])
        out.setdefault(model, {})[f"{device} ({processor})"] = {
            "median_ms": float(median), "p10_ms": float(p10), "p90_ms": float(p90), "n": len(newest)}
    return out


def leaderboard_rows(store: Store, protocol: str | None = None, include_reported: bool = True) -> list[dict]:
    runs = [r for r in latest_runs(store.runs()) if protocol is None or r.protocol == protocol]
    phones = device_latency(store.device_results(status="ok"))
    rows = [measured_row(r, store.forward_times(r.key)) for r in runs]
    for row in rows:
        row["latency"].update(phones.get(row["model"], {}))
    return rows + (reported_rows(protocol) if include_reported else [])


def latency_only_rows(store: Store, rows: list[dict]) -> list[dict]:
    """Rows for models timed on the farm but not evaluated for accuracy (for the latency figure)."""
    evaluated = {r["model"] for r in rows}
    return [{"model": model, "protocol": "", "kind": "measured", "latency": latency}
            for model, latency in device_latency(store.device_results(status="ok")).items() if model not in evaluated]


def _columns(pid: str, group: list[dict], protocols: dict[str, Protocol]) -> list[str]:
    protocol = protocols.get(pid)
    if protocol and protocol.columns:
        return list(protocol.columns)
    return sorted({k for r in group for k in r["metrics"]})


def _fmt(value) -> str:
    if isinstance(value, float):
        return "nan" if np.isnan(value) else f"{value:.4f}"
    return "" if value is None else str(value)


def _latency_text(latency: dict) -> str:
    parts = []
    for device, t in latency.items():
        spread = f" ({t['p10_ms']:.2f}-{t['p90_ms']:.2f})" if "p10_ms" in t else ""
        parts.append(f"{device}: {t['median_ms']:.2f} ms{spread}")
    return "; ".join(parts)


def table(pid: str, group: list[dict], protocols: dict[str, Protocol]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of one protocol's table, rows in the order given."""
    columns = _columns(pid, group, protocols)
    header = ["model", "kind", *columns, "MACs (M)", "params", "latency", "failures", "date", "versions", "source"]
    body = []
    for r in group:
        versions = " ".join(f"{k} {v}" for k, v in r["versions"].items() if v)
        failures = f"{r['failures']}/{r['items']}" if r["items"] is not None else ""
        source = r["source"] if r["kind"] == "reported" else f"dataset {r['dataset']}"
        if r["note"]:
            source += f" ({r['note']})"
        body.append([r["model"], r["kind"], *[_fmt(r["metrics"].get(c)) for c in columns],
                     f"{r['macs'] / 1e6:.1f}" if r["macs"] else "", _fmt(r["parameters"]),
                     _latency_text(r["latency"]), failures, r["date"], versions, source])
    return header, body


def _grouped(rows: Iterable[dict]) -> dict[str, list[dict]]:
    """Rows by protocol; in each, measured rows first, then reported, by model."""
    out: dict[str, list[dict]] = {}
    for r in sorted(rows, key=lambda r: (r["kind"] != "measured", r["model"])):
        out.setdefault(r["protocol"], []).append(r)
    return dict(sorted(out.items()))


def render(rows: list[dict], fmt: str, protocols: dict[str, Protocol] | None = None) -> str:
    protocols = protocols if protocols is not None else builtin_protocols()
    if fmt == "json":
        return json.dumps({"rows": rows}, indent=2, sort_keys=True)
    if fmt == "csv":
        return _render_csv(rows)
    if fmt == "html":
        return render_html_tables(rows, protocols)
    if fmt != "md":
        raise ValueError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    lines = ["# facebench leaderboard", ""]
    if not rows:
        lines.append("No results yet: run `facebench run`.")
    for pid, group in _grouped(rows).items():
        protocol = protocols.get(pid)
        lines += [f"## {pid}: {protocol.title}" if protocol else f"## {pid}", ""]
        header, body = table(pid, group, protocols)
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        lines += ["| " + " | ".join(c.replace("|", "/") for c in cells) + " |" for cells in body]
        lines.append("")
    return "\n".join(lines)


def _render_csv(rows: list[dict]) -> str:
    metric_names = sorted({k for r in rows for k in r["metrics"]})
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["protocol", "model", "kind", *metric_names, "macs", "parameters", "latency", "items", "failures",
                     "date", "facebench", "runtime", "source", "dataset", "note"])
    for r in rows:
        writer.writerow([r["protocol"], r["model"], r["kind"], *[_fmt(r["metrics"].get(m)) for m in metric_names],
                         r["macs"] or "", r["parameters"] or "", _latency_text(r["latency"]), _fmt(r["items"]),
                         _fmt(r["failures"]), r["date"], r["versions"].get("facebench") or "",
                         r["versions"].get("runtime") or "", r["source"], r["dataset"], r["note"]])
    return out.getvalue()


def render_html_tables(rows: list[dict], protocols: dict[str, Protocol]) -> str:
    """HTML tables (one per protocol); reported rows carry class ``reported``."""
    parts = []
    for pid, group in _grouped(rows).items():
        header, body = table(pid, group, protocols)
        kinds = [r["kind"] for r in group]
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        trs = "".join(f'<tr class="{kind}">' + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>"
                      for kind, cells in zip(kinds, body))
        parts.append(f'<table class="leaderboard" data-protocol="{html.escape(pid)}"><thead><tr>{head}</tr></thead>'
                     f"<tbody>{trs}</tbody></table>")
    return "\n".join(parts)


def write_leaderboard_files(rows: list[dict], out: Path, protocols: dict[str, Protocol] | None = None) -> list[Path]:
    """``leaderboard.md``, ``leaderboard.csv`` and ``results.json`` in ``out``, each written atomically."""
    from facebench.report import write_atomic

    return [write_atomic(Path(out) / name, render(rows, fmt, protocols))
            for name, fmt in (("leaderboard.md", "md"), ("leaderboard.csv", "csv"), ("results.json", "json"))]
