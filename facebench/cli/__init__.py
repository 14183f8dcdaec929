"""The ``facebench`` command line: one module per command group, registered on :data:`main`."""

from facebench.cli import assets, datasets, farm, models, predict, run, score, store  # noqa: F401 - registers commands
from facebench.cli.main import main

__all__ = ["main"]
