"""Measurement conditions end to end: thermal gating and core pinning through ``facebench bench``.

Stand-in phones on 127.0.0.1 (facebench/testing/adbd.py) answer ``dumpsys
thermalservice`` from a scripted ``thermal_status`` file and expose a fake
cpufreq tree through FACEBENCH_SYSFS; the host stand-in of benchmark_model
really runs, under the host's taskset when pinned.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from facebench.cli import main
from facebench.farm import conditions
from facebench.farm.bench import BenchSettings
from facebench.results.store import Store
from facebench.testing import adbd

pytestmark = pytest.mark.farm

FAST = ("--min_secs=0", "--warmup_min_secs=0")


@pytest.fixture
def farm(tmp_path, host_key, program, facebench_home):
    """Factory: stand-in phones by name (with a hook to script them before they start) and a `bench` runner."""
    started: list[adbd.StandInDevice] = []
    inventory = tmp_path / "farm.toml"
    store = tmp_path / "results.sqlite"

    def phones(*names: str, script=lambda root: None) -> list[adbd.StandInDevice]:
        text = f'[host]\nkey = "{host_key}"\nbenchmark_model = "{program}"\n'
        for name in names:
            d = adbd.StandInDevice(tmp_path / name, [Path(f"{host_key}.pub").read_bytes()])
            script(d.root)
            started.append(d.start())
            text += f'[devices.{name}]\naddress = "{d.address}"\nworkdir = "{d.root / "w"}"\n'
        inventory.write_text(text)
        return started[-len(names):]

    def bench(*options: str, devices: str = "all"):
        result = CliRunner().invoke(main, ["bench", "blazeface-short", "--devices", devices, "--cpu", "--runs", "2",
                                           "--repeat", "1", "--cooldown", "0", "--connect-timeout", "2",
                                           "--inventory", str(inventory), "--store", str(store),
                                           *[f"--benchmark-flag={f}" for f in FAST], *options])
        with Store(store) as db:
            records = {r["device"]: r for r in db.device_results()}
        return result, records

    yield phones, bench
    for d in started:
        d.stop()


# -- the parts -----------------------------------------------------------------------------------------------------

def test_thermal_status_clusters_and_cores_parse():
    dump = "IsStatusOverride: false\nThermalStatusListeners:\n\tcallbacks: 1\nThermal Status: 3\nHAL Ready: true\n"
    assert conditions.parse_thermal_status(dump) == 3
    assert conditions.parse_thermal_status("Can't find service: thermalservice\n") is None
    lines = "\n".join(f"/sys/devices/system/cpu/cpu{c}/cpufreq/cpuinfo_max_freq {f}"
                      for c, f in ((0, 1800000), (1, 1800000), (2, 2400000), (3, 2400000), (7, 3000000)))
    assert conditions.parse_clusters(lines) == {1800000: [0, 1], 2400000: [2, 3], 3000000: [7]}
    assert [conditions.normalise_cores(s) for s in ("all", None, "BIG", "little", "F0", "0x0f")] == \
        [None, None, "big", "little", "0xf0", "0xf"]
    for bad in ("0x0", "fast", "0xg1"):
        with pytest.raises(conditions.ConditionError):
            conditions.normalise_cores(bad)
    assert conditions.taskset_prefix("0xf0") == "taskset f0 "  # toybox reads bare hex; "0x" is a bad mask to it
    assert conditions.is_hot(0, 45.0, 40.0) and not conditions.is_hot(0, 45.0, None)
    assert conditions.is_hot(1, None, 40.0) and not conditions.is_hot(None, None, 40.0)


def test_a_pinned_run_is_another_measurement():
    unpinned = BenchSettings(gpu=False)
    assert unpinned.key() == BenchSettings(gpu=False, cores="all").key() == json.dumps(
        {"flags": unpinned.flags()}, sort_keys=True)  # keys stored before pinning existed still match
    assert BenchSettings(gpu=False, cores="big").key() != unpinned.key()
    assert BenchSettings(gpu=False, cores="0xF0").key() == BenchSettings(gpu=False, cores="f0").key()


# -- end to end ------------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_hot_phone_is_waited_on_until_it_cools(farm):
    phones, bench = farm
    phones("hot", script=lambda root: (root / "thermal_status").write_text("3 0\n"))
    result, records = bench("--thermal-wait", "30")
    assert result.exit_code == 0, result.output
    r = records["hot"]
    assert r["status"] == "ok" and r["thermal_before"] == 0 and r["thermal_after"] == 0
    assert 0.9 <= r["waited_s"] < 30 and not r["started_hot"]  # one poll at 3, a second later 0
    assert r["processor"] == "host CPU" and r["core_mask"] is None and not r["command"].startswith("taskset")


@pytest.mark.slow
def test_a_phone_that_stays_hot_runs_labelled_started_hot(farm):
    phones, bench = farm
    phones("hot", script=lambda root: (root / "thermal_status").write_text("3\n"))
    result, records = bench("--thermal-wait", "2")
    assert result.exit_code == 0, result.output
    r = records["hot"]
    assert r["status"] == "ok" and r["started_hot"] and r["thermal_before"] == 3 and r["thermal_after"] == 3
    assert r["waited_s"] >= 1.9
    assert r["processor"] == "host CPU (started hot: thermal 3, battery 30.0 C)"
    assert "started hot: thermal 3" in result.output


@pytest.mark.slow
def test_a_warm_battery_is_labelled_unless_the_limit_is_off_and_no_thermal_service_is_not_an_error(farm):
    phones, bench = farm

    def script(root: Path) -> None:
        (root / "battery_temperature").write_text("452\n")  # tenths of a degree, as dumpsys battery says
        (root / "thermal_status").unlink()  # a phone without the thermal service (before Android 10)

    phones("warm", script=script)
    result, records = bench("--thermal-wait", "0")
    r = records["warm"]
    assert result.exit_code == 0, result.output
    assert r["thermal_before"] is None and r["started_hot"] and r["waited_s"] < 1  # 0: no wait, still recorded
    assert r["processor"] == "host CPU (started hot: thermal ?, battery 45.2 C)"
    result, records = bench("--thermal-wait", "0", "--max-battery-temp", "off")
    assert result.exit_code == 0 and not records["warm"]["started_hot"] and records["warm"]["processor"] == "host CPU"


def _mask(root: Path, cluster) -> int:
    """The stand-in's fake cpufreq tree, read here independently of facebench.farm.conditions."""
    freqs = {int(p.parts[-3].removeprefix("cpu")): int(p.read_text())
             for p in (root / "sysfs/devices/system/cpu").glob("cpu*/cpufreq/cpuinfo_max_freq")}
    chosen = cluster(set(freqs.values()))
    return sum(1 << c for c, f in freqs.items() if f == chosen)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("taskset", path="/usr/local/bin:/usr/bin:/bin") is None,
                    reason="no taskset on the host (util-linux): the stand-in cannot pin")
