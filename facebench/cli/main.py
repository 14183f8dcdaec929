"""The ``facebench`` command group, and the one place facebench's errors become an error line.

Every command module registers itself on :data:`main`; an error facebench
raises on purpose (:class:`facebench.errors.FacebenchError`) ends the command
with ``Error: <message>`` and exit status 1, never a traceback.
"""

from __future__ import annotations

import click

from facebench.errors import FacebenchError


class FacebenchGroup(click.Group):
    """A click group that turns facebench's own errors into click's clean error line."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except FacebenchError as exc:
            raise click.ClickException(str(exc)) from exc


@click.group(cls=FacebenchGroup)
@click.version_option(package_name="facebench")
def main():
    """Benchmark and evaluate on-device face detectors, landmark aligners and face meshes."""
