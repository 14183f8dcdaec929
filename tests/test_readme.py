"""The README's two commands are the ones that work: CI runs the test one verbatim."""

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _quick_start_commands():
    text = (REPO / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = section.split("```sh\n")[1:]
    return [block.split("```", 1)[0].strip() for block in blocks]


def test_readme_has_exactly_two_commands_and_ci_runs_the_test_one():
    run_cmd, test_cmd = _quick_start_commands()
    assert run_cmd.endswith("facebench run") and test_cmd.endswith("pytest")
    ci_lines = (REPO / ".ci" / "run").read_text().splitlines()
    assert test_cmd in ci_lines