def test_cores_big_pins_the_tool_with_taskset_and_stores_the_mask(farm):
    phones, bench = farm
    [phone] = phones("pinned")
    assert len(list((phone.root / "sysfs/devices/system/cpu").glob("cpu*"))) == max(os.cpu_count() or 1, 1)
    for cluster, spec in ((max, "big"), (min, "little")):
        mask = _mask(phone.root, cluster)
        result, records = bench("--cores", spec)
        assert result.exit_code == 0, result.output
        r = records["pinned"]
        assert r["status"] == "ok" and r["core_mask"] == hex(mask)
        assert r["command"].startswith(f"taskset {mask:x} ")
        assert r["processor"] == f"host CPU, cores {spec} {hex(mask)}"
        assert json.loads(r["settings"])["cores"] == spec
    result, records = bench("--cores", "0x1")
    assert records["pinned"]["command"].startswith("taskset 1 ") and records["pinned"]["core_mask"] == "0x1"
    assert records["pinned"]["processor"] == "host CPU, cores 0x1"


@pytest.mark.slow
def test_a_phone_without_cpufreq_fails_its_pinned_cell_cleanly(farm):
    phones, bench = farm
    _, fine_phone = phones("bare", "fine",
                           script=lambda root: shutil.rmtree(root / "sysfs") if root.name == "bare" else None)
    result, records = bench("--cores", "little")
    assert result.exit_code == 1
    bare, fine = records["bare"], records["fine"]
    assert bare["status"] == "failed" and bare["failure"] == "cores" and "cpuinfo_max_freq" in bare["reason"]
    assert "FAILED (cores)" in result.output and "Traceback" not in result.output
    assert fine["status"] == "ok" and fine["core_mask"] == hex(_mask(fine_phone.root, min))  # the other carries on
    bad = CliRunner().invoke(main, ["bench", "blazeface-short", "--devices", "all", "--cores", "fast"])
    assert bad.exit_code == 2 and "hex CPU mask" in bad.output
