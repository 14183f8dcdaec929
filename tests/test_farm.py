"""The device farm end to end: real ADB bytes to stand-in devices on 127.0.0.1, real inference on their 'phone'.

Every fault the issue lists has its own test, each with a healthy second
device that must finish regardless.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import stat
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from facebench.cli import main
from facebench.farm.adb import Connection, DeviceError, ensure_host_key
from facebench.farm.bench import BenchModel, BenchSettings, resolve_models, run_bench
from facebench.farm.inventory import Device, Inventory, InventoryError, load_inventory
from facebench.report.leaderboard import device_latency
from facebench.results.store import Store
from facebench.testing import adbd

pytestmark = pytest.mark.farm

FAST = ("--min_secs=0", "--warmup_min_secs=0")


@pytest.fixture(scope="module")
def model(facebench_home) -> BenchModel:
    return resolve_models("blazeface-short")[0]


@pytest.fixture
def standins(tmp_path, public_key):
    """Factory: start a stand-in device (stopped at the end), return it and its inventory entry."""
    started = []

    def start(name: str, keys=None, faults=None, port=0) -> tuple[adbd.StandInDevice, Device]:
        d = adbd.StandInDevice(tmp_path / name, [public_key] if keys is None else keys, faults=faults or adbd.Faults(),
                               port=port)
        d.start()
        started.append(d)
        return d, Device(name, address=d.address, workdir=str(d.root / "w"))

    yield start
    for d in started:
        d.stop()


def _inventory(program, host_key, *devices: Device) -> Inventory:
    return Inventory(None, {d.name: d for d in devices}, host_key, program)


def _settings(**kw) -> BenchSettings:
    return BenchSettings(**{"gpu": False, "runs": 3, "repeat": 1, "cooldown_s": 0, "extra_flags": FAST,
                            "connect_timeout_s": 2.0, **kw})


# -- the host key and the inventory ------------------------------------------------------------------------------

def test_host_key_is_created_private_with_an_android_public_key(tmp_path):
    key = ensure_host_key(tmp_path / "nested" / "adbkey")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    modulus, exponent = adbd.parse_public_key(Path(f"{key}.pub").read_bytes())
    assert modulus.bit_length() == 2048 and exponent == 65537
    before = key.read_bytes()
    ensure_host_key(key)
    assert key.read_bytes() == before  # an existing key is never replaced


def test_inventory_reads_devices_and_names_the_file_on_errors(tmp_path):
    path = tmp_path / "farm.toml"
    path.write_text('[host]\nbenchmark_model = "bin/benchmark_model"\n'
                    '[devices.pixel7]\naddress = "192.168.1.23:5555"\ntags = ["tensor-g2"]\n'
                    '[devices.a71]\nserial = "R58M40"\nworkdir = "/data/local/tmp/x"\n')
    inv = load_inventory(path)
    assert inv.devices["pixel7"].host_port == ("192.168.1.23", 5555)
    assert inv.devices["a71"].where == "usb:R58M40" and inv.devices["a71"].workdir == "/data/local/tmp/x"
    assert inv.benchmark_model == tmp_path / "bin" / "benchmark_model"
    assert [d.name for d in inv.select(["all"])] == ["pixel7", "a71"]
    assert [d.name for d in inv.select(["a71,pixel7"])] == ["a71", "pixel7"]
    with pytest.raises(InventoryError, match="no device named nexus"):
        inv.select(["nexus"])
    with pytest.raises(InventoryError, match="benchmark_model .* does not exist"):
        inv.binary_for(inv.devices["pixel7"])
    for bad, message in (('[devices.x]\naddress = "h:1"\nserial = "s"\n', "exactly one of"),
                         ('[devices.x]\naddress = "nohost"\n', "not host:port"),
                         ('[devices.x]\naddress = "h:1"\ntag = ["a"]\n', "unknown key"),
                         ('[devices.x]\naddress = "h:1"\nworkdir = "relative"\n', "absolute"),
                         ("[devices.x\n", "farm.toml")):
        path.write_text(bad)
        with pytest.raises(InventoryError, match=message) as info:
            load_inventory(path)
        assert str(path) in str(info.value)


# -- the protocol, byte for byte ---------------------------------------------------------------------------------

def _read_packet(sock: socket.socket) -> tuple[int, int, int, bytes]:
    def exact(n):
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            assert chunk, "the device closed the connection"
            buf += chunk
        return buf

    command, arg0, arg1, length, check, magic = adbd._HEADER.unpack(exact(24))
    assert magic == command ^ 0xFFFFFFFF
    data = exact(length) if length else b""
    assert adbd.checksum(data) == check  # the device checksums what it sends
    return command, arg0, arg1, data


def _raw_session(address: str, host_key: Path, max_data: int = 4096) -> socket.socket:
    """CNXN and AUTH by hand: sign the device's token with the host key."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, utils

    host, port = address.split(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    sock.sendall(adbd.packet(adbd.CNXN, adbd.VERSION, max_data, b"host::\0"))
    command, kind, _, token = _read_packet(sock)
    assert (command, kind, len(token)) == (adbd.AUTH, adbd.AUTH_TOKEN, 20)
    private = serialization.load_pem_private_key(host_key.read_bytes(), None)
    sock.sendall(adbd.packet(adbd.AUTH, adbd.AUTH_SIGNATURE, 0,
                             private.sign(token, padding.PKCS1v15(), utils.Prehashed(hashes.SHA1()))))
    command, version, device_max, banner = _read_packet(sock)
    assert command == adbd.CNXN and version == adbd.VERSION and device_max == max_data
    assert banner.startswith(b"device::") and b"ro.product.model=" in banner
    return sock


def test_each_write_waits_for_the_hosts_okay(standins, host_key):
    device, _ = standins("d")
    sock = _raw_session(device.address, host_key, max_data=4096)
    sock.sendall(adbd.packet(adbd.OPEN, 7, 0, b"shell:head -c 20000 /dev/zero\0"))
    command, local_id, remote_id, _ = _read_packet(sock)
    assert (command, remote_id) == (adbd.OKAY, 7)
    received = 0
    while received < 20000:
        command, arg0, arg1, data = _read_packet(sock)
        assert (command, arg0, arg1) == (adbd.WRTE, local_id, 7) and 0 < len(data) <= 4096
        received += len(data)
        assert select.select([sock], [], [], 0.3)[0] == [], "a second WRTE came before the host's OKAY"
        sock.sendall(adbd.packet(adbd.OKAY, 7, local_id))
    command, *_ = _read_packet(sock)
    assert command == adbd.CLSE
    sock.close()


def test_a_bad_checksum_drops_the_connection(standins, host_key):
    device, _ = standins("d")
    sock = _raw_session(device.address, host_key)
    header = bytearray(adbd.packet(adbd.OPEN, 1, 0, b"shell:echo hi\0"))
    header[16] ^= 0x01  # the data checksum field
    sock.sendall(bytes(header))
    assert sock.recv(24) == b""  # closed, and the command never ran
    sock.close()


def test_an_unknown_key_is_never_accepted(standins, host_key, tmp_path):
    device, entry = standins("stranger", keys=[])
    with pytest.raises(DeviceError) as info:
        Connection(entry, host_key, auth_timeout_s=1).connect()
    assert info.value.kind == "unauthorised" and "Allow" in str(info.value)
    assert device.authorized == []  # our public key was offered and left waiting on the 'phone'
    other = ensure_host_key(tmp_path / "other" / "adbkey")
    device.authorize(Path(f"{other}.pub").read_bytes())
    with Connection(entry, other) as conn:  # once the user allowed that key, it works
        assert conn.check("echo ok").strip() == "ok"


def test_shell_reports_exit_status_and_push_skips_identical_files(standins, host_key, tmp_path):
    device, entry = standins("d")
    with Connection(entry, host_key) as conn:
        assert conn.shell("echo out; exit 4").status == 4
        assert conn.shell("true").status == 0
        with pytest.raises(DeviceError, match="exited 2"):
            conn.check("ls /no/such/dir")
        local = tmp_path / "blob"
        local.write_bytes(os.urandom(300_000))  # several DATA chunks
        remote = f"{entry.workdir}/blob"
        assert conn.push_if_changed(local, remote) is True
        assert device.local(remote).read_bytes() == local.read_bytes()
        assert conn.push_if_changed(local, remote) is False  # same size and hash: not pushed again
        local.write_bytes(os.urandom(300_000))
        assert conn.push_if_changed(local, remote) is True


@pytest.mark.skipif(shutil.which("adb") is None, reason="Debian's adb is not installed (CI installs it)")
def test_the_real_adb_client_connects_shells_pushes_and_pulls(standins, tmp_path):
    home = tmp_path / "home"
    (home / ".android").mkdir(parents=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "HOME": str(home), "ANDROID_ADB_SERVER_PORT": str(port)}
    env.pop("ANDROID_SDK_HOME", None)

    def adb(*args):
        return subprocess.run(["adb", *args], env=env, capture_output=True, text=True, timeout=30, check=False)

    assert adb("keygen", str(home / ".android" / "adbkey")).returncode == 0
    device, _ = standins("real", keys=[(home / ".android" / "adbkey.pub").read_bytes()])
    stranger, _ = standins("stranger", keys=[])
    try:
        assert adb("start-server").returncode == 0
        assert "connected to" in adb("connect", device.address).stdout
        adb("connect", stranger.address)
        listing = adb("devices").stdout
        assert f"{device.address}\tdevice" in listing
        assert f"{stranger.address}\tunauthorized" in listing
        shell = adb("-s", device.address, "shell", "echo hello; getprop ro.product.model")
        assert shell.stdout.split("\n")[:2] == ["hello", "facebench stand-in (host CPU)"]
        local = tmp_path / "payload"
        local.write_bytes(os.urandom(200_000))
        remote = str(device.root / "data" / "payload")
        assert adb("-s", device.address, "push", str(local), remote).returncode == 0
        assert device.local(remote).read_bytes() == local.read_bytes()
        back = tmp_path / "back"
        assert adb("-s", device.address, "pull", remote, str(back)).returncode == 0
        assert back.read_bytes() == local.read_bytes()
    finally:
        adb("kill-server")


# -- the benchmark tool's output ---------------------------------------------------------------------------------

OLD_FORMAT = """STARTING!
Num runs: [50]
Graph: [/data/local/tmp/m.tflite]
Loaded model /data/local/tmp/m.tflite
Initialized session in 17.187ms.
count=1 curr=3512391

count=50 first=2990275 curr=2913402 min=2727568 max=3189954 avg=2.95034e+06 std=109798

Inference timings in us: Init: 17187, First inference: 3512391, Warmup (avg): 3.51239e+06, Inference (avg): 2.95034e+06
Peak memory footprint (MB): init=4.92969 overall=138.809
"""
NEW_FORMAT_GPU = """INFO: STARTING!
INFO: Created TensorFlow Lite delegate for GPU.
VERBOSE: Replacing 58 out of 64 node(s) with delegate (TfLiteGpuDelegateV2) node, yielding 2 partitions.
INFO: count=9 first=87112 curr=51629 min=51629 max=87112 avg=58147.4 std=11478 p5=51629 median=51962 p95=87112

INFO: count=1000 first=52162 curr=49785 min=49088 max=686105 avg=63743.2 std=60716 p5=49620 median=51891 p95=68628

INFO: Inference timings in us: Init: 119515, First inference: 87112, Warmup (avg): 58147.4, Inference (avg): 63743.2
INFO: Memory footprint delta from the start of the tool (MB): init=55.4961 overall=55.4961
INFO: Overall peak memory footprint (MB) via periodic monitoring: 93.2383
"""


def test_both_output_formats_parse():
    from facebench.farm.benchmark_output import parse

    old = parse(OLD_FORMAT)
    assert (old.init_us, old.first_us, old.warmup_avg_us, old.avg_us) == (17187, 3512391, 3.51239e6, 2.95034e6)
    assert old.stats == {"count": 50, "min": 2727568, "max": 3189954, "std": 109798}
    assert old.median_us == 2.95034e6  # no median printed: the mean stands in
    assert old.memory_mb == {"init": 4.92969, "overall": 138.809} and old.gpu == "not requested"
    new = parse(NEW_FORMAT_GPU)
    assert new.stats["count"] == 1000 and new.median_us == 51891 and new.stats["p95"] == 68628
    assert new.memory_mb == {"init": 55.4961, "overall": 55.4961, "peak": 93.2383}
    assert (new.gpu, new.gpu_nodes) == ("partial", (58, 64))


def test_gpu_outcomes_and_garbage_are_told_apart():
    from facebench.farm.benchmark_output import OutputError, gpu_outcome, parse

    summary = "Inference timings in us: Init: 1, First inference: 2, Warmup (avg): 3, Inference (avg): 4\n"
    assert gpu_outcome("Replacing 31 out of 31 node(s) with delegate (TfLiteGpuDelegateV2) node")[0] == "applied"
    assert gpu_outcome("ERROR: Failed to apply GPU delegate.\n")[0] == "failed"
    assert gpu_outcome("INFO: Explicitly applied GPU delegate, and the model graph will be partially executed by "
                       "the delegate w/ 2 delegate kernels.")[0] == "partial"
    assert gpu_outcome("INFO: Created TensorFlow Lite delegate for GPU.\n")[0] == "applied"
    assert gpu_outcome("Though GPU delegate is explicitly applied, the model graph will not be executed by the "
                       "delegate.")[0] == "failed"
    assert parse("GPU acceleration is unsupported on this platform.\n" + summary).gpu == "unsupported"
    with pytest.raises(OutputError, match="no 'Inference timings"):
        parse("\x93\x01garbage $(reboot)\n")


# -- benchmarks end to end ---------------------------------------------------------------------------------------

@pytest.mark.slow
def test_two_devices_measure_real_inference_labelled_host_cpu(standins, host_key, program, model, tmp_path):
    _, a = standins("a")
    device_b, b = standins("b")
    (device_b.root / "battery_temperature").write_text("352\n")
    store = Store(tmp_path / "results.sqlite")
    measured = run_bench([model], [a, b], _inventory(program, host_key, a, b), _settings(repeat=2), host_key, store)
    assert len(measured) == 4 and all(m.status == "ok" for m in measured), [m.reason for m in measured]
    for m in measured:
        assert m.processor == "host CPU" and m.median_ms > 0
        assert m.result["host_stand_in"] and m.result["stats"]["count"] == 3
        assert m.device_info["model"] == "facebench stand-in (host CPU)" and m.device_info["abi"]
    assert {m.temperature_before_c for m in measured if m.device == "b"} == {35.2}
    latency = device_latency(store.device_results())
    assert set(latency["blazeface-short"]) == {"a (host CPU)", "b (host CPU)"}
    assert latency["blazeface-short"]["a (host CPU)"]["n"] == 2
    # the GPU is never claimed: asking for it on the stand-in is a GPU-delegate failure
    gpu = run_bench([model], [a], _inventory(program, host_key, a), _settings(gpu=True), host_key, store)
    assert [(m.status, m.failure) for m in gpu] == [("failed", "gpu-delegate")]
    assert "Failed to apply GPU delegate" in gpu[0].reason
    assert not any("GPU" in label for label in device_latency(store.device_results())["blazeface-short"])


def test_model_names_and_paths_are_quoted_for_the_device_shell(standins, host_key, program, model, tmp_path):
    device, a = standins("a")
    hostile = "$(touch PWNED) `touch PWNED2`; touch PWNED3 'q\""
    a = replace(a, workdir=str(device.root / f"w {hostile}"))
    odd = tmp_path / f"face {hostile}.tflite"
    odd.write_bytes(model.path.read_bytes())
    [bench_model] = resolve_models(str(odd))
    [m] = run_bench([bench_model], [a], _inventory(program, host_key, a), _settings(), host_key)
    assert m.status == "ok", m.reason
    assert (device.root / f"w {hostile}" / "benchmark_model").is_file()
    assert not [p for p in device.root.rglob("PWNED*")]


FAULTS = {  # kind -> what the stand-in does (unreachable: nothing listens; exit: an arm64 binary on this host)
    "unreachable": None,
    "unauthorised": None,
    "dropped-push": adbd.Faults(drop_push=True),
    "dropped-run": adbd.Faults(drop_run="--graph"),
    "timeout": adbd.Faults(silent="--graph"),
    "garbage": adbd.Faults(garbage="--graph"),
    "exit": None,
}


@pytest.mark.slow
@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_failing_device_fails_alone_and_resume_redoes_only_its_cells(fault, standins, host_key, program, model,
                                                                      tmp_path):
    _, healthy = standins("healthy")
    if fault == "unreachable":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]  # nothing listens here once the socket is closed
        bad_device, bad = None, Device("bad", address=f"127.0.0.1:{port}", workdir=str(tmp_path / "bad" / "w"))
    else:
        bad_device, bad = standins("bad", keys=[] if fault == "unauthorised" else None, faults=FAULTS[fault])
    if fault == "exit":  # the Android binary on an x86 'phone': the shell cannot run it
        arm64 = tmp_path / "arm64_benchmark_model"
        arm64.write_bytes(b"\x7fELF\x02\x01\x01" + bytes(9) + b"\x02\x00\xb7\x00" + bytes(44))
        bad = replace(bad, benchmark_model=arm64)
    store = Store(tmp_path / "results.sqlite")
    settings = _settings(timeout_s=6.0)  # generous: the healthy device must finish well inside it on a busy CI host
    first = run_bench([model], [healthy, bad], _inventory(program, host_key, healthy, bad), settings, host_key, store)
    assert len(first) == 2
    assert all(m.status == "ok" for m in first if m.device == "healthy"), [m.reason for m in first]
    failed = [m for m in first if m.status != "ok"]
    assert failed and {m.device for m in failed} == {"bad"}
    assert failed[0].failure == fault.split("-")[0], failed[0].reason
    stored = {r["key"]: r for r in store.device_results()}
    assert set(stored) == {m.key for m in first}  # every cell is in the store, a failed one with its reason
    assert all(stored[m.key]["reason"] for m in failed)

    # the fault goes away; --resume runs only the cells that failed
    if fault == "unreachable":
        bad_device = standins("bad", port=port)[0]
    bad_device.faults = adbd.Faults()
    bad_device.authorized[:] = [Path(f"{host_key}.pub").read_bytes()]
    bad = replace(bad, benchmark_model=None)
    again = run_bench([model], [healthy, bad], _inventory(program, host_key, healthy, bad), settings, host_key, store,
                      resume=True)
    assert {m.key for m in again} == {m.key for m in failed}
    assert all(m.status == "ok" for m in again), [m.reason for m in again]


