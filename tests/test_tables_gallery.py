"""Paper-ready outputs: the LaTeX leaderboard, NME/AP in percent in human-facing tables, the error gallery."""

from __future__ import annotations

import csv
import dataclasses
import json

from facebench.protocol import get_protocol
from facebench.report.leaderboard import FORMATS, Row, column_kind, latex_escape, lower_is_better, render


def _rows() -> list[Row]:
    measured = [Row(model=name, protocol="mini-nme", kind="measured", metrics=metrics, faces=4, items=4, failures=0,
                    framing="ground-truth tight-68", points=68, dataset="fp")
                for name, metrics in (
                    ("good_model", {"nme": 0.0312, "fr": 0.25, "auc": 0.61, "faces": 4, "points": 68}),
                    ("bad_model", {"nme": 0.0735, "fr": 0.5, "auc": 0.42, "faces": 4, "points": 68}))]
    reported = Row(model="Paper_Net 50% & co", protocol="mini-nme", kind="reported", metrics={"nme": 0.02},
                   dataset="their own #1 copy", points=68, source="a paper")
    return [*measured, reported]


def _balanced(text: str) -> bool:
    depth = 0
    unescaped = text.replace("\\{", "").replace("\\}", "")
    for ch in unescaped:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if depth < 0:
            return False
    return depth == 0


def test_latex_is_a_booktabs_table_with_the_best_value_bold_and_reported_rows_marked():
    assert "latex" in FORMATS
    text = render(_rows(), "latex", {"mini-nme": get_protocol("mini-nme")})
    assert _balanced(text)
    assert text.count(r"\begin{table}") == text.count(r"\end{table}") == 1
    assert text.count(r"\begin{tabular}{lrrrrrl}") == 1  # model, nme fr auc faces points, framing
    assert text.index(r"\toprule") < text.index(r"\midrule") < text.index(r"\bottomrule")
    assert r"nme (\%) & fr & auc & faces & points & framing \\" in text
    good = next(ln for ln in text.splitlines() if ln.startswith(r"good\_model &"))
    bad = next(ln for ln in text.splitlines() if ln.startswith(r"bad\_model &"))
    assert r"\textbf{3.12}" in good and r"\textbf{0.6100}" in good and r"\textbf{0.2500}" in good  # lower nme/fr
    assert r"\textbf" not in bad and "7.35" in bad
    assert r"\textbf{4}" not in good  # counts are never marked
    # the reported row: its own block, italics, a dagger, a footnote; escaped, and never bold though lower
    reported = next(ln for ln in text.splitlines() if "Paper" in ln)
    assert reported.startswith(r"\textit{Paper\_Net 50\% \& co}$^\dagger$ & \textit{2.00}")
    assert text.index("good") < text.index("Reported (not measured here)") < text.index("Paper")
    assert "reported, not measured here" in text.split(r"\end{tabular}")[1]
    caption = next(ln for ln in text.splitlines() if ln.startswith(r"\caption{"))
    assert "mini-nme" in caption and "mini" in caption and "4 faces" in caption
    assert r"nme in \% of the inter-ocular distance" in caption
    assert "ground-truth tight-68" in good


def test_latex_escapes_every_special_character():
    assert latex_escape(r"a_b%c&d#e$f{g}h~i^j\k") == (
        r"a\_b\%c\&d\#e\$f\{g\}h\textasciitilde{}i\textasciicircum{}j\textbackslash{}k")
    assert latex_escape("two\nlines") == "two lines"


def test_column_rule():
    p = get_protocol("mini-nme")
    assert column_kind("nme", p) == "nme" and column_kind("common_nme") == "nme" and column_kind("ap50") == "ap"
    assert column_kind("fr", p) == "" and column_kind("faces", p) == ""
    assert lower_is_better("nme", p) is True and lower_is_better("fr", p) is True
    assert lower_is_better("auc", p) is False and lower_is_better("ap50") is False
    assert lower_is_better("faces", p) is None and lower_is_better("points", p) is None


def test_human_tables_show_nme_in_percent_and_json_csv_keep_fractions():
    protocols = {"mini-nme": get_protocol("mini-nme")}
    rows = _rows()[:1]
    md = render(rows, "md", protocols)
    header = next(ln for ln in md.splitlines() if ln.startswith("| model |"))
    assert "| nme (%) | fr | auc |" in header
    line = next(ln for ln in md.splitlines() if ln.startswith("| good_model |"))
    assert "| 3.12 | 0.2500 | 0.6100 |" in line and "0.0312" not in line
    html_out = render(rows, "html", protocols)
    assert "<th>nme (%)</th>" in html_out and "<td>3.12</td>" in html_out and "0.0312" not in html_out
    data = json.loads(render(rows, "json", protocols))
    assert data["rows"][0]["metrics"]["nme"] == 0.0312
    table = list(csv.DictReader(render(rows, "csv", protocols).splitlines()))
    assert table[0]["nme"] == "0.0312"


def test_gallery_writes_crops_and_csv_for_a_real_mini_run(mini_samples, tmp_path):
    from facebench.registry import resolve
    from facebench.report.gallery import write_gallery
    from facebench.report.leaderboard import leaderboard_rows
    from facebench.results.evaluate import evaluate
    from facebench.results.store import Store

    protocol = get_protocol("mini-nme")
    stale = [tmp_path / "report" / "gallery" / name for name in ("mini-nme--face-mesh--0ld0ld00-0.png",
                                                                 "mini-nme--gone-model--12345678.csv")]
    for path in stale:  # an earlier pass's crops (another fingerprint, a model no longer measured)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"old")
    with Store(tmp_path / "results.sqlite") as store:
        evaluate(resolve("face-mesh"), protocol, store, samples=mini_samples, progress=False)
        rows = leaderboard_rows(store, "mini-nme", include_reported=True)
        section = write_gallery(store, rows, {"mini-nme": protocol}, tmp_path / "report")
        latex = render(rows, "latex", {"mini-nme": protocol})
        elsewhere = dataclasses.replace(protocol, dataset="300w")  # a dataset whose root is not known here
        unavailable = write_gallery(store, rows, {"mini-nme": elsewhere}, tmp_path / "other")
    assert not any(path.exists() for path in stale)  # nothing links them: they are gone
    pngs = sorted((tmp_path / "report" / "gallery").glob("*.png"))
    csvs = sorted((tmp_path / "report" / "gallery").glob("*.csv"))
    assert len(pngs) == 4 and len(csvs) == 1
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in pngs)
    table = list(csv.DictReader(csvs[0].read_text().splitlines()))
    assert len(table) == 4 and set(table[0]) == {"item", "nme", "error"}
    assert all(float(r["nme"]) > 0 for r in table if not r["error"])
    for path in [*pngs, *csvs]:
        assert f'"gallery/{path.name}"' in section
    assert "Error gallery" in section and "NME" in section
    worst = max(table, key=lambda r: float(r["nme"] or "inf"))
    assert section.index(worst["item"]) < section.index(pngs[1].name)  # the worst face first
    assert r"\toprule" in latex and "face-mesh" in latex
    assert "not available at report time" in unavailable and "<img" not in unavailable
    assert len(list((tmp_path / "other" / "gallery").glob("*.csv"))) == 1  # the per-face CSV all the same
