"""``facebench models`` and ``facebench protocols``: what can be evaluated, and on what."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict

import click

from facebench import registry
from facebench.cli.main import main
from facebench.datasets import is_embedded
from facebench.protocol import builtin_protocols


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def models(as_json):
    """List registered models with their cards, and whether each one runs in this install.

    A model that does not gets the reason and the one command that makes it run (an extra to install);
    "pulls on first use" names weights not in the asset cache yet (`facebench assets pull` fetches them
    ahead, for offline use)."""
    cards, usable, errors = [], {}, []
    for name in registry.available():
        try:
            card = registry.resolve(name).card
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not hide the others
            errors.append((name, f"{type(exc).__name__}: {exc}"))
            continue
        cards.append(card)
        usable[card.name] = registry.usability(name)
    if as_json:
        click.echo(json.dumps({"models": [{**c.to_dict(), "usable": usable[c.name].to_dict()} for c in cards],
                               "errors": [{"name": n, "error": e} for n, e in errors]}, indent=2))
    else:
        click.echo(f"{'name':<24} {'task':<10} {'scheme':<13} {'input':<12} {'MACs':>10}  usable here")
        for c in cards:
            size = "x".join("any" if d == -1 else str(d) for d in c.input_shape[1:])
            macs = f"{c.total_macs / 1e6:>9.1f}M" if c.macs else f"{'n/a':>10}"
            u = usable[c.name]
            if u.usable:
                state = "yes" + (f" (pulls {len(u.to_pull)} file(s) on first use)" if u.to_pull else "")
            else:
                state = f"no: {u.reason}" + (f"; {u.fix}" if u.fix else "")
            click.echo(f"{c.name:<24} {c.task:<10} {c.scheme:<13} {size:<12} {macs}  {state}")
        for name, error in errors:
            click.echo(f"{name:<24} cannot be loaded: {error}", err=True)
    if errors:
        sys.exit(1)


@main.command("protocols")
@click.option("--root", "roots", multiple=True, help="As for run: NAME=PATH or PATH, to check availability.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def protocols_cmd(roots, as_json):
    """List the protocols shipped in protocols/, and whether each one's dataset is here."""
    from facebench.datasets import parse_roots, root_for, unavailable

    root_map = parse_roots(roots)
    found = builtin_protocols()
    status = {p.id: unavailable(p.dataset, p.split, root_for(p.dataset, root_map), p.root) for p in found.values()}
    if as_json:
        click.echo(json.dumps([{**asdict(p), "embedded": is_embedded(p.dataset),
                                "available": status[p.id] is None, "unavailable": status[p.id]}
                               for p in found.values()], indent=2))
        return
    for p in found.values():
        where = "available" if status[p.id] is None else "unavailable"
        click.echo(f"{p.id:<22} {p.task:<10} {p.metric:<11} {p.content_hash}  {where:<11}  {p.title}")
        if status[p.id]:
            click.echo(f"{'':<22} {status[p.id]}")
