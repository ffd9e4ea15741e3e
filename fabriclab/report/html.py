"""Self-contained HTML pieces (inline CSS, relative links, escaped text) and number formats."""

from __future__ import annotations

import math
from html import escape

from .figures import PlotResult

DASH = "\u2014"

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
h3 { font-size: 1.05em; margin: 0.4em 0; }
.sub { color: #555; margin-top: 0; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td.l { text-align: left; }
thead th { background: #f0f0f0; text-align: center; }
tbody th { background: #fafafa; font-weight: normal; text-align: left; }
.tables { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
figure { margin: 1.2em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; max-width: 900px; }
.skipped { background: #f7f7f7; border: 1px dashed #bbb; padding: 0.6em 1em; margin: 1.2em 0;
           max-width: 900px; }
.question { font-size: 1.1em; background: #eef5fb; border-left: 4px solid #4292c6;
            padding: 0.5em 1em; max-width: 900px; }
.warn { background: #fff4e0; border: 1px solid #e0a040; padding: 0.5em 1em; }
footer { margin-top: 2em; color: #555; font-size: 0.9em; }
"""


def _finite(x) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def fmt_int(x) -> str:
    return f"{int(x):,}" if _finite(x) else DASH


def fmt_us(ns) -> str:
    return f"{ns / 1000:,.1f} \u00b5s" if _finite(ns) else DASH


def fmt_gbps(x) -> str:
    return f"{x:,.1f} Gb/s" if _finite(x) else DASH


def fmt_ratio(x) -> str:
    return f"{x:.2f}\u00d7" if _finite(x) else DASH


def fmt_float(x, digits: int = 2) -> str:
    return f"{x:,.{digits}f}" if _finite(x) else DASH


def fmt_bytes(b) -> str:
    if not _finite(b):
        return DASH
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if abs(b) >= div:
            return f"{b / div:,.2f} {unit}"
    return f"{int(b)} B"


def link(href: str, text: str) -> str:
    return f'<a href="{escape(href)}">{escape(text)}</a>'


def kv_table(caption: str, rows: list[tuple[str, str, str]]) -> str:
    """A two-column table; rows are (data-key, label, formatted value)."""
    body = "".join(f'<tr data-key="{escape(k)}"><th>{escape(label)}</th><td>{escape(v)}</td></tr>'
                   for k, label, v in rows)
    return (f"<table><thead><tr><th colspan=\"2\">{escape(caption)}</th></tr></thead>"
            f"<tbody>{body}</tbody></table>")


def grid_table(header_html: list[str], rows: list[tuple[str, str, list[str]]],
               cls: str = "") -> str:
    """A table with a header row (cells given as HTML) and rows (data-key, label, values)."""
    head = "".join(f"<th>{h}</th>" for h in header_html)
    body = []
    for key, label, values in rows:
        cells = "".join(f'<td data-col="{i}">{escape(v)}</td>' for i, v in enumerate(values))
        body.append(f'<tr data-key="{escape(key)}"><th>{escape(label)}</th>{cells}</tr>')
    attr = f' class="{escape(cls)}"' if cls else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def plot_section(results: list[PlotResult]) -> str:
    out = []
    for r in results:
        if r.file:
            out.append(f'<figure id="{escape(r.key)}"><img src="plots/{escape(r.file)}" '
                       f'alt="{escape(r.title)}"><figcaption><b>{escape(r.title)}.</b> '
                       f"{escape(r.caption)} "
                       f'<a href="plots/{escape(r.svg)}">Vector (SVG)</a>.</figcaption>'
                       f"{r.extra_html}</figure>")
        else:
            out.append(f'<div class="skipped" id="{escape(r.key)}"><h3>{escape(r.title)}</h3>'
                       f"<p>{escape(r.note or 'No data.')}</p>{r.extra_html}</div>")
    return "\n".join(out)


def table(header: list[str], rows: list[list[str]], keys: list[str] | None = None,
          left: int = 1) -> str:
    """A plain table of escaped text; the first ``left`` columns are left-aligned labels
    and ``keys`` (one per row) become the rows' data-key attributes."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        key = f' data-key="{escape(keys[i])}"' if keys else ""
        cells = "".join(f'<td class="l">{escape(v)}</td>' if j < left else f"<td>{escape(v)}</td>"
                        for j, v in enumerate(row))
        body.append(f"<tr{key}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def page(title: str, subtitle: str, body: str) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            f"<h1>{escape(title)}</h1>\n<p class=\"sub\">{escape(subtitle)}</p>\n{body}\n"
            "</body>\n</html>\n")