@pytest.mark.slow
def test_a_device_dropping_mid_run_is_reconnected_for_the_next_model(standins, host_key, program, model, tmp_path):
    device, a = standins("a", faults=adbd.Faults(drop_run="--graph"))
    copy = tmp_path / "second.tflite"
    copy.write_bytes(model.path.read_bytes())
    models = [model, *resolve_models(str(copy))]

    def heal_after_first(m):
        device.faults = adbd.Faults()  # the phone comes back after its first drop

    measured = run_bench(models, [a], _inventory(program, host_key, a), _settings(), host_key,
                         progress=heal_after_first)
    assert [m.status for m in measured] == ["failed", "ok"]


# -- the command line --------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_cli_devices_and_bench_with_resume(standins, host_key, program, tmp_path, facebench_home):
    _, a = standins("phone-a")
    _, stranger = standins("stranger", keys=[])
    inventory = tmp_path / "farm.toml"
    inventory.write_text(f'[host]\nkey = "{host_key}"\nbenchmark_model = "{program}"\n'
                         f'[devices.phone-a]\naddress = "{a.address}"\nworkdir = "{a.workdir}"\ntags = ["stand-in"]\n'
                         f'[devices.stranger]\naddress = "{stranger.address}"\n')
    store = tmp_path / "results.sqlite"
    runner = CliRunner()
    listed = runner.invoke(main, ["devices", "list", "--inventory", str(inventory)])
    assert listed.exit_code == 0 and "phone-a" in listed.output and "stand-in" in listed.output
    probed = runner.invoke(main, ["devices", "probe", "--inventory", str(inventory), "--store", str(store),
                                  "--timeout", "1", "--json"])
    assert probed.exit_code == 0, probed.output
    records = {r["name"]: r for r in json.loads(probed.stdout)}
    assert records["phone-a"]["authorised"] and records["phone-a"]["battery_c"] == 30.0
    assert records["stranger"]["reachable"] and not records["stranger"]["authorised"]
    args = ["bench", "blazeface-short", "--devices", "phone-a", "--cpu", "--runs", "2", "--repeat", "2",
            "--cooldown", "0", "--connect-timeout", "1", "--inventory", str(inventory), "--store", str(store),
            *[f"--benchmark-flag={f}" for f in FAST]]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "phone-a (host CPU)" in result.stdout and "n=2" in result.stdout
    resumed = runner.invoke(main, [*args, "--resume"])
    assert resumed.exit_code == 0 and "already in the store" in resumed.stderr
    failing = runner.invoke(main, [*args[:3], "all", *args[4:]])
    assert failing.exit_code == 1 and "stranger" in failing.stderr and "unauthorised" in failing.stderr
    unknown = runner.invoke(main, ["bench", "no-such-model", "--devices", "all", "--inventory", str(inventory)])
    assert unknown.exit_code == 1 and "unknown model" in unknown.output

    # phone latency sits next to accuracy: the leaderboard row and the latency figure show it
    run = runner.invoke(main, ["run", "-m", "blazeface-short", "-p", "mini-ap50", "--store", str(store), "--no-report",
                               "--out", str(tmp_path / "out"), "--no-progress"])
    assert run.exit_code == 0, run.output
    board = runner.invoke(main, ["leaderboard", "--store", str(store), "--format", "json", "--no-reported"])
    [row] = [r for r in json.loads(board.stdout)["rows"] if r["model"] == "blazeface-short"]
    phone = row["latency"]["phone-a (host CPU)"]
    assert phone["n"] == 2 and phone["p10_ms"] <= phone["median_ms"] <= phone["p90_ms"]
    assert any(label.startswith("host CPU (") for label in row["latency"])  # the evaluation's own forward time
    figure = runner.invoke(main, ["plot", "latency", "--store", str(store), "--out", str(tmp_path / "figs")])
    assert figure.exit_code == 0 and (tmp_path / "figs" / "latency.png").stat().st_size > 0
