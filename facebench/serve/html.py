"""The web leaderboard's page layout: one document shell, one escaping rule, one sortable table.

Pages are rendered on the server as plain strings (no template engine, no front-end build, no CDN):
everything a store holds (model names, error texts, paths) goes through :func:`esc`; only values
wrapped in :class:`Html` (markup built here from escaped parts) pass through unchanged. The only
script is the table sorter below, inline, so a page works from a server with no internet access.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 auto 3em; max-width: 1280px; color: #222; padding: 0 1em; }
nav { display: flex; gap: 1.2em; align-items: baseline; padding: 0.7em 0; border-bottom: 1px solid #ccc; }
nav .brand { font-weight: 700; font-size: 1.1em; margin-right: 1em; }
nav a { text-decoration: none; } nav a:hover { text-decoration: underline; }
h1 { font-size: 1.5em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; font-size: 1.25em; }
h3 { font-size: 1.05em; margin-bottom: 0.2em; }
table.leaderboard, table.plain { border-collapse: collapse; margin: 0.6em 0; font-size: 12px; }
table.leaderboard th, table.leaderboard td, table.plain th, table.plain td { border: 1px solid #ddd;
  padding: 3px 6px; text-align: left; vertical-align: top; }
table.leaderboard th, table.plain th { background: #f3f3f3; }
table.sortable th { cursor: pointer; user-select: none; }
table.sortable th[aria-sort="ascending"]::after { content: " \\25B2"; font-size: 9px; }
table.sortable th[aria-sort="descending"]::after { content: " \\25BC"; font-size: 9px; }
tr.reported td { color: #555; font-style: italic; background: #fffbea; }
tr.stale td { color: #888; text-decoration: line-through; }
caption { text-align: left; font-weight: 600; padding: 0.3em 0; }
caption small { font-weight: normal; color: #555; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.4em 0; display: block; }
dl { display: grid; grid-template-columns: max-content auto; gap: 2px 1em; font-size: 12px; }
dt { font-weight: 600; } dd { margin: 0; word-break: break-all; }
form.filters { display: flex; gap: 1em; flex-wrap: wrap; align-items: end; background: #f7f7f7; padding: 0.6em;
  margin: 0.8em 0; }
form.filters label { display: flex; flex-direction: column; font-size: 12px; }
.scroll { overflow-x: auto; }
.none, .muted { color: #888; } code { font-size: 12px; }
div.gallery { display: flex; flex-wrap: wrap; gap: 10px; } figure.gallery { margin: 0; width: 192px; font-size: 11px; }
"""

# Click a header: sort its table's body by that column, numbers as numbers (a cell's leading number), empty
# cells last; a second click reverses. aria-sort says the state to assistive technology and to the tests.
SORT_SCRIPT = """
<script>
(function () {
  function key(cell) {
    const text = (cell ? cell.textContent : "").trim();
    const number = parseFloat(text.replace(/,/g, ""));
    return {text: text, number: /^[-+]?(\\d|\\.\\d)/.test(text) && !isNaN(number) ? number : null};
  }
  function compare(a, b) {
    if (a.text === "" || b.text === "") return (a.text === "") - (b.text === "");
    if (a.number !== null && b.number !== null) return a.number - b.number;
    if (a.number !== null) return -1;
    if (b.number !== null) return 1;
    return a.text.localeCompare(b.text);
  }
  function sort(th) {
    const table = th.closest("table"), body = table.tBodies[0];
    if (!body) return;
    const index = [...th.parentNode.children].indexOf(th);
    const ascending = th.getAttribute("aria-sort") !== "ascending";
    const rows = [...body.rows].map(row => ({row: row, key: key(row.cells[index])}));
    rows.sort((a, b) => {
      const empty = (a.key.text === "") - (b.key.text === "");
      if (empty) return empty;  // empty cells stay last either way
      return ascending ? compare(a.key, b.key) : compare(b.key, a.key);
    });
    rows.forEach(r => body.appendChild(r.row));
    table.querySelectorAll("thead th").forEach(h => h.setAttribute("aria-sort", "none"));
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  }
  document.querySelectorAll("table.sortable thead th").forEach(th => {
    th.tabIndex = 0;
    th.addEventListener("click", () => sort(th));
    th.addEventListener("keydown", e => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sort(th); } });
  });
})();
</script>
"""


class Html(str):
    """Markup that is already safe (built from escaped parts): :func:`esc` and :func:`table_html` keep it."""


def esc(value: object) -> str:
    """Text for HTML (quotes too, so it is safe in attributes); :class:`Html` passes unchanged; None is empty."""
    if isinstance(value, Html):
        return value
    return html.escape("" if value is None else str(value), quote=True)


def link(href: str, text: object) -> Html:
    """``<a href=...>text</a>``, both escaped (``href`` built by the caller with URL quoting)."""
    return Html(f'<a href="{esc(href)}">{esc(text)}</a>')


def nav_html(*, submissions: bool = False) -> str:
    """The top navigation; Submissions only when the app serves the submission service."""
    items = [("/", "Leaderboard"), ("/models", "Models")] + ([("/submissions", "Submissions")] if submissions else [])
    return ('<nav><span class="brand">facebench</span>'
            + "".join(f'<a href="{href}">{text}</a>' for href, text in items) + "</nav>")


def page(title: str, body: str, *, nav: str = "", submissions: bool = False) -> str:
    """A full HTML document: ``body`` (markup, not escaped) under the top navigation. ``nav``: markup that
    replaces the default navigation (``submissions`` adds its link to the default one)."""
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)} · facebench</title><style>{STYLE}</style></head>\n<body>\n"
            f"{nav or nav_html(submissions=submissions)}\n<main>\n{body}\n</main>\n{SORT_SCRIPT}</body></html>\n")


def table_html(header: Sequence[object], rows: Sequence[Sequence[object]], *, sortable: bool = True,
               css_class: str = "leaderboard", caption: object = "", row_classes: Sequence[str] | None = None,
               attrs: dict[str, str] | None = None) -> str:
    """A ``<table>``: every header and cell escaped unless it is :class:`Html`; ``sortable`` headers sort the
    body on click (numbers as numbers, toggling ascending/descending, ``aria-sort`` set)."""
    classes = css_class + (" sortable" if sortable else "")
    extra = "".join(f' {esc(k)}="{esc(v)}"' for k, v in (attrs or {}).items())
    sort_attr = ' aria-sort="none"' if sortable else ""
    head = "".join(f'<th scope="col"{sort_attr}>{esc(h)}</th>' for h in header)
    body = []
    for i, cells in enumerate(rows):
        cls = row_classes[i] if row_classes is not None and i < len(row_classes) else ""
        body.append((f'<tr class="{esc(cls)}">' if cls else "<tr>")
                    + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return (f'<div class="scroll"><table class="{esc(classes)}"{extra}>{cap}<thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


def definition_list(pairs: Sequence[tuple[object, object]]) -> str:
    """``<dl>`` of (term, value) pairs, escaped."""
    return "<dl>" + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in pairs) + "</dl>"
