"""The ``facebench`` command group, and the one place facebench's errors become an error line.

Every command module registers itself on :data:`main`; an error facebench
raises on purpose (:class:`facebench.errors.FacebenchError`) ends the command
with ``Error: <message>`` and exit status 1, never a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from facebench.errors import FacebenchError


class FacebenchGroup(click.Group):
    """A click group that turns facebench's own errors into click's clean error line."""

    def invoke(self, ctx: click.Context):
        # the command line is shown (a report's commands section, `run`'s outputs): never a store URL's password
        from facebench.results.database import redact

        sys.argv[1:] = [redact(arg) if "://" in arg else arg for arg in sys.argv[1:]]
        try:
            return super().invoke(ctx)
        except FacebenchError as exc:
            raise click.ClickException(str(exc)) from exc


@click.group(cls=FacebenchGroup)
@click.version_option(package_name="facebench")
def main():
    """Benchmark and evaluate on-device face detectors, landmark aligners and face meshes."""


class StoreLocationType(click.ParamType):
    """``--store``: a file path, ``sqlite:///path`` or ``postgresql://user@host/db`` (a path stays a Path; a
    server's URL stays a string, since a Path would fold its ``//``). Read from $FACEBENCH_STORE when not given."""

    name = "store"

    def convert(self, value, param, ctx):
        from facebench.results.database import POSTGRESQL, parse_location

        if isinstance(value, Path):
            return value
        try:
            dialect, target = parse_location(str(value))
        except FacebenchError as exc:
            self.fail(str(exc), param, ctx)
        return str(value) if dialect == POSTGRESQL else Path(target)


STORE = StoreLocationType()
STORE_HELP = ("Results store: a file, sqlite:///path or postgresql://user@host/db "
              "(default $FACEBENCH_STORE, else $FACEBENCH_HOME/results.sqlite or the user data dir).")
