"""``facebench store``: what a store holds, and copying results between stores (a laptop's SQLite file into
the team's PostgreSQL, and back)."""

from __future__ import annotations

import click

from facebench.cli.main import STORE, main
from facebench.results.database import redact, same_database


@main.group("store")
def store_group():
    """Results stores: an SQLite file or a PostgreSQL database (postgresql://user@host/db)."""


@store_group.command("copy")
@click.argument("source", type=STORE)
@click.argument("target", type=STORE)
def copy_cmd(source, target):
    """Copy every run (with its items, per-item numbers and chunks) and device measurement of SOURCE into
    TARGET (made, or migrated, if needed). Runs are keyed by their run key, so copying again adds nothing:
    a run TARGET already has complete is left as it is, unless SOURCE succeeded on items that failed in
    TARGET (then it is re-scored by the next `facebench run` or `merge`); measurements go by key, newer wins.
    Server-side submissions and accounts stay where they are."""
    from facebench.results.store import Store, copy_store

    if redact(source) == redact(target) or same_database(source, target):
        raise click.UsageError(f"SOURCE and TARGET are the same store ({redact(source)} and {redact(target)})")
    with Store(source, read_only=True) as src, Store(target) as dst:
        counts = copy_store(src, dst)
    parts = ", ".join(f"{n} {what}" for what, n in counts.items() if n and what != "device results")
    click.echo(f"{sum(v for k, v in counts.items() if k != 'device results')} runs of {redact(source)} → "
               f"{redact(target)}: {parts or 'nothing new'}; {counts['device results']} device results copied")


@store_group.command("info")
@click.argument("location", type=STORE)
def info_cmd(location):
    """The store's engine, schema version and what it holds."""
    from facebench.results.migrations import LATEST, applied_version
    from facebench.results.store import Store

    with Store(location, read_only=True) as db:
        runs = db.runs(status=None)
        complete = sum(r.status == "complete" for r in runs)
        click.echo(f"{db.location} ({db.db.dialect}, schema version {applied_version(db.db)} of {LATEST})")
        click.echo(f"runs: {len(runs)} ({complete} complete), models: {len({r.model for r in runs})}, "
                   f"protocols: {len({r.protocol for r in runs})}, device results: {len(db.device_results())}")
