"""Cached redraw: a cold ``write_report`` against a second one with nothing changed, in one process.

Every figure is keyed on a hash of what it draws (``<name>.key`` beside it,
:mod:`facebench.report.plots`), so the second report draws no figure; the
target is a cached report under 0.1 of the cold one's time. Reads a results
store (default: facebench's own; ``facebench run`` fills it) and writes into a
fresh temporary folder (or ``--out``, emptied of figures first).

    python benchmarks/report_cache.py --store /tmp/fig.sqlite
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from facebench.paths import default_store_path
from facebench.report.html import write_report
from facebench.results.store import Store

FIGURE_SUFFIXES = (".png", ".svg", ".pdf", ".key")


def figure_mtimes(out: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.suffix in FIGURE_SUFFIXES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=None, help="results store (default: facebench's)")
    parser.add_argument("--out", type=Path, default=None, help="report folder (default: a temporary one)")
    args = parser.parse_args()
    store_path = args.store or Path(default_store_path())
    if not store_path.exists():
        raise SystemExit(f"no results store at {store_path}: run `facebench run` first, or pass --store")
    out = args.out or Path(tempfile.mkdtemp(prefix="facebench-report-cache-"))
    for p in figure_mtimes(out) if out.exists() else {}:
        p.unlink()
    with Store(store_path) as db:
        start = time.perf_counter()
        write_report(db, out)
        cold = time.perf_counter() - start
        before = figure_mtimes(out)
        start = time.perf_counter()
        write_report(db, out)
        warm = time.perf_counter() - start
    rewritten = [p for p, t in figure_mtimes(out).items() if before.get(p) != t]
    figures = sum(p.suffix == ".png" for p in before)
    print(f"{figures} figures in {out}")
    print(f"cold report   {cold:7.2f} s")
    print(f"cached report {warm:7.2f} s  ({len(rewritten)} figure files rewritten)")
    print(f"ratio         {warm / cold:7.3f}  (target < 0.1)")
    if args.out is None:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
