"""The ``facebench`` command line: one module per command group, registered on :data:`main`."""

from facebench.cli import (  # noqa: F401 - registers commands
    assets,
    datasets,
    farm,
    models,
    predict,
    run,
    score,
    serve,
    store,
    submit,
)
from facebench.cli.main import main

__all__ = ["main"]
