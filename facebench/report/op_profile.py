"""The per-op table of the HTML report: where a phone spends a model's time.

From the farm's op-profile passes (``facebench bench --op-profile``): per model
and device (with its processor label), the newest successful measurement that
has a profile, its ``TOP`` slowest nodes by average time. The profile comes
from a separate run after the timed one, so its times are not the latency
figures (profiling slows the run); the shares (%) are what to compare.
"""

from __future__ import annotations

import html

from facebench.results.store import Store

TOP = 10


def op_profiles(store: Store, top: int = TOP) -> dict[tuple[str, str], dict]:
    """(model, "DEVICE (processor)") -> {"key", "rows" (the slowest ``top``), "n_ops"} from the newest profile."""
    out: dict[tuple[str, str], dict] = {}
    for r in store.device_results(status="ok"):  # in finishing order: a newer one replaces an older one
        if not r.get("op_profile_rows"):
            continue
        rows = store.device_op_profile(r["key"])
        if rows:
            slowest = sorted(rows, key=lambda op: -op["avg_ms"])[:top]
            out[(r["model"], f"{r['device']} ({r['processor']})")] = {"key": r["key"], "rows": slowest,
                                                                       "n_ops": len(rows)}
    return out


def _row(op: dict) -> str:
    percent = "" if op["percent"] is None else f"{op['percent']:.1f}"
    called = "" if op["times_called"] is None else str(op["times_called"])
    return (f"<tr><td>{html.escape(op['node_type'])}</td><td>{html.escape(op['name'])}</td>"
            f"<td>{op['avg_ms']:.3f}</td><td>{percent}</td><td>{called}</td></tr>")


def render_op_profiles(store: Store, top: int = TOP) -> str:
    """The report's section: one small table per model and device; "" when nothing was profiled."""
    tables = []
    for (model, device), p in sorted(op_profiles(store, top).items()):
        body = "".join(_row(op) for op in p["rows"])
        tables.append(
            f'<table class="leaderboard op-profile"><caption>{html.escape(model)} on {html.escape(device)} '
            f"<small>(the {len(p['rows'])} slowest of {p['n_ops']} nodes; measurement {html.escape(p['key'])})"
            "</small></caption><tr><th>node type</th><th>name</th><th>avg ms</th><th>%</th><th>times called</th></tr>"
            f"{body}</table>")
    if not tables:
        return ""
    return ('<h2 id="op-profile">Per-op profile per device</h2><p class="none">From a separate profiling run after '
            "each timed run (profiling slows a run: compare the shares, not these times with the latency).</p>"
            + "".join(tables))
