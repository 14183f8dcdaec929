"""``facebench serve``: the read-only web leaderboard over a results store (facebench[serve])."""

from __future__ import annotations

import importlib.util
import ipaddress
from pathlib import Path

import click

from facebench.cli.main import STORE, STORE_HELP, main
from facebench.extras import install_command
from facebench.paths import default_store_path
from facebench.results.database import redact


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@main.command("serve")
@click.option("--store", type=STORE, default=None, envvar="FACEBENCH_STORE", help=STORE_HELP + " Read-only.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but a loopback address exposes the leaderboard to the network.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where drawn figures are cached (default: a temporary folder, removed on exit).")
@click.option("--protocols-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="A folder of protocol files (*.toml) whose runs are checked like the built-in protocols'.")
# --submissions: the submission service's flag goes here (it builds the object create_app(submissions=...)
# takes: routes(), start(), stop()); until then the server is read-only.
def serve(store, host, port, cache_dir, protocols_dir):
    """Serve the leaderboard, model cards, runs and figures as web pages (read-only)."""
    for module in ("starlette", "uvicorn"):
        if importlib.util.find_spec(module) is None:
            raise click.ClickException(f"facebench serve needs {module}: {install_command('serve')}")
    import uvicorn

    from facebench.serve.app import create_app

    target = store if isinstance(store, str) else str(store or default_store_path())
    app = create_app(target, protocols_dir=None if protocols_dir is None else str(protocols_dir),
                     cache_dir=cache_dir)
    if "://" not in target and not Path(target).exists():
        click.echo(f"warning: no results store at {target} yet: the pages say so until `facebench run` writes it",
                   err=True)
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"facebench leaderboard of {redact(target)}: http://{shown}:{port}/")
    if not is_loopback(host):
        click.echo(f"warning: listening on {host}: the leaderboard is exposed to every machine that can reach this "
                   "one (use --host 127.0.0.1 to keep it local)", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
