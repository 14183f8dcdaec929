"""``facebench serve --submissions`` as a team runs it: the real command in its own process over a PostgreSQL
store, an account made with ``facebench serve-token add``, predictions sent with ``facebench submit``, and the
server killed (SIGKILL, its scorer too) while it scores: the restarted server puts the job back in the queue
and scores it, and the leaderboard shows the row as submitted."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from facebench.cli import main
from facebench.offline.score_files import score_wider
from facebench.results import submissions as db
from facebench.results.store import Store

from test_submissions import WIDER, world  # noqa: F401 - world is a fixture

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(args: list[str], port: int, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "facebench", "serve", "--port", str(port), *args],
                            stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
    for _ in range(600):  # up to a minute for the server to listen
        if proc.poll() is not None:
            raise AssertionError(log.read_text())
        try:
            if httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("the server did not start: " + log.read_text())


def _status(url: str, sid: str) -> db.Submission:
    with Store(url, read_only=True) as store:
        found = db.get(store, sid)
    assert found is not None
    return found


def test_a_server_killed_while_scoring_scores_the_job_after_its_restart(world, postgres_url, tmp_path):  # noqa: F811
    protocols = tmp_path / "protocols"
    protocols.mkdir()
    (protocols / "wider-held.toml").write_text(WIDER)
    runner = CliRunner()
    made = runner.invoke(main, ["serve-token", "add", "lab-a", "--store", postgres_url])
    assert made.exit_code == 0, made.output
    token = made.stdout.strip()
    port = _free_port()
    args = ["--store", postgres_url, "--submissions", "--protocols-dir", str(protocols),
            "--ground-truth", f"wider-held={world['ground_truth']['wider-held']}", "--upload-dir",
            str(tmp_path / "uploads")]
    log = tmp_path / "server.log"
    server = _start(args, port, log)
    base = f"http://127.0.0.1:{port}"
    try:
        sent = runner.invoke(main, ["submit", "--server", base, "--token", token, "--protocol", "wider-held",
                                    "--name", "KillNet", "--macs", "2.5e7", str(world["wider_dir"])])
        assert sent.exit_code == 0, sent.output
        sid = sent.stdout.strip().rstrip("/").rsplit("/", 1)[-1]
        for _ in range(3000):  # the worker claims it; its scorer process starts (about a second): kill now
            if _status(postgres_url, sid).status == db.SCORING:
                break
            time.sleep(0.01)
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(30)
        assert _status(postgres_url, sid).status == db.SCORING  # left half done by a dead server
        server = _start(args, port, log)
        for _ in range(600):
            found = _status(postgres_url, sid)
            if found.status in (db.SCORED, db.FAILED):
                break
            time.sleep(0.1)
        assert (found.status, found.attempts) == (db.SCORED, 2), found
        answer = httpx.get(f"{base}/api/submissions/{sid}", timeout=10).json()
        expected = score_wider(world["ground_truth"]["wider-held"], world["wider_dir"])["ap"]
        assert {s: answer["metrics"][s] for s in ("easy", "medium", "hard")} == expected
        rows = httpx.get(f"{base}/api/leaderboard.json", params={"protocol": "wider-held"}, timeout=10).json()["rows"]
        assert [(r["model"], r["kind"]) for r in rows] == [("KillNet", "submitted")]
        page = httpx.get(f"{base}/protocol/wider-held", timeout=10)
        assert page.status_code == 200 and "KillNet" in page.text and "submitted" in page.text
        assert "KillNet" in httpx.get(f"{base}/submissions", timeout=10).text
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(30)
    json.dumps(rows)  # plain JSON throughout
