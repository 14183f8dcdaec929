"""The import direction: a module of facebench imports only modules of its own layer or lower ones.

Every ``import facebench...`` and ``from facebench... import`` (at module level and inside functions) is
read with ``ast``, never executed. ARCHITECTURE.md explains the layers; a new package or top-level module
must be given a layer in ``LAYERS`` below (the test says which one is missing).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "facebench"

# low to high; a module may import its own layer and the layers below it
LAYERS: dict[str, int] = {
    # 0 core: the shared vocabulary and plumbing every other layer uses
    "facebench.types": 0, "facebench.schemes": 0, "facebench.paths": 0, "facebench.errors": 0,
    "facebench.imaging": 0, "facebench.protocol": 0, "facebench.metric_specs": 0, "facebench.adapter": 0,
    "facebench.assets": 0, "facebench.extras": 0, "facebench.registry": 0, "facebench.protocols": 0,
    "facebench.runtimes": 0,
    "facebench.metrics": 1,
    "facebench.datasets": 2,
    "facebench.baselines": 3,
    "facebench.run": 4,
    "facebench.scoring": 5,
    "facebench.results": 6,
    "facebench.report": 7,
    "facebench.offline": 8, "facebench.farm": 8,
    "facebench.testing": 9, "facebench.serve": 9,
    "facebench.cli": 10, "facebench.api": 10,  # the command line and the Python API: the two front doors
}
FACADE = {"facebench", "facebench.__main__"}  # facebench/__init__.py and __main__.py import anything
# what may be imported from the façade itself; any other name there may be a re-export of anything (the API),
# so importing it counts as importing the top layer
FACADE_CORE_NAMES = {"__version__"}
NAMES = {0: "core", 1: "metrics", 2: "datasets", 3: "baselines", 4: "run", 5: "scoring", 6: "results",
         7: "report", 8: "offline/farm", 9: "testing/serve", 10: "cli/api"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def is_module(name: str) -> bool:
    return name in MODULES


def layer(name: str) -> int | None:
    """The layer of a module (by its longest prefix in LAYERS); None for one that has none."""
    parts = name.split(".")
    for k in range(len(parts), 1, -1):
        prefix = ".".join(parts[:k])
        if prefix in LAYERS:
            return LAYERS[prefix]
    return None


def imports(name: str, path: Path) -> list[tuple[int, str]]:
    return imports_in(name, path.read_text(encoding="utf-8"), is_package=path.name == "__init__.py")


def imports_in(name: str, source: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, imported facebench module) for every import of facebench in ``source``, nested ones included.
    ``from facebench.x import y`` is an import of ``facebench.x.y`` when that is a module, else of ``facebench.x``;
    ``from facebench import __version__`` is an import of the façade, which counts as core."""
    package = name if is_package else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names
                      if alias.name == "facebench" or alias.name.startswith("facebench.")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved against the importing module's package
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                source_module = ".".join(base + ([node.module] if node.module else []))
            else:
                source_module = node.module or ""
            if source_module != "facebench" and not source_module.startswith("facebench."):
                continue
            for alias in node.names:
                target = f"{source_module}.{alias.name}"
                if is_module(target):
                    found.append((node.lineno, target))
                elif source_module == "facebench" and alias.name not in FACADE_CORE_NAMES:
                    found.append((node.lineno, f"facebench:{alias.name}"))  # a re-export of the façade
                else:
                    found.append((node.lineno, source_module))
    return found


def target_layer(target: str) -> int | None:
    if target == "facebench":  # `from facebench import __version__`
        return 0
    if target.startswith("facebench:"):  # any other name of the façade: it may re-export the top layer
        return max(LAYERS.values())
    return layer(target)


def test_every_module_has_a_layer():
    missing = sorted(name for name in MODULES if name not in FACADE and layer(name) is None)
    assert not missing, f"give these modules a layer in LAYERS (tests/test_architecture.py) and ARCHITECTURE.md: " \
                        f"{missing}"


def test_the_scan_sees_the_tree():
    """Guards the scanner itself, so that a broken scan cannot pass by finding nothing."""
    found = {(name, target) for name, path in MODULES.items() for _, target in imports(name, path)}
    assert len(found) > 100
    assert ("facebench.types", "facebench.schemes") in found


def upward_imports() -> list[str]:
    bad = []
    for name, path in MODULES.items():
        own = layer(name)
        if name in FACADE or own is None:
            continue
        for line, target in imports(name, path):
            theirs = target_layer(target)
            if theirs is None:
                if target not in MODULES and not target.startswith("facebench:"):
                    bad.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {name} imports {target}, "
                               f"which does not exist")
                continue
            if theirs > own:
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {name} ({NAMES[own]}, layer {own}) imports "
                           f"{target} ({NAMES[theirs]}, layer {theirs})")
    return bad


def test_no_module_imports_a_higher_layer():
    bad = upward_imports()
    assert not bad, "imports against the layer rule (ARCHITECTURE.md):\n" + "\n".join(bad)


def test_stand_ins_are_imported_only_by_the_cli():
    """facebench.testing (the stand-in ADB daemon and benchmark tool) is a test tool: nothing in the package
    depends on it except the command line that starts it."""
    bad = [f"{path.relative_to(PACKAGE.parent)}:{line}: {name} imports {target}"
           for name, path in MODULES.items()
           if not (name == "facebench.testing" or name.startswith("facebench.testing."))
           and not (name == "facebench.cli" or name.startswith("facebench.cli."))
           for line, target in imports(name, path)
           if target == "facebench.testing" or target.startswith("facebench.testing.")]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("source, expected", [
    ("from facebench.report import plots", "facebench.report.plots"),
    ("from facebench import __version__", "facebench"),
    ("from facebench import evaluate", "facebench:evaluate"),
    ("import facebench.metrics.detection as d", "facebench.metrics.detection"),
    ("def f():\n    if True:\n        from facebench.scoring import score", "facebench.scoring"),
    ("from ..metrics import detection", "facebench.metrics.detection"),
    ("from . import harness", "facebench.run.harness"),
    ("import numpy\nfrom os import path", None),
])
def test_import_resolution(source, expected):
    """As if the source were facebench/run/<module>.py."""
    found = [target for _, target in imports_in("facebench.run.example", source)]
    assert found == ([expected] if expected else [])
