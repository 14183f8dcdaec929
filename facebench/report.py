"""The leaderboard: stored runs as rows, rendered to Markdown and JSON.

Files are written atomically (a temporary file renamed into place), so a
reader never sees half a report.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Iterable

from facebench.protocol import Protocol, builtin_protocols
from facebench.store import Run


def write_atomic(path: str | Path, content: str | bytes) -> Path:
    """Write text or bytes to a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if isinstance(content, bytes) else "w") as f:
            f.write(content)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def row(run: Run) -> dict:
    env = run.environment or {}
    runtime = env.get("runtime", {})
    return {
        "model": run.model,
        "protocol": run.protocol,
        "protocol_hash": run.protocol_hash,
        "dataset_fingerprint": run.dataset_fingerprint,
        "metrics": run.metrics or {},
        "macs": sum(run.card.get("macs", {}).values()),
        "items": run.n_items,
        "failures": run.n_failures,
        "runtime": f"{runtime.get('runtime', run.runtime)} {runtime.get('version', '')}".strip(),
        "cpu": env.get("cpu"),
        "facebench": env.get("facebench"),
        "date": time.strftime("%Y-%m-%d", time.gmtime(run.finished or run.started or 0)),
        "kind": "measured",
    }


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value)


def render_markdown(rows: Iterable[dict], protocols: dict[str, Protocol] | None = None) -> str:
    protocols = protocols if protocols is not None else builtin_protocols()
    by_protocol: dict[str, list[dict]] = {}
    for r in rows:
        by_protocol.setdefault(r["protocol"], []).append(r)
    lines = ["# facebench leaderboard", ""]
    if not by_protocol:
        lines.append("No results yet: run `facebench run`.")
    for pid, group in sorted(by_protocol.items()):
        protocol = protocols.get(pid)
        columns = list(protocol.columns) if protocol and protocol.columns else sorted(group[0]["metrics"])
        title = f"{pid}: {protocol.title}" if protocol else pid
        lines += [f"## {title}", ""]
        header = ["model", *columns, "MACs (M)", "failures", "runtime", "CPU", "date", "kind"]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for r in sorted(group, key=lambda r: r["model"]):
            cells = [r["model"], *[_fmt(r["metrics"].get(c)) for c in columns], f"{r['macs'] / 1e6:.1f}" if r["macs"] else "n/a",
                     f"{r['failures']}/{r['items']}", r["runtime"], r["cpu"] or "", r["date"], r["kind"]]
            lines.append("| " + " | ".join(str(c) for c in cells) + " |")
        lines.append("")
    return "\n".join(lines)


def write_reports(out_dir: str | Path, runs: Iterable[Run]) -> tuple[Path, Path]:
    rows = [row(r) for r in runs]
    out_dir = Path(out_dir)
    md = write_atomic(out_dir / "leaderboard.md", render_markdown(rows))
    js = write_atomic(out_dir / "results.json", json.dumps({"results": rows}, indent=2, sort_keys=True))
    return md, js
