"""What a model needs beyond ``pip install facebench``: optional extras and platforms.

A card names the facebench extras it needs (``ModelCard.extras``, e.g.
``("dlib",)``) and the platforms its artifacts run on (``ModelCard.platforms``,
e.g. ``("linux-x86_64",)`` for a compiled library). :func:`missing` tells
without importing anything heavy (module specs only) whether this install
has them, and the one command that fixes it; adapters call :func:`require`
when they load, so a missing extra is one clean line
(:class:`MissingExtra`), never a traceback, in every command.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import platform
import sys
from collections.abc import Mapping
from types import ModuleType

from facebench.errors import FacebenchError

# facebench extra -> the modules it provides (pyproject.toml's [project.optional-dependencies])
EXTRAS: dict[str, tuple[str, ...]] = {
    "dlib": ("dlib",),
    "opencv": ("cv2",),
}


class MissingExtra(FacebenchError, ImportError):
    """A model needs what this install does not have: an optional extra, a platform, or a file the user
    brings (:meth:`facebench.adapter.Adapter.unavailable`)."""


def install_command(extra: str) -> str:
    return f"pip install 'facebench[{extra}]'"


def this_platform() -> str:
    """``<os>-<machine>`` as cards name platforms: ``linux-x86_64``, ``darwin-arm64``, ``linux-aarch64``."""
    return f"{sys.platform}-{platform.machine().lower()}"


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing(extras: tuple[str, ...] | list[str],
            platforms: tuple[str, ...] | list[str] = ()) -> tuple[str, str | None] | None:
    """``(why, fix)`` when a model with these needs cannot run here (``fix``: the one command that makes it
    run, None when nothing can); None when it can."""
    if platforms and this_platform() not in platforms:
        return f"runs on {', '.join(platforms)} only, not on {this_platform()}", None
    for extra in extras:
        if extra not in EXTRAS:
            return f"needs the unknown extra {extra!r}", None
        absent = [m for m in EXTRAS[extra] if not _importable(m)]
        if absent:
            return f"needs {', '.join(absent)} (the {extra} extra)", install_command(extra)
    return None


def require_platform(platforms: tuple[str, ...] | list[str], model: str) -> None:
    """Raise :class:`MissingExtra` unless this machine is one of ``platforms`` (empty: any)."""
    if platforms and this_platform() not in platforms:
        raise MissingExtra(f"{model} runs on {', '.join(platforms)} only, not on {this_platform()}")


@functools.cache
def _providers() -> Mapping[str, list[str]]:
    """Top-level module -> the distributions that provide it: a scan of every installed package, so once."""
    from importlib.metadata import packages_distributions

    return packages_distributions()


def installed_versions(extras: tuple[str, ...] | list[str]) -> dict[str, str]:
    """``{distribution: version}`` of what provides these extras' modules here (part of a run's key: a new
    dlib can change dlib's numbers)."""
    from importlib.metadata import version

    providers = _providers()
    found = {}
    for extra in extras:
        for module in EXTRAS.get(extra, ()):
            for dist in providers.get(module, ()):
                found[dist] = version(dist)
    return dict(sorted(found.items()))


def require(module: str, extra: str, model: str) -> ModuleType:
    """Import ``module`` of ``extra`` for ``model``, or raise :class:`MissingExtra` naming the command."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtra(f"{model} needs {module} ({exc.name or module} is not importable): "
                           f"{install_command(extra)}") from None
