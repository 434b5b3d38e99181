"""Write a report folder: ``report.html``, ``report.md`` + ``figures/*.png``, ``results.json``.

:func:`write_report` summarises the runs (:func:`mixlab.report.summary.summarize`), draws the
figures once (:func:`mixlab.report.plots.build_figures`) and writes:

* ``report.html`` — self-contained (inline CSS, images as data URIs); a suite with ``search``
  stages gets a section per search (:mod:`mixlab.report.search`);
* ``report.md`` — the same tables, images as ``figures/<name>.png`` next to it;
* ``results.json`` — :meth:`Summary.to_dict` plus ``title`` and ``runs`` (per-run metadata:
  folder, status, eval steps, cost, final eval), for programs. No NaN: null.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mixlab.files import write_bytes, write_json, write_text
from mixlab.report.html import FIGURES_DIR, render_html, render_markdown
from mixlab.report.plots import build_figures
from mixlab.report.records import RunRecord
from mixlab.report.summary import Summary, summarize

HTML_NAME = "report.html"
MARKDOWN_NAME = "report.md"
RESULTS_NAME = "results.json"


def write_report(
    records: Sequence[RunRecord],
    out_dir: str | Path,
    *,
    baseline: str | None = None,
    metric: str = "mean_ppl",
    title: str = "mixlab report",
) -> dict[str, Path]:
    """Write the report files into ``out_dir``; returns {"html", "markdown", "json",
    "figures"} -> path. Raises what :func:`summarize` raises (ConfigError, DataError)."""
    from mixlab.report.search import search_sections

    summary = summarize(records, baseline=baseline, metric=metric)
    figures = build_figures(records, summary)
    sections = search_sections(records)
    out = Path(out_dir)
    fig_dir = out / FIGURES_DIR
    fig_dir.mkdir(parents=True, exist_ok=True)
    for fig in [*figures, *(f for s in sections for f in s.figures)]:
        write_bytes(fig_dir / f"{fig.name}.png", fig.png)
    paths = {
        "html": out / HTML_NAME,
        "markdown": out / MARKDOWN_NAME,
        "json": out / RESULTS_NAME,
        "figures": fig_dir,
    }
    write_text(
        paths["html"], render_html(summary, figures, records, title=title, sections=sections)
    )
    write_text(
        paths["markdown"],
        render_markdown(summary, figures, records, title=title, sections=sections),
    )
    results = results_dict(summary, records, title=title)
    results["figures"] = [
        f"{FIGURES_DIR}/{fig.name}.png"
        for fig in [*figures, *(f for s in sections for f in s.figures)]
    ]
    write_json(paths["json"], results)
    return paths


def results_dict(
    summary: Summary, records: Sequence[RunRecord], *, title: str = "mixlab report"
) -> dict[str, Any]:
    """The ``results.json`` object: the summary, the title and every run's metadata."""
    return {"title": title, **summary.to_dict(), "runs": [r.metadata() for r in records]}
