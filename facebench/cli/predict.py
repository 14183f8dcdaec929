"""``facebench predict``: a model on your own images."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from facebench.cli.main import main


@main.command()
@click.option("-m", "--model", "model", required=True, help="Registered name, module:Class or file.py:Class.")
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--detector", default=None,
              help="Finds the faces a landmark model runs on (default: the card's, else blazeface-short).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--overlay", type=click.Path(path_type=Path), default=None,
              help="PNG with boxes and landmarks drawn (several images: OUT-<image>.png).")
@click.option("--threads", default=1, show_default=True)
def predict(model, images, detector, as_json, overlay, threads):
    """Run a model on your own images; an image with no face gives an empty result."""
    from facebench.imaging import ImageError, read_image
    from facebench.paths import dumps_json
    from facebench.run.predict import predict_images, write_overlay

    results = predict_images(model, images, detector=detector, threads=threads)
    for result in results:
        if overlay is not None and result.error is None:
            target = overlay if len(images) == 1 else overlay.with_name(
                f"{overlay.stem}-{Path(result.path).stem}{overlay.suffix or '.png'}")
            try:
                write_overlay(target, read_image(result.path), result)
                result.warnings.append(f"overlay written to {target}")
            except (ImageError, OSError) as exc:
                result.warnings.append(f"no overlay: {exc}")
    if as_json:
        click.echo(dumps_json({"model": model, "images": [r.to_dict() for r in results]}, indent=2))
    else:
        for r in results:
            if r.error:
                click.echo(f"{r.path}: error: {r.error}", err=True)
                continue
            click.echo(f"{r.path} ({r.width}x{r.height}): {len(r.detections)} face(s)")
            for k, det in enumerate(r.detections):
                x0, y0, x1, y1 = det.box.as_array()
                points = f", {len(r.landmarks[k])} landmarks" if k < len(r.landmarks) else ""
                click.echo(f"  face {k}: box ({x0:.1f}, {y0:.1f}, {x1:.1f}, {y1:.1f}) score {det.score:.3f}{points}")
            for w in r.warnings:
                click.echo(f"  {w}")
    if any(r.error for r in results):
        sys.exit(1)
