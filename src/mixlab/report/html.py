"""Render the report as one self-contained HTML page and as markdown.

:func:`render_html` returns a page with everything inline — CSS in a ``<style>``, every figure
as a ``data:image/png;base64`` URI — so ``report.html`` can be mailed or attached to a CI run
and opens offline. A tiny inline script records, on ``load``, how many images decoded
(``<body data-images-loaded>``, out of ``data-images-total``) and how many window errors
fired (``data-errors``, resource errors included), so a headless browser's ``--dump-dom``
shows whether the page rendered.

:func:`render_markdown` returns ``report.md``: the same tables as GitHub markdown, with the
figures referenced relatively (``figures/<name>.png``, written next to it by
:func:`mixlab.report.write.write_report`).
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass, field

from mixlab.report.plots import Figure
from mixlab.report.records import RunRecord
from mixlab.report.stats import fmt
from mixlab.report.summary import Summary, metric_key
from mixlab.tables import markdown_table

FIGURES_DIR = "figures"


@dataclass(frozen=True)
class Section:
    """An extra part of a report (a mixture search, ...): intro, tables and figures.

    ``tables`` are ``(caption, header, rows)``; figure names must be unique in the report.
    """

    title: str
    intro: str = ""
    tables: Sequence[tuple[str, list[str], list[list[str]]]] = field(default_factory=list)
    figures: Sequence[Figure] = field(default_factory=list)


CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2330;
       max-width: 1400px; margin: 2em auto; padding: 0 1.5em; }
h1 { margin-bottom: 0.1em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #dde; }
p.meta, p.caption, .notes { color: #556; }
table { border-collapse: collapse; margin: 0.8em 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d5d9e2; padding: 0.3em 0.6em; text-align: right; }
td { white-space: nowrap; } .scroll { overflow-x: auto; }
th { background: #f1f3f8; } td:first-child, th:first-child { text-align: left; }
tr.baseline td { background: #f7f8fb; font-weight: 600; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eef; }
"""

# Counts decoded images and window errors (capture phase: resource errors too) for tests.
SCRIPT = """
(function () {
  var errors = 0;
  function mark() { document.body.dataset.errors = String(errors); }
  window.addEventListener("error", function () { errors += 1; mark(); }, true);
  window.addEventListener("load", function () {
    var images = document.images, loaded = 0;
    for (var i = 0; i < images.length; i++) {
      if (images[i].complete && images[i].naturalWidth > 0) { loaded += 1; }
    }
    document.body.dataset.imagesLoaded = String(loaded);
    document.body.dataset.imagesTotal = String(images.length);
    mark();
  });
})();
"""


def render_html(
    summary: Summary,
    figures: Sequence[Figure],
    records: Sequence[RunRecord],
    *,
    title: str = "mixlab report",
    sections: Sequence[Section] = (),
) -> str:
    """The whole report as one HTML page with no external resources."""
    e = html.escape
    body = [
        f"<h1>{e(title)}</h1>",
        f'<p class="meta">{e(_intro(summary, records))}</p>',
        "<h2>Summary</h2>",
        "<p>mean_ppl is the unweighted mean over domains: it favours mixtures flatter than "
        "natural, so read it next to natural_ppl (token-weighted) and the worst domain. "
        f"± is the std over seeds. <i>To target</i>: the first eval step reaching the same-seed "
        f"{e(summary.baseline)}'s best {e(summary.metric)}, as 100·(1 − s*/S_b). "
        "Δ%: mean paired difference vs the same-seed baseline, in % of it, ± a 95% t interval; "
        "wins counts the seeds where the method is lower.</p>",
        _html_table(*summary.headline_rows(), baseline=summary.baseline),
        "<h2>Cost</h2>",
        "<p>Stage tokens and seconds are the extra cost of multi-stage methods (reference, "
        "proxy) on top of the main run; overheads are relative to the <code>natural</code> run. "
        "Wall-clock compares only between runs made under the same load (same <code>--jobs</code>, "
        "nothing else running)."
        "</p>",
        _html_table(*summary.cost_rows(), baseline=summary.baseline),
        "<h2>Per-domain validation perplexity</h2>",
        "<p>Final perplexity per domain, mean over seeds.</p>",
        _html_table(*summary.per_domain_rows(), baseline=summary.baseline),
    ]
    header, rows = summary.target_rows()
    if rows:
        body += ["<h2>Steps to target, per seed</h2>", _html_table(header, rows)]
    for fig in figures:
        data = base64.b64encode(fig.png).decode("ascii")
        body += [
            f"<h2>{e(fig.title)}</h2>",
            f'<figure><img alt="{e(fig.title)}" src="data:image/png;base64,{data}">',
            f'<figcaption><p class="caption">{e(fig.caption)}</p></figcaption></figure>',
        ]
    for section in sections:
        body += _section_html(section)
    body += ["<h2>Runs</h2>", _html_table(*run_rows(records, summary.metric))]
    if summary.notes:
        items = "".join(f"<li>{e(n)}</li>" for n in summary.notes)
        body += ["<h2>Notes</h2>", f'<ul class="notes">{items}</ul>']
    return _page(title, body)


