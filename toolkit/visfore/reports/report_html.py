"""Helpers shared by the report writers (:mod:`visfore.reports.robustness_report`,
:mod:`visfore.reports.comparison_report`): JSON-safe values, number formatting, CSV, Markdown and
self-contained HTML tables, matplotlib PNGs.

Every file is written atomically (:mod:`visfore.core.runs`); matplotlib is switched to
the Agg backend when a plot is drawn (:func:`pyplot`), not when this module is imported. HTML pages are self-contained: inline
CSS, every image embedded as a base64 ``data:image/png`` URI, no external resource.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from visfore.core import runs

__all__ = [
    "BASE_CSS",
    "csv_value",
    "fmt",
    "html_page",
    "html_table",
    "jsonable",
    "md_table",
    "png_data_uri",
    "pyplot",
    "read_csv",
    "save_figure",
    "write_csv",
]

#: Plain styles for report pages (tables, headings, definition lists, images).
BASE_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;
max-width:1200px;color:#222;line-height:1.4}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0;font-size:.85em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1em}dt{font-weight:600}
dd{margin:0}code{background:#f3f3f3;padding:0 .2em}
img{max-width:100%;margin:.5em 0;border:1px solid #eee}
""".strip()


# -- values ------------------------------------------------------------------------------
def jsonable(value: Any) -> Any:
    """``value`` with numpy scalars as Python numbers, tuples as lists and NaN/inf as None
    (strict JSON)."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def fmt(value: Any, digits: int = 1) -> str:
    """A number for tables: fixed ``digits`` decimals, ``-`` for None/NaN."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(value)
    return f"{float(value):.{digits}f}"


# -- CSV ---------------------------------------------------------------------------------
def csv_value(value: Any) -> Any:
    """A CSV cell: mappings (and lists) as JSON text, None/NaN/inf as an empty cell."""
    if isinstance(value, Mapping):
        return json.dumps(jsonable(value), sort_keys=True)
    if isinstance(value, (list, tuple)):
        return json.dumps(jsonable(value))
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return value


def write_csv(path: Path, fields: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> Path:
    """Atomically write ``rows`` (only the keys in ``fields``, in that order) as CSV."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: csv_value(row.get(k)) for k in fields})
    return runs.atomic_write_text(path, buf.getvalue())


def read_csv(path: str | Path) -> list[dict[str, str]]:
    """Rows of a report CSV as dicts of strings."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# -- plots -------------------------------------------------------------------------------
def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    # Agg when a plot is drawn, not at import: importing a report module leaves the
    # process's backend alone (importing pyplot picks no backend yet).
    matplotlib.use("Agg", force=True)
    return plt


def save_figure(fig: Any, path: Path) -> Path:
    """Save ``fig`` as a PNG at ``path`` (atomically) and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    data = buf.getvalue()
    return runs.atomic_write(path, lambda f: f.write(data))


# -- Markdown and HTML -------------------------------------------------------------------
def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table (``|`` in cells escaped)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def html_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], row_classes: Sequence[str | None] | None = None
) -> str:
    """An HTML table of escaped text cells (optional CSS class per row)."""
    esc = html.escape
    parts = ["<table><tr>", *(f"<th>{esc(h)}</th>" for h in header), "</tr>"]
    for i, row in enumerate(rows):
        cls = row_classes[i] if row_classes is not None and i < len(row_classes) else None
        attr = f' class="{esc(cls)}"' if cls else ""
        parts.append(f"<tr{attr}>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>")
    parts.append("</table>")
    return "".join(parts)


def png_data_uri(path: str | Path) -> str:
    """``data:image/png;base64,...`` of a PNG file."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def html_page(title: str, body: Sequence[str], css: str = BASE_CSS) -> str:
    """A complete self-contained HTML document: ``title``, inline ``css``, ``body`` parts
    (already HTML) joined by newlines."""
    esc = html.escape
    head = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title><style>{css}</style></head><body>",
    ]  # fmt: skip
    return "\n".join([*head, *body, "</body></html>"]) + "\n"
