"""The adb-server transport, bounded shell output and shell v2: against stand-in phones and Debian's real adb server."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from facebench.cli import main
from facebench.errors import FacebenchError
from facebench.farm.adb import Connection, DeviceError, ensure_host_key, session
from facebench.farm.adb_server import ServerConnection, discover
from facebench.farm.inventory import Device, InventoryError, load_inventory
from facebench.testing import adbd
from facebench.testing.host_benchmark import write_program

pytestmark = pytest.mark.farm
ADB = shutil.which("adb")
needs_adb = pytest.mark.skipif(ADB is None, reason="Debian's adb is not installed (CI installs it)")


@pytest.fixture
def standins(tmp_path, host_key):
    started = []

    def start(name: str, keys=None, **kw) -> adbd.StandInDevice:
        keys = [Path(f"{host_key}.pub").read_bytes()] if keys is None else keys
        d = adbd.StandInDevice(tmp_path / name, keys, **kw).start()
        started.append(d)
        return d

    yield start
    for d in started:
        d.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AdbServer:
    """An isolated adb server on a free port, with its own HOME and key (ADB_VENDOR_KEYS)."""

    def __init__(self, home: Path):
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        (home / ".android").mkdir(parents=True)
        self.key = home / ".android" / "adbkey"
        self.env = {**os.environ, "HOME": str(home), "ADB_VENDOR_KEYS": str(self.key),
                    "ANDROID_ADB_SERVER_PORT": str(self.port)}
        self.env.pop("ANDROID_SDK_HOME", None)

    def __call__(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(ADB), "-P", str(self.port), *args], env=self.env, capture_output=True, text=True,
                              timeout=30, check=False, stdin=subprocess.DEVNULL)

    @property
    def public_key(self) -> bytes:
        return Path(f"{self.key}.pub").read_bytes()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if ADB is None:
        pytest.skip("Debian's adb is not installed (CI installs it)")
    adb = AdbServer(tmp_path_factory.mktemp("adbhome"))
    assert adb("keygen", str(adb.key)).returncode == 0
    assert adb("start-server").returncode == 0
    yield adb
    adb("kill-server")


def _attach(server: AdbServer, device: adbd.StandInDevice, state: str = "device") -> Device:
    said = server("connect", device.address).stdout
    assert "connected to" in said or state != "device", said
    for _ in range(50):  # the server authenticates in the background
        if f"{device.address}\t{state}" in server("devices").stdout:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"{device.address} never became {state!r}: {server('devices').stdout}")
    return Device(device.root.name, serial=device.address, server=server.address, workdir=str(device.root / "w"))


def _peak_rss_growth(fn) -> tuple[int, object]:
    """(peak RSS above the starting RSS, in bytes, while fn runs; fn's result or exception): /proc/self/status."""
    def field(name):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
        raise AssertionError(name)

    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    start = field("VmRSS")
    try:
        outcome: object = fn()
    except DeviceError as exc:
        outcome = exc
    return field("VmHWM") - start, outcome


# -- the inventory and the host key ------------------------------------------------------------------------------

def test_inventory_server_and_serial_entries(tmp_path):
    path = tmp_path / "farm.toml"
    path.write_text('[host]\nserver = "lab:5038"\n'
                    '[devices.a]\nserial = "R58"\n'
                    '[devices.b]\nserial = "emulator-5554"\nserver = "10.0.0.2"\n'
                    '[devices.c]\naddress = "10.0.0.3:5555"\n')
    inv = load_inventory(path)
    assert inv.devices["a"].server_host_port == ("lab", 5038) and inv.devices["a"].where == "R58@lab:5038"
    assert inv.devices["b"].server_host_port == ("10.0.0.2", 5037)
    assert inv.devices["c"].server == "" and inv.devices["c"].host_port == ("10.0.0.3", 5555)
    path.write_text('[devices.a]\nserial = "R58"\n')
    local = load_inventory(path).devices["a"]
    assert local.server_host_port == ("127.0.0.1", 5037) and local.where == "usb:R58"
    assert isinstance(session(local, Path("k")), ServerConnection)
    assert type(session(Device("c", address="h:1"), Path("k"))) is Connection
    for bad, where in (('[devices.x]\nserial = "s"\nserver = "h:99999"\n', "[devices.x] server"),
                       ('[devices.x]\nserial = "s"\nserver = 5037\n', "[devices.x] server"),
                       ('[devices.x]\naddress = "h:1"\nserver = "h"\n', "[devices.x]: server is for a serial"),
                       ('[host]\nserver = ":5037"\n', "[host] server")):
        path.write_text(bad)
        with pytest.raises(InventoryError) as info:
            load_inventory(path)
        assert str(path) in str(info.value) and where in str(info.value), str(info.value)


def test_host_key_defects_are_warnings_or_clean_errors(tmp_path, capsys):
    key = ensure_host_key(tmp_path / "adbkey")
    capsys.readouterr()
    key.chmod(0o644)
    ensure_host_key(key)
    warning = capsys.readouterr().err
    assert str(key) in warning and "chmod 600" in warning
    key.chmod(0o600)
    ensure_host_key(key)
    assert capsys.readouterr().err == ""
    bad = tmp_path / "bad"
    bad.write_text("not a key\n")
    with pytest.raises(FacebenchError, match="not a usable ADB private key") as info:
        ensure_host_key(bad)
    assert str(bad) in str(info.value)
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(FacebenchError, match="not a file") as info:
        ensure_host_key(folder)
    assert str(folder) in str(info.value)


# -- bounded output ----------------------------------------------------------------------------------------------

def test_output_at_the_cap_passes_and_one_byte_more_is_garbage_with_head_and_tail(standins, host_key):
    device = standins("d")
    entry = Device("d", address=device.address)
    with Connection(entry, host_key, max_output_bytes=10_000) as conn:
        marker_room = 200  # the exit-status line travels in the same stream
        assert len(conn.check(f"head -c {10_000 - marker_room} /dev/zero | tr '\\0' a")) == 10_000 - marker_room
        with pytest.raises(DeviceError) as info:
            conn.shell("printf HEAD; head -c 50000 /dev/zero | tr '\\0' m; printf TAIL; sleep 30")
    assert info.value.kind == "garbage" and "10000 bytes" in str(info.value)
    assert "'HEAD" in str(info.value)


@pytest.mark.slow
def test_a_flooding_command_is_cut_off_and_memory_stays_bounded(standins, host_key, capsys):
    device = standins("d")
    entry = Device("d", address=device.address)
    conn = session(entry, host_key)
    conn.connect()
    growth, outcome = _peak_rss_growth(lambda: conn.shell("yes facebench", timeout_s=60))
    assert isinstance(outcome, DeviceError) and outcome.kind == "garbage", outcome
    assert "facebench\\nfacebench" in str(outcome) and not conn.connected
    with capsys.disabled():
        print(f"\ndirect transport: peak RSS growth {growth / 2**20:.1f} MiB for a 16 MiB cap")
    assert growth < 3 * 16 * 2**20  # without the cap: ~68 MB/s until the timeout
    with Connection(entry, host_key) as again:  # the device is usable after the cut
        assert again.check("echo ok").strip() == "ok"


# -- the real adb client and server ------------------------------------------------------------------------------

@needs_adb
def test_the_real_adb_client_uses_shell_v2_exit_statuses(server, standins):
    device = standins("v2", keys=[server.public_key])
    _attach(server, device)
    assert server("-s", device.address, "shell", "exit 3").returncode == 3
    split = server("-s", device.address, "shell", "echo out; echo err >&2; exit 0")
    assert (split.returncode, split.stdout, split.stderr) == (0, "out\n", "err\n")  # v2 keeps the streams apart
    assert "shell_v2" in server("-s", device.address, "features").stdout


@needs_adb
def test_server_transport_shell_push_and_flood(server, standins, tmp_path):
    device = standins("s", keys=[server.public_key])
    entry = _attach(server, device)
    with session(entry, Path("unused")) as conn:
        assert isinstance(conn, ServerConnection) and conn.shell_v2
        assert conn.shell("echo out; echo err >&2; exit 4") == conn.shell("echo out; echo err >&2; exit 4")
        result = conn.shell("echo out; exit 4")
        assert (result.status, result.output) == (4, "out\n")
        with pytest.raises(DeviceError, match="exited 2"):
            conn.check("ls /no/such/dir")
        local = tmp_path / "blob"
        local.write_bytes(os.urandom(300_000))
        remote = f"{entry.workdir}/blob"
        assert conn.push_if_changed(local, remote, mode=0o755) is True
        assert device.local(remote).read_bytes() == local.read_bytes()
        assert os.access(device.local(remote), os.X_OK)
        assert conn.push_if_changed(local, remote) is False
        with pytest.raises(DeviceError) as info:
            conn.shell("sleep 30", timeout_s=1)
        assert info.value.kind == "timeout"
        growth, outcome = _peak_rss_growth(lambda: conn.shell("yes facebench", timeout_s=60))
        assert isinstance(outcome, DeviceError) and outcome.kind == "garbage", outcome
        print(f"server transport: peak RSS growth {growth / 2**20:.1f} MiB for a 16 MiB cap")
        assert growth < 3 * 16 * 2**20  # without the cap: ~68 MB/s until the timeout
        assert conn.check("echo still here").strip() == "still here"
    legacy = standins("legacy", keys=[server.public_key], features="")  # no shell_v2: the marker technique
    with session(_attach(server, legacy), Path("unused")) as conn:
        assert not conn.shell_v2 and conn.shell("echo hi; exit 5").status == 5


@needs_adb
def test_server_transport_faults(server, standins):
    dropper = standins("dropper", keys=[server.public_key], faults=adbd.Faults(drop_run="--graph"))
    with session(_attach(server, dropper), Path("unused")) as conn:
        with pytest.raises(DeviceError) as info:
            conn.shell("echo started --graph; sleep 5")
        assert info.value.kind == "dropped" and not conn.connected
    stranger = standins("stranger", keys=[])
    with pytest.raises(DeviceError) as info:
        session(_attach(server, stranger, "unauthorized"), Path("unused")).connect()
    assert info.value.kind == "unauthorised"
    with pytest.raises(DeviceError) as info:
        session(Device("ghost", serial="no-such-serial", server=server.address), Path("unused")).connect()
    assert info.value.kind == "unreachable" and "no-such-serial" in str(info.value)
    nobody = f"127.0.0.1:{_free_port()}"
    with pytest.raises(DeviceError) as info:
        session(Device("ghost", serial="x", server=nobody), Path("unused")).connect()
    assert info.value.kind == "unreachable" and nobody in str(info.value)


@needs_adb
@pytest.mark.slow
def test_cli_probe_discover_and_bench_through_the_server(server, standins, host_key, tmp_path, facebench_home):
    device = standins("phone", keys=[server.public_key])
    entry = _attach(server, device)
    program = write_program(tmp_path / "benchmark_model")
    inventory = tmp_path / "farm.toml"
    inventory.write_text(f'[host]\nkey = "{host_key}"\nbenchmark_model = "{program}"\nserver = "{server.address}"\n'
                         f'[devices.phone]\nserial = "{entry.serial}"\nworkdir = "{entry.workdir}"\n')
    store = tmp_path / "results.sqlite"
    runner = CliRunner()
    probed = runner.invoke(main, ["devices", "probe", "--inventory", str(inventory), "--store", str(store), "--json"])
    assert probed.exit_code == 0, probed.output
    [record] = json.loads(probed.stdout)
    assert record["authorised"] and record["model"] == "facebench stand-in (host CPU)"
    bench = runner.invoke(main, ["bench", "blazeface-short", "--devices", "phone", "--cpu", "--runs", "2", "--repeat",
                                 "1", "--cooldown", "0", "--inventory", str(inventory), "--store", str(store),
                                 "--benchmark-flag=--min_secs=0", "--benchmark-flag=--warmup_min_secs=0"])
    assert bench.exit_code == 0, bench.output
    assert "phone (host CPU)" in bench.stdout and "n=1" in bench.stdout

    found = runner.invoke(main, ["devices", "discover", "--server", server.address, "--json"])
    assert found.exit_code == 0, found.output
    assert {"server": server.address, "serial": device.address, "state": "device",
            "model": "facebench stand-in (host CPU)"} in json.loads(found.stdout)
    assert discover(server.address) == json.loads(found.stdout)
    text = runner.invoke(main, ["devices", "discover", "--server", server.address])
    assert text.exit_code == 0 and f'serial = "{device.address}"' in text.stdout
    assert f'server = "{server.address}"' in text.stdout

    nobody = f"127.0.0.1:{_free_port()}"
    down = runner.invoke(main, ["devices", "discover", "--server", nobody])
    assert down.exit_code == 1 and nobody in down.output
    inventory.write_text(f'[host]\nkey = "{host_key}"\n[devices.ghost]\nserial = "x"\nserver = "{nobody}"\n')
    none = runner.invoke(main, ["devices", "probe", "--inventory", str(inventory), "--store", str(store)])
    assert none.exit_code == 1 and "unreachable" in none.output


def test_discover_names_two_phones_of_one_model_apart_so_the_lines_load(monkeypatch, tmp_path):
    """Identical phones are the normal farm: the pasted lines must still be one table per phone."""
    import tomllib

    from facebench.farm import adb_server

    phones = [{"serial": s, "state": "device", "server": "127.0.0.1:5037", "model": "Pixel 7"}
              for s in ("A1", "B2", "C3")]
    monkeypatch.setattr(adb_server, "discover", lambda server, timeout: phones)
    result = CliRunner().invoke(main, ["devices", "discover"])
    assert result.exit_code == 0, result.output
    lines = result.output.split("# inventory lines for devices/farm.toml", 1)[1]
    devices = tomllib.loads(lines)["devices"]
    assert {name: d["serial"] for name, d in devices.items()} == {"pixel-7": "A1", "pixel-7-2": "B2",
                                                                  "pixel-7-3": "C3"}


@pytest.mark.parametrize("entry, message", [
    ('serial = " R58 "', "spaces or control characters"),
    ('serial = "a\\nb"', "spaces or control characters"),
    ('serial = "R58"\nserver = "[::1]:5037"', "IPv6 is not supported"),
    ('serial = "R58"\nserver = " :5"', r"is not host\[:port\]"),
])
def test_odd_serials_and_servers_are_refused_naming_the_file(tmp_path, entry, message):
    path = tmp_path / "farm.toml"
    path.write_text(f"[devices.x]\n{entry}\n")
    with pytest.raises(InventoryError, match=message) as info:
        load_inventory(path)
    assert str(path) in str(info.value)


def test_a_battery_limit_that_is_not_a_finite_temperature_is_refused():
    for value in ("nan", "-inf", "hot"):
        result = CliRunner().invoke(main, ["bench", "blazeface-short", "--devices", "all", "--max-battery-temp",
                                           value])
        assert result.exit_code == 2 and "is not a temperature" in result.output, (value, result.output)
