"""Faults a hostile pass found in run isolation and caching, each a test: helper modules in the run key,
option values, a hanging framing detector, foreign and missing stores, failed runs and names."""

from __future__ import annotations

import sqlite3
import textwrap

import pytest
from click.testing import CliRunner

from facebench.cli import main
from facebench.errors import FacebenchError
from facebench.protocol import ProtocolError, get_protocol, parse_protocol
from facebench.registry import resolve
from facebench.results.evaluate import key_parts
from facebench.results.store import Store, StoreError
from facebench.types import ModelCard


def _write_adapter_with_helper(folder, scale: float):
    (folder / "helper.py").write_text(f"SCALE = {scale}\n")
    (folder / "uses.py").write_text(textwrap.dedent('''
        import sys
        from pathlib import Path

        sys.path.insert(0, str(Path(__file__).parent))
        import helper

        from facebench.baselines.blazeface import BlazeFaceShortRange


        class Uses(BlazeFaceShortRange):
            def postprocess(self, outputs, context):
                prediction = super().postprocess(outputs, context)
                return prediction if helper.SCALE == 1.0 else type(prediction)(detections=())
    '''))
    return f"{folder / 'uses.py'}:Uses"


def test_a_helper_module_beside_the_adapter_is_part_of_the_key(tmp_path):
    reference = _write_adapter_with_helper(tmp_path, 1.0)
    protocol = get_protocol("mini-ap50")
    before = key_parts(resolve(reference), "tflite", protocol, "fp", "")
    _write_adapter_with_helper(tmp_path, 2.0)
    after = key_parts(resolve(reference), "tflite", protocol, "fp", "")
    helpers = [k for k in before["code"] if k.endswith("helper")]
    assert helpers and before["code"][helpers[0]] != after["code"][helpers[0]]
    assert before["engine"] == after["engine"]  # facebench's own result-deciding code is one more part


@pytest.mark.parametrize("args, message", [
    (["--item-timeout", "nan"], "finite number of seconds"),
    (["--max-failures", "-1"], "cannot be negative"),
])
def test_option_values_that_would_disable_or_break_checks_are_refused(args, message):
    result = CliRunner().invoke(main, ["run", "-p", "mini-ap50", "-m", "blazeface-short", *args])
    assert result.exit_code == 2 and message in result.output


def test_a_foreign_sqlite_file_with_a_runs_table_is_not_taken_for_a_store(tmp_path):
    path = tmp_path / "other.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE runs (x)")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="not a facebench store .*lacks"):
        Store(path)
    result = CliRunner().invoke(main, ["leaderboard", "--store", str(path)])
    assert result.exit_code == 1 and "not a facebench store" in result.output and "Traceback" not in result.output


def test_reading_commands_never_make_an_empty_store(tmp_path):
    missing = tmp_path / "nowhere" / "results.sqlite"
    for command in (["leaderboard"], ["report", "--out", str(tmp_path / "out")], ["plot", "latency"]):
        result = CliRunner().invoke(main, [*command, "--store", str(missing)])
        assert result.exit_code == 1 and "no results store" in result.output
    assert not missing.parent.exists()


def test_a_run_that_evaluated_nothing_leaves_the_last_report(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "leaderboard.md").write_text("the last good report")
    result = CliRunner().invoke(main, ["run", "-m", str(tmp_path / "nofile.py") + ":X", "-p", "mini-ap50",
                                       "--store", str(tmp_path / "s.sqlite"), "--out", str(out), "--no-progress"])
    # an unresolvable model stops the command before any work (no store made, the report left be)
    assert result.exit_code == 1 and "nothing was run" in result.output
    assert (out / "leaderboard.md").read_text() == "the last good report" and not (tmp_path / "s.sqlite").exists()


def test_names_that_become_files_are_plain_and_flags_are_booleans(tmp_path, mini_samples):
    text = get_protocol("mini-nme").source
    with pytest.raises(ProtocolError, match="must be lower case"):
        parse_protocol(open(text).read().replace('id = "mini-nme"', 'id = "Mini-NME2"'), "upper.toml")
    card = resolve("blazeface-short").card
    with pytest.raises(ValueError, match="model name"):
        ModelCard(**{**card.to_dict(), "name": "=1+2|x\n<b>", "input_shape": tuple(card.input_shape),
                     "input_range": tuple(card.input_range)})
    from facebench.results.evaluate import evaluate

    with Store(tmp_path / "s.sqlite") as store, pytest.raises(FacebenchError, match="keep_failures must be True"):
        evaluate(resolve("blazeface-short"), get_protocol("mini-ap50"), store, samples=mini_samples,
                 keep_failures="no")  # type: ignore[arg-type]


@pytest.mark.slow
def test_a_hanging_framing_detector_fails_the_items_naming_the_detector(tmp_path, dlib_model, mini_samples):
    pytest.importorskip("dlib")
    (tmp_path / "hang.py").write_text(textwrap.dedent('''
        import time

        from facebench.baselines.blazeface import BlazeFaceShortRange


        class HangDet(BlazeFaceShortRange):
            def forward(self, inputs):
                time.sleep(1000)
    '''))
    protocol = tmp_path / "det.toml"
    protocol.write_text(open(get_protocol("mini-nme").source).read()
                        .replace('id = "mini-nme"', 'id = "mini-nme-det"')
                        .replace('source = "ground-truth"',
                                 f'source = "detector"\ndetector = "{tmp_path}/hang.py:HangDet"')
                        .replace('rule = ', '# rule = '))
    store = tmp_path / "s.sqlite"
    result = CliRunner().invoke(main, ["run", "-m", "dlib-68", "-p", str(protocol), "--item-timeout", "3",
                                       "--store", str(store), "--out", str(tmp_path / "out"), "--no-progress",
                                       "--no-report"])
    assert result.exit_code == 1
    with Store(store) as db:
        (run,) = db.runs(status=None)
        failures = db.failures(run.key)
    assert len(failures) == 4
    assert all("timeout: framing detector" in reason and "HangDet" in reason for _, reason in failures)