def render_sections_html(sections: Sequence[Section], *, title: str) -> str:
    """A self-contained page of sections only (e.g. ``mixlab report`` on a search folder)."""
    body = [f"<h1>{html.escape(title)}</h1>"]
    for section in sections:
        body += _section_html(section)
    return _page(title, body)


def render_sections_md(sections: Sequence[Section], *, title: str) -> str:
    """The markdown twin of :func:`render_sections_html`."""
    parts = [f"# {title}"]
    for section in sections:
        parts += ["", _section_markdown(section)]
    return "\n".join(parts) + "\n"


def _page(title: str, body: Sequence[str]) -> str:
    e = html.escape
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{e(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f"<script>{SCRIPT}</script>\n" + "\n".join(body) + "\n</body>\n</html>\n"
    )


def _section_html(section: Section) -> list[str]:
    e = html.escape
    out = [f"<h2>{e(section.title)}</h2>"]
    if section.intro:
        out.append(f"<p>{e(section.intro)}</p>")
    for caption, header, rows in section.tables:
        out += [f"<h3>{e(caption)}</h3>", _html_table(header, rows)]
    for fig in section.figures:
        data = base64.b64encode(fig.png).decode("ascii")
        out += [
            f"<h3>{e(fig.title)}</h3>",
            f'<figure><img alt="{e(fig.title)}" src="data:image/png;base64,{data}">',
            f'<figcaption><p class="caption">{e(fig.caption)}</p></figcaption></figure>',
        ]
    return out


def _section_markdown(section: Section) -> str:
    parts = [f"## {section.title}"]
    if section.intro:
        parts += ["", section.intro]
    for caption, header, rows in section.tables:
        parts += ["", f"### {caption}", "", markdown_table(header, rows)]
    for fig in section.figures:
        parts += ["", f"### {fig.title}", "", f"![{fig.title}]({FIGURES_DIR}/{fig.name}.png)", ""]
        parts.append(fig.caption)
    return "\n".join(parts)


def render_markdown(
    summary: Summary,
    figures: Sequence[Figure],
    records: Sequence[RunRecord],
    *,
    title: str = "mixlab report",
    sections: Sequence[Section] = (),
) -> str:
    """``report.md``: the tables, then the figures as ``figures/<name>.png`` links."""
    parts = [f"# {title}", "", _intro(summary, records), "", summary.markdown().rstrip()]
    for fig in figures:
        parts += ["", f"## {fig.title}", "", f"![{fig.title}]({FIGURES_DIR}/{fig.name}.png)", ""]
        parts.append(fig.caption)
    for section in sections:
        parts += ["", _section_markdown(section)]
    parts += ["", "## Runs", "", markdown_table(*run_rows(records, summary.metric))]
    return "\n".join(parts) + "\n"


def run_rows(records: Sequence[RunRecord], metric: str) -> tuple[list[str], list[list[str]]]:
    """One row per run: method, seed, status, eval steps, final metric and folder."""
    key = metric_key(metric)
    header = ["method", "seed", "status", "evals", f"final {metric}", "folder"]
    rows = [
        [
            r.method,
            str(r.seed),
            r.status if not r.note else f"{r.status}: {r.note}",
            str(len(r.eval_steps)),
            fmt(r.final_eval.get(key)),
            str(r.run_dir),
        ]
        for r in records
    ]
    return header, rows


def _intro(summary: Summary, records: Sequence[RunRecord]) -> str:
    suites = sorted({r.suite_name for r in records if r.suite_name})
    ok = sum(1 for r in records if r.ok)
    text = (
        f"{len(summary.methods)} methods, {ok} finished runs of {len(records)}; "
        f"baseline {summary.baseline}, metric {summary.metric} (lower is better)."
    )
    return (f"Suite {', '.join(suites)}: " + text) if suites else text


def _html_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], *, baseline: str | None = None
) -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in header)
    lines = [f'<div class="scroll"><table>\n<thead><tr>{head}</tr></thead>\n<tbody>']
    for row in rows:
        cls = ' class="baseline"' if baseline is not None and row and row[0] == baseline else ""
        cells = "".join(f"<td>{e(str(c))}</td>" for c in row)
        lines.append(f"<tr{cls}>{cells}</tr>")
    lines.append("</tbody>\n</table></div>")
    return "\n".join(lines)
