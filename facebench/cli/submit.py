"""``facebench submit``: send predictions for a held-out protocol to a ``facebench serve`` server; and
``facebench serve-token add``: the server operator's way to give a team its token."""

from __future__ import annotations

import io
import json
import time
import zipfile
from pathlib import Path

import click

from facebench.cli.main import STORE, main
from facebench.errors import UsageError
from facebench.paths import dumps_json

_FIRST_POLL_S = 0.5  # --wait's first pause between polls (then 1.5 times longer each, up to 10 s)
_BAD_ANSWERS = 5  # answers in a row to --wait's polling that are not a submission's: the wait ends


def zip_folder(folder: Path) -> bytes:
    """A prediction folder (WIDER's ``<event>/<image>.txt``, a folder of .pts) as a zip, paths relative to it;
    links are not followed (the server refuses them anyway)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.is_symlink():
                archive.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()


def _http():
    try:
        import httpx
    except ImportError:
        raise UsageError("facebench submit needs httpx: pip install 'facebench[serve]'") from None
    return httpx


@main.command("submit")
@click.option("--server", required=True, help="The facebench serve server, e.g. https://bench.example.org")
@click.option("--token", envvar="FACEBENCH_TOKEN", default=None,
              help="The team's token (default: $FACEBENCH_TOKEN; prefer the variable: a command line is visible "
                   "to other users of the machine).")
@click.option("--protocol", required=True, help="A held-out protocol id the server scores.")
@click.option("--name", required=True, help="The model's name on the leaderboard.")
@click.option("--macs", type=float, default=None, help="Multiply-accumulates per image.")
@click.option("--params", type=float, default=None, help="Parameter count.")
@click.option("--description", default=None)
@click.option("--link", default=None, help="http(s) link to the model or paper.")
@click.option("--wait", is_flag=True, help="Poll until scored or failed; print the metrics or the error.")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds per HTTP request.")
@click.argument("predictions", type=click.Path(exists=True, path_type=Path))
def submit(server, token, protocol, name, macs, params, description, link, wait, timeout, predictions):
    """Submit PREDICTIONS (a file, or a folder sent as a zip) to be scored against held-out ground truth."""
    if not token:
        raise click.UsageError("no token: set FACEBENCH_TOKEN (or pass --token) to the token "
                               "`facebench serve-token add` printed for your team")
    httpx = _http()
    card = {k: v for k, v in {"name": name, "macs": macs, "params": params, "description": description,
                              "link": link}.items() if v is not None}
    if predictions.is_dir():
        body, filename = zip_folder(predictions), predictions.name + ".zip"
    else:
        body, filename = predictions.read_bytes(), predictions.name
    base = server.rstrip("/")
    headers = {"Authorization": f"Bearer {token}"}
    try:
        response = httpx.post(f"{base}/api/submissions", headers=headers, timeout=timeout,
                              data={"protocol": protocol, "card": json.dumps(card)},
                              files={"file": (filename, body, "application/octet-stream")})
    except httpx.TimeoutException:
        raise click.ClickException(f"no answer from {base} within {timeout:g} s (--timeout): the server may be "
                                   "busy or down; the upload may or may not have been taken") from None
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise click.ClickException(f"cannot reach {base}: {exc}") from None
    answer = _answer(response)
    if response.status_code != 202:
        raise click.ClickException(f"{response.status_code}: {answer.get('error', response.text[:200])}")
    if not isinstance(answer.get("id"), str) or not answer.get("url"):
        raise click.ClickException(f"{base} accepted the upload but did not answer as a facebench server does "
                                   f"(no submission id): {response.text[:200]}")
    click.echo(answer["url"])
    if not wait:
        return
    status_url = f"{base}/api/submissions/{answer['id']}"
    delay, bad = _FIRST_POLL_S, 0
    while True:
        try:
            status = httpx.get(status_url, timeout=timeout)
        except httpx.TimeoutException:
            raise click.ClickException(f"submission {answer['id']}: no answer from {base} within {timeout:g} s "
                                       f"(--timeout); it may still be scored: see {answer['url']}") from None
        except httpx.HTTPError as exc:
            raise click.ClickException(f"cannot reach {base}: {exc}") from None
        view = _answer(status)
        if view.get("status") in ("scored", "failed"):
            break
        if status.status_code == 404:
            raise click.ClickException(f"submission {answer['id']}: the server no longer knows it "
                                       f"({view.get('error', '')})")
        # an answer that is not a submission's (an error page, a proxy's HTML): a few in a row end the wait
        bad = bad + 1 if status.status_code != 200 or "status" not in view else 0
        if bad >= _BAD_ANSWERS:
            raise click.ClickException(f"submission {answer['id']}: {status_url} answered {status.status_code} "
                                       f"{_BAD_ANSWERS} times in a row: {view.get('error', '')}; it may still be "
                                       f"scored: see {answer['url']}")
        time.sleep(delay)
        delay = min(delay * 1.5, 10.0)
    if view["status"] == "failed":
        raise click.ClickException(f"submission failed: {view.get('error')}")
    click.echo(dumps_json(view.get("metrics") or {}, indent=2))


def _answer(response) -> dict:
    try:
        value = response.json()
    except ValueError:
        return {"error": response.text[:200]}
    return value if isinstance(value, dict) else {"error": str(value)[:200]}


@main.group("serve-token")
def serve_token():
    """Team accounts of a facebench serve server (tokens for facebench submit)."""


@serve_token.command("add")
@click.argument("team")
@click.option("--per-day", type=click.IntRange(min=1), default=None,
              help="Submissions this team may make in 24 hours (default: the server's).")
@click.option("--store", type=STORE, required=True, envvar="FACEBENCH_STORE",
              help="The server's results store (a file or a postgresql:// URL).")
def serve_token_add(team, per_day, store):
    """Create TEAM's account and print its token, once: only its hash is kept."""
    import unicodedata

    from facebench.results.store import Store
    from facebench.results.submissions import add_account

    # the name is shown on the leaderboard beside every row the team submits
    hidden = next((c for c in team if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") and c != "\u200d"), None)
    if not team.strip() or team != team.strip() or len(team) > 100 or hidden is not None:
        what = f"the control or formatting character U+{ord(hidden):04X}" if hidden is not None else \
            "up to 100 characters, not blank, with no leading or trailing space"
        raise click.BadParameter(f"{team!r}: a team name is {what}" if hidden is None else
                                 f"{team!r}: a team name may not hold {what}", param_hint="TEAM")
    with Store(store) as opened:
        token = add_account(opened, team, per_day)
    click.echo(token)
    click.echo(f"the token of team {team}, shown once: give it to the team (facebench submit reads "
               "$FACEBENCH_TOKEN)", err=True)


@serve_token.command("list")
@click.option("--store", type=STORE, required=True, envvar="FACEBENCH_STORE",
              help="The server's results store (a file or a postgresql:// URL).")
def serve_token_list(store):
    """The teams with an account: their daily limit and when the account was made (never a token)."""
    from facebench.results.store import Store
    from facebench.results.submissions import accounts

    with Store(store, read_only=True) as opened:
        teams = accounts(opened)
    for team, per_day, created in teams:
        made = time.strftime("%Y-%m-%d", time.gmtime(created))
        click.echo(f"{team}\t{per_day or 'server default'} per day\tsince {made}")
    if not teams:
        click.echo("no accounts", err=True)


@serve_token.command("revoke")
@click.argument("team")
@click.option("--store", type=STORE, required=True, envvar="FACEBENCH_STORE",
              help="The server's results store (a file or a postgresql:// URL).")
def serve_token_revoke(team, store):
    """Remove TEAM's account: its token stops working at once; its submissions and rows stay. `serve-token add
    TEAM` gives it a new token."""
    from facebench.results.store import Store
    from facebench.results.submissions import remove_account

    with Store(store) as opened:
        if not remove_account(opened, team):
            raise click.ClickException(f"no account for team {team!r}")
    click.echo(f"team {team}'s token no longer works", err=True)
