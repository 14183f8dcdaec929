"""Finding adapters: built-ins, entry-point plugins, user files and modules."""

from __future__ import annotations

import importlib
import textwrap

import pytest

from facebench import registry
from facebench.baselines.blazeface import BlazeFaceShortRange

PLUGIN = '''
from dataclasses import replace
from facebench.baselines.blazeface import BlazeFaceShortRange


class NmsBlazeFace(BlazeFaceShortRange):
    card = replace(BlazeFaceShortRange.card, name="{name}",
                   options={{**BlazeFaceShortRange.card.options, "tie_resolution": "nms"}})
'''


def test_builtin_baseline_resolves():
    assert registry.resolve("blazeface-short") is BlazeFaceShortRange


def test_entry_point_plugin_is_registered(tmp_path, monkeypatch):
    pkg = tmp_path / "fbplugin"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(PLUGIN.format(name="plugin-nms"))
    dist = tmp_path / "fbplugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fbplugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[facebench.adapters]\nplugin-nms = fbplugin:NmsBlazeFace\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    assert registry.available()["plugin-nms"] == "fbplugin:NmsBlazeFace"
    cls = registry.resolve("plugin-nms")
    assert cls.card.name == "plugin-nms" and cls().tie_resolution == "nms"


def test_user_file_and_module_references(tmp_path, monkeypatch):
    path = tmp_path / "my_adapter.py"
    path.write_text(PLUGIN.format(name="from-file"))
    assert registry.resolve(f"{path}:NmsBlazeFace").card.name == "from-file"
    assert registry.resolve("facebench.baselines.blazeface:BlazeFaceShortRange") is BlazeFaceShortRange


@pytest.mark.parametrize("reference,message", [
    ("no-such-model", "unknown model"),
    ("missing_file.py:Thing", "does not exist"),
    ("facebench.no_such_module:Thing", "cannot import"),
    ("facebench.types:NoSuchThing", "has no attribute"),
    ("facebench.types:Box", "not a facebench.adapter.Adapter subclass"),
])
def test_bad_references_say_why(reference, message):
    with pytest.raises(registry.RegistryError, match=message):
        registry.resolve(reference)


def test_user_file_that_fails_to_import_names_the_file(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text(textwrap.dedent("raise ImportError('needs torch')\n"))
    with pytest.raises(registry.RegistryError, match=r"broken\.py failed: ImportError: needs torch"):
        registry.resolve(f"{path}:Anything")
