"""``facebench datasets``: the datasets facebench reads, and what a copy of one holds."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from facebench.cli.main import main
from facebench.errors import UsageError


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

    spec = get_spec(name)
    if spec.needs_root and root is None:
        raise UsageError(f"dataset {name} needs --root pointing at your copy")
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
