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


def _submission_service(target: str, protocols_dir: Path | None, ground_truth: tuple[str, ...],
                        upload_dir: Path | None, max_upload_mb: int, per_day: int, scorers: int, job_timeout: float):
    from facebench.serve.app import load_protocols
    from facebench.serve.submissions import SubmissionService
    from facebench.serve.uploads import Limits

    truth = {}
    for entry in ground_truth:
        pid, sep, path = entry.partition("=")
        if not sep or not pid or not path:
            raise click.UsageError(f"--ground-truth {entry!r}: expected PROTOCOL=PATH")
        truth[pid] = Path(path)
    protocols = load_protocols(protocols_dir)
    held_out = sorted(pid for pid, p in protocols.items() if p.held_out)
    if not held_out:
        raise click.UsageError("--submissions: no held-out protocol; mark one with held_out = true and submission = "
                               "\"wider\" | \"fddb\" | \"landmarks\" in a protocol file of --protocols-dir")
    unknown = sorted(set(truth) - set(held_out))
    if unknown:
        raise click.UsageError(f"--ground-truth for {', '.join(unknown)}: not a held-out protocol here "
                               f"(held out: {', '.join(held_out)})")
    folder = upload_dir or default_store_path().parent / "submissions"
    limits = Limits(max_upload_bytes=max_upload_mb << 20)
    service = SubmissionService(target, protocols, truth, folder, limits, workers=scorers,
                                submissions_per_day=per_day, job_timeout_s=job_timeout)
    click.echo(f"submissions open for {', '.join(held_out)}; uploads in {folder}")
    return service


@main.command("serve")
@click.option("--store", type=STORE, default=None, envvar="FACEBENCH_STORE", help=STORE_HELP + " Read-only.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but a loopback address exposes the leaderboard to the network.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where drawn figures are cached (default: a temporary folder, removed on exit).")
@click.option("--protocols-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="A folder of protocol files (*.toml) whose runs are checked like the built-in protocols'.")
@click.option("--root", "roots", multiple=True, metavar="NAME=PATH",
              help="A dataset's copy here, so run pages draw their worst faces (embedded datasets need none).")
@click.option("--submissions", is_flag=True,
              help="Also take teams' predictions for the held-out protocols (held_out = true in --protocols-dir) "
                   "and score them here; accounts: facebench serve-token add.")
@click.option("--ground-truth", "ground_truth", multiple=True, metavar="PROTOCOL=PATH",
              help="A held-out protocol's ground truth, as facebench score reads it (repeat per protocol).")
@click.option("--upload-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where uploads are kept (default: $FACEBENCH_HOME/submissions or the user data dir).")
@click.option("--max-upload-mb", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--per-day", type=click.IntRange(min=1), default=20, show_default=True,
              help="Submissions a team may make in 24 hours (an account may have its own).")
@click.option("--scorers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Submissions scored at once (each in its own process).")
@click.option("--job-timeout", type=click.FloatRange(min=1), default=600.0, show_default=True,
              help="Seconds a submission may take to unpack and score before it fails.")
def serve(store, host, port, cache_dir, protocols_dir, roots, submissions, ground_truth, upload_dir, max_upload_mb,
          per_day, scorers, job_timeout):
    """Serve the leaderboard, model cards, runs and figures as web pages (read-only), and with --submissions
    the submission service of the held-out protocols."""
    for module in ("starlette", "uvicorn"):
        if importlib.util.find_spec(module) is None:
            raise click.ClickException(f"facebench serve needs {module}: {install_command('serve')}")
    import uvicorn

    from facebench.datasets import parse_roots
    from facebench.serve.app import create_app

    target = store if isinstance(store, str) else str(store or default_store_path())
    service = None
    if submissions:
        service = _submission_service(target, protocols_dir, ground_truth, upload_dir, max_upload_mb, per_day,
                                      scorers, job_timeout)
    elif ground_truth:
        raise click.UsageError("--ground-truth is for --submissions")
    app = create_app(target, protocols_dir=None if protocols_dir is None else str(protocols_dir),
                     cache_dir=cache_dir, submissions=service, roots=parse_roots(roots))
    if "://" not in target and not Path(target).exists():
        click.echo(f"warning: no results store at {target} yet: the pages say so until `facebench run` writes it",
                   err=True)
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"facebench leaderboard of {redact(target)}: http://{shown}:{port}/")
    if not is_loopback(host):
        click.echo(f"warning: listening on {host}: the leaderboard is exposed to every machine that can reach this "
                   "one (use --host 127.0.0.1 to keep it local)", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
