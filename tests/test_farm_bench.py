"""The farm runner's bookkeeping: pushes per remote path, garbage per cell, p90/init/first, --shuffle.

End to end against stand-in phones on 127.0.0.1 running the host stand-in of
benchmark_model (as tests/test_farm.py does); the parser's figures are checked
against numpy on the per-run samples the stand-in prints.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from facebench.cli import main
from facebench.farm.bench import BenchModel, BenchSettings, cell_order, resolve_models, run_bench
from facebench.farm.benchmark_output import OutputError, parse, percentiles
from facebench.farm.inventory import Device, Inventory
from facebench.report.leaderboard import device_latency
from facebench.results.store import Store
from facebench.testing import adbd
from facebench.testing.host_benchmark import write_program

pytestmark = pytest.mark.farm

FAST = ("--min_secs=0", "--warmup_min_secs=0")
SUMMARY = re.compile(r"Init: (\d+), First inference: (\d+),")


@pytest.fixture(scope="module")
def model(facebench_home) -> BenchModel:
    return resolve_models("blazeface-short")[0]


@pytest.fixture
def phone(tmp_path, host_key):
    """A stand-in phone that accepts the host key, and its inventory entry."""
    d = adbd.StandInDevice(tmp_path / "phone", [Path(f"{host_key}.pub").read_bytes()], faults=adbd.Faults())
    d.start()
    yield d, Device("phone", address=d.address, workdir=str(d.root / "w"))
    d.stop()


def _settings(**kw) -> BenchSettings:
    return BenchSettings(**{"gpu": False, "runs": 3, "repeat": 1, "cooldown_s": 0, "extra_flags": FAST,
                            "connect_timeout_s": 2.0, **kw})


def _copy(model: BenchModel, path: Path) -> BenchModel:
    path.write_bytes(model.path.read_bytes())
    return resolve_models(str(path))[0]


def _samples(output: str) -> np.ndarray:
    [line] = [ln for ln in output.splitlines() if "facebench run times in us:" in ln]
    return np.array([float(v) for v in line.split(":", 2)[-1].split(",")])


# -- the tool's text ---------------------------------------------------------------------------------------------

STAT = "count=4 first=10 curr=12 min=9 max=40 avg=17.75 std=12 p5=9 median=11 p95=40\n"
LINE = "Inference timings in us: Init: {init}, First inference: 10, Warmup (avg): 10, Inference (avg): 17.75\n"


def test_a_malformed_number_is_an_output_error_naming_its_line():
    assert parse(STAT + LINE.format(init="5")).init_us == 5
    with pytest.raises(OutputError, match=r"malformed number '1\.2\.3'.*Init: 1\.2\.3"):
        parse(STAT + LINE.format(init="1.2.3"))
    with pytest.raises(OutputError, match=r"malformed number '1\.1\.1'.*count=4"):
        parse(STAT.replace("p95=40", "p95=1.1.1") + LINE.format(init="5"))
    with pytest.raises(OutputError, match=r"malformed number '1\.2\.3'.*run times"):
        parse(STAT + "facebench run times in us: 9,1.2.3,11\n" + LINE.format(init="5"))


def test_percentiles_come_from_samples_when_printed_else_from_the_tools_line():
    samples = [9.0, 11.0, 12.0, 40.0]
    out = parse(STAT + "facebench run times in us: " + ",".join(map(str, samples)) + "\n" + LINE.format(init="5"))
    reference = np.percentile(samples, [5, 50, 90, 95])
    assert out.percentiles_from == "samples"
    np.testing.assert_allclose([out.percentiles[k] for k in ("p5", "median", "p90", "p95")], reference)
    assert out.median_us == pytest.approx(reference[1])
    tool = parse(STAT + LINE.format(init="5"))  # no samples: the tool's p5/median/p95, p90 between median and p95
    assert tool.percentiles_from == "tool"
    assert (tool.percentiles["p5"], tool.percentiles["median"], tool.percentiles["p95"]) == (9, 11, 40)
    assert 11 < tool.percentiles["p90"] < 40
    # interpolation in rank is exact for a uniform distribution's quantiles
    uniform = {"median": 50.0, "p95": 95.0}
    assert percentiles(None, uniform)[0]["p90"] == pytest.approx(90.0)
    old = parse(STAT.split(" p5=")[0] + "\n" + LINE.format(init="5"))  # an older build: no percentiles at all
    assert old.percentiles_from == "tool-mean" and old.percentiles == {"median": 17.75} and "p90" not in old.percentiles


# -- end to end --------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_models_sharing_bytes_are_each_pushed_and_measured(phone, host_key, program, tmp_path, mediapipe_assets):
    _, a = phone
    inventory = tmp_path / "farm.toml"
    inventory.write_text(f'[host]\nkey = "{host_key}"\nbenchmark_model = "{program}"\n'
                         f'[devices.phone]\naddress = "{a.address}"\nworkdir = "{a.workdir}"\n')
    store = tmp_path / "results.sqlite"
    specs = ["face-mesh", "mesh-refinement", "mesh-iris-cascade"]
    assert len({m.sha256 for m in resolve_models("face-mesh") + resolve_models("mesh-refinement")}) == 1
    result = CliRunner().invoke(main, ["bench", *specs, "--devices", "phone", "--cpu", "--runs", "2", "--repeat", "1",
                                       "--cooldown", "0", "--connect-timeout", "2", "--inventory", str(inventory),
                                       "--store", str(store), *[f"--benchmark-flag={f}" for f in FAST]])
    assert result.exit_code == 0, result.output
    names = {m.name for spec in specs for m in resolve_models(spec)}
    with Store(store) as db:
        ok = {r["model"] for r in db.device_results(status="ok")}
    assert ok == names and len(names) == 4  # the cascade's two stages as well


@pytest.mark.slow
def test_a_malformed_number_fails_only_its_cell(phone, host_key, tmp_path, model):
    _, a = phone
    garbling = write_program(tmp_path / "bin" / "benchmark_model", malformed_for="garbled")
    bad = _copy(model, tmp_path / "garbled.tflite")
    inventory = Inventory(None, {"phone": a}, host_key, garbling)
    measured = run_bench([bad, model], [a], inventory, _settings(repeat=2), host_key)
    by_model = {(m.model, m.repeat): m for m in measured}
    for repeat in range(2):
        failed = by_model[("garbled", repeat)]
        assert (failed.status, failed.failure) == ("failed", "garbage")
        assert "Init: 1.2.3" in failed.reason
        assert by_model[("blazeface-short", repeat)].status == "ok", by_model[("blazeface-short", repeat)].reason


@pytest.mark.slow
def test_p90_init_and_first_are_stored_and_old_records_still_load(phone, host_key, program, model, tmp_path):
    _, a = phone
    store = Store(tmp_path / "results.sqlite")
    measured = run_bench([model], [a], Inventory(None, {"phone": a}, host_key, program), _settings(repeat=2, runs=5),
                         host_key, store)
    assert all(m.status == "ok" for m in measured), [m.reason for m in measured]
    for m in measured:
        samples = _samples(m.output)
        p5, median, p90, p95 = np.percentile(samples, [5, 50, 90, 95]) / 1e3
        assert m.percentiles_from == "samples" and samples.size == m.result["stats"]["count"]
        assert (m.p5_ms, m.median_ms, m.p90_ms, m.p95_ms) == pytest.approx((p5, median, p90, p95))
        init, first = (float(v) / 1e3 for v in SUMMARY.search(m.output).groups())
        assert (m.init_ms, m.first_ms) == pytest.approx((init, first))
    records = store.device_results(status="ok")
    assert {r["key"]: r["p90_ms"] for r in records} == {m.key: m.p90_ms for m in measured}
    [latency] = device_latency(records)["blazeface-short"].values()
    assert latency.run_p90_ms == pytest.approx(np.median([m.p90_ms for m in measured]))
    assert latency.init_ms == pytest.approx(np.median([m.init_ms for m in measured]))
    assert "run_p90_ms" in latency.to_dict()
    # a measurement stored before these fields existed still loads: no run p90, the rest as before
    old = {k: v for k, v in records[0].items()
           if k not in ("p5_ms", "p90_ms", "p95_ms", "init_ms", "first_ms", "percentiles_from", "shuffle_seed",
                        "position")}
    old_latency = device_latency([{**old, "model": "older"}])["older"]["phone (host CPU)"]
    assert old_latency.run_p90_ms is None and old_latency.median_ms == records[0]["median_ms"]
    assert "run_p90_ms" not in old_latency.to_dict()


@pytest.mark.slow
def test_shuffle_interleaves_models_and_repeats_in_a_seeded_order(phone, host_key, program, model, tmp_path):
    device, a = phone
    other = _copy(model, tmp_path / "other.tflite")
    inventory = Inventory(None, {"phone": a}, host_key, program)
    settings = _settings(repeat=3, runs=1)
    cells = [(m, r) for m in (model, other) for r in range(3)]
    seed = next(s for s in range(100) if [(m.name, r) for m, r in cell_order(cells, a, s)][:3]
                != [(model.name, r) for r in range(3)])
    order = []
    store = Store(tmp_path / "results.sqlite")
    measured = run_bench([model, other], [a], inventory, settings, host_key, store,
                         progress=lambda m: order.append((m.model, m.repeat)), shuffle_seed=seed)
    assert all(m.status == "ok" for m in measured), [m.reason for m in measured]
    expected = [(m.name, r) for m, r in cell_order(cells, a, seed)]
    assert order == expected and sorted(order) == sorted((m.name, r) for m, r in cells)
    assert order != [(m.name, r) for m, r in cells]  # not model by model
    assert cell_order(cells, a, seed) == cell_order(cells, a, seed)  # the seed decides it
    stored = store.device_results()
    assert {r["shuffle_seed"] for r in stored} == {seed}
    assert [(r["model"], r["repeat"]) for r in sorted(stored, key=lambda r: r["position"])] == expected

    # the command line prints the seed and stores it
    inv = tmp_path / "farm.toml"
    inv.write_text(f'[host]\nkey = "{host_key}"\nbenchmark_model = "{program}"\n'
                   f'[devices.phone]\naddress = "{a.address}"\nworkdir = "{a.workdir}"\n')
    db = tmp_path / "cli.sqlite"
    result = CliRunner().invoke(main, ["bench", str(other.path), "--devices", "phone", "--cpu", "--runs", "1",
                                       "--repeat", "2", "--cooldown", "0", "--shuffle", "--seed", "1234",
                                       "--inventory", str(inv), "--store", str(db),
                                       *[f"--benchmark-flag={f}" for f in FAST]])
    assert result.exit_code == 0, result.output
    assert "seed 1234" in result.stderr and " p90 " in result.stdout
    with Store(db) as s:
        assert {r["shuffle_seed"] for r in s.device_results()} == {1234}
    assert json.dumps(stored[0])  # the record is plain JSON
