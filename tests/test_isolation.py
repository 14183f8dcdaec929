"""Runs that never lie and never lose work: hostile adapters (crash, exit, hang, print) fail only their own
cell, workers die with their parent, and two runs on one store never compute the same cell twice."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from facebench.cli.main import main
from facebench.results.isolation import describe_exit
from facebench.results.store import Store

HOSTILE = '''
import ctypes, dataclasses, os, sys, time
from facebench.baselines.blazeface import BlazeFaceShortRange
from facebench.baselines.classical import Dlib68


def _card(base, name):
    return dataclasses.replace(base.card, name=name)


class Segfault(BlazeFaceShortRange):
    card = _card(BlazeFaceShortRange, "hostile-segfault")

    def forward(self, inputs):
        ctypes.string_at(0)


class ExitInForward(BlazeFaceShortRange):
    card = _card(BlazeFaceShortRange, "hostile-exit3")

    def forward(self, inputs):
        sys.exit(3)


class ExitInLoad(Dlib68):
    card = _card(Dlib68, "hostile-exit0")

    def load(self, runtime=None, threads=1):
        os._exit(0)


class Printer(BlazeFaceShortRange):
    card = _card(BlazeFaceShortRange, "hostile-printer")

    def forward(self, inputs):
        print("POLLUTION from forward")
        return super().forward(inputs)


class Hang(BlazeFaceShortRange):
    card = _card(BlazeFaceShortRange, "hostile-hang")

    def forward(self, inputs):
        time.sleep(1000)


class Slow(BlazeFaceShortRange):
    card = _card(BlazeFaceShortRange, "hostile-slow")

    def forward(self, inputs):
        time.sleep(float(os.environ.get("HOSTILE_SLOW_S", "1000")))
        return super().forward(inputs)
'''


@pytest.fixture
def hostile(tmp_path: Path) -> Path:
    path = tmp_path / "hostile.py"
    path.write_text(textwrap.dedent(HOSTILE))
    return path


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["run", "--no-progress", "--no-report", *args])
    return result.exit_code, result.stdout, result.stderr


def _runs(store: Path) -> dict[str, tuple[str, int]]:
    """(model on protocol) -> (status, stored items)."""
    db = sqlite3.connect(store)
    rows = db.execute("SELECT model, protocol, status, (SELECT count(*) FROM items WHERE run_key = key) FROM runs")
    return {f"{m} on {p}": (s, n) for m, p, s, n in rows}


def test_describe_exit():
    assert describe_exit(-signal.SIGSEGV) == "SIGSEGV"
    assert describe_exit(-signal.SIGKILL) == "SIGKILL"
    assert describe_exit(3) == "exit code 3"


def test_claims_are_exclusive_and_taken_over(tmp_path: Path):
    with Store(tmp_path / "s.sqlite") as db:
        alive = lambda pid, host: False  # noqa: E731
        assert db.claim_cell("m on p", "a", 1, "h", 600, alive) is None
        held = db.claim_cell("m on p", "b", 2, "h", 600, alive)
        assert held is not None and held.pid == 1 and held.token == "a"
        assert db.claim_cell("m on p", "a", 1, "h", 600, alive) is None  # our own claim again
        assert db.claim_cell("m on p", "b", 2, "h", 600, lambda pid, host: True) is None  # owner dead: taken over
        assert db.claim_cell("m on p", "a", 1, "h", -1.0, alive) is None  # no heartbeat for too long: taken over
        assert db.claims()[0].token == "a"
        db.release_claim("m on p", "a")
        db.release_claim("m on p", "b")
        assert db.claims() == []


@pytest.mark.slow
def test_segfault_fails_only_its_cell(hostile, tmp_path, mediapipe_assets, dlib_model):
    store = tmp_path / "s.sqlite"
    code, out, err = _run("--store", str(store), "--out", str(tmp_path / "r"), "--jobs", "2",
                          "-m", f"{hostile}:Segfault", "-m", "blazeface-short", "-m", "dlib-68",
                          "-p", "mini-ap50", "-p", "mini-nme")
    assert code == 1, err
    assert "error: hostile-segfault on mini-ap50: worker died: SIGSEGV" in err
    runs = _runs(store)
    assert runs["blazeface-short on mini-ap50"] == ("complete", 4)
    assert runs["dlib-68 on mini-nme"][0] == "complete"


@pytest.mark.slow
def test_exits_are_named_and_others_finish(hostile, tmp_path, mediapipe_assets, dlib_model):
    store = tmp_path / "s.sqlite"
    code, out, err = _run("--store", str(store), "--out", str(tmp_path / "r"), "--jobs", "2",
                          "-m", f"{hostile}:ExitInForward", "-m", f"{hostile}:ExitInLoad", "-m", "blazeface-short",
                          "-p", "mini-ap50", "-p", "mini-nme")
    assert code == 1, err
    assert "error: hostile-exit3 on mini-ap50: worker died: exit code 3" in err
    assert "error: hostile-exit0 on mini-nme: worker died: exit code 0" in err
    assert _runs(store)["blazeface-short on mini-ap50"] == ("complete", 4)


@pytest.mark.slow
def test_model_prints_never_reach_stdout(hostile, tmp_path, mediapipe_assets):
    proc = subprocess.run([sys.executable, "-m", "facebench", "run", "--no-progress", "--no-report",
                           "--store", str(tmp_path / "s.sqlite"), "--out", str(tmp_path / "r"),
                           "-m", f"{hostile}:Printer", "-p", "mini-ap50", "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "POLLUTION" not in proc.stdout
    assert "POLLUTION" in proc.stderr
    cells = json.loads(proc.stdout)["cells"]  # stdout is still the strict JSON the command prints
    assert [(c["model"], c["status"]) for c in cells] == [("hostile-printer", "ran")]


@pytest.mark.slow
def test_hanging_forward_times_out_per_item(hostile, tmp_path, mediapipe_assets):
    store = tmp_path / "s.sqlite"
    start = time.monotonic()
    code, out, err = _run("--store", str(store), "--out", str(tmp_path / "r"), "--item-timeout", "3",
                          "-m", f"{hostile}:Hang", "-p", "mini-ap50")
    assert time.monotonic() - start < 90, err
    assert "timeout: forward exceeded 3 s" in err
    status, n = _runs(store)["hostile-hang on mini-ap50"]
    assert (status, n) == ("complete", 4)
    with Store(store) as db:
        key = db.runs()[0].key
        assert {e for _, e in db.failures(key)} == {"timeout: forward exceeded 3 s"}


def test_item_timeout_is_validated():
    result = CliRunner().invoke(main, ["run", "--item-timeout", "-1"])
    assert result.exit_code == 2 and "item-timeout" in result.stderr


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_die_with_their_parent(hostile, tmp_path, mediapipe_assets):
    env = {**os.environ, "HOSTILE_SLOW_S": "1000"}
    parent = subprocess.Popen([sys.executable, "-m", "facebench", "run", "--no-progress", "--no-report", "--jobs", "2",
                               "--store", str(tmp_path / "s.sqlite"), "--out", str(tmp_path / "r"),
                               "-m", f"{hostile}:Slow", "-m", f"{hostile}:Hang", "-p", "mini-ap50"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        workers: list[int] = []
        while time.monotonic() < deadline and len(workers) < 2:
            time.sleep(0.5)
            workers = _children(parent.pid)
        assert len(workers) >= 2, "the run did not start its workers"
        time.sleep(5)  # the workers are in their cells (imports done, forward sleeping)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(w) for w in workers):
        time.sleep(0.2)
    assert not [w for w in workers if _alive(w)]


@pytest.mark.slow
def test_two_runs_never_compute_one_cell_twice(hostile, tmp_path, mediapipe_assets):
    store = tmp_path / "s.sqlite"
    env = {**os.environ, "HOSTILE_SLOW_S": "4"}  # each batch takes seconds: the runs overlap
    command = [sys.executable, "-m", "facebench", "run", "--no-progress", "--no-report", "--store", str(store),
               "-m", f"{hostile}:Slow", "-p", "mini-ap50"]
    first = subprocess.Popen([*command, "--out", str(tmp_path / "r1")], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    second = subprocess.Popen([*command, "--force", "--out", str(tmp_path / "r2")], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out1, err1 = first.communicate(timeout=300)
    out2, err2 = second.communicate(timeout=300)
    assert "IntegrityError" not in err1 + err2
    assert first.returncode == 0 and second.returncode == 0, err1 + err2
    messages = [e for e in (err1, err2) if "being computed by pid" in e]
    assert len(messages) == 1, err1 + err2
    assert "skip hostile-slow on mini-ap50: being computed by pid" in messages[0]
    assert _runs(store)["hostile-slow on mini-ap50"] == ("complete", 4)
    with Store(store) as db:
        assert db.claims() == []
