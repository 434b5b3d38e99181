"""Reports: from run folders to a comparison table, plots, ``report.md`` and ``report.html``.

The flow, one module per step::

    records.py   load_records(paths)      suite / run folders -> RunRecord per (method, seed)
    summary.py   summarize(records)       METHODS.md §5: final aggregates, AUC, steps-to-target
                                          vs the same-seed baseline, paired 95% CI, wins, cost
    plots.py     build_figures(...)       matplotlib (Agg canvas) -> PNG bytes
    html.py      render_html / _markdown  self-contained HTML, markdown with figures/*.png
    write.py     write_report(...)        report.html, report.md, figures/, results.json
    cli.py       add_parser(sub)          ``mixlab report PATH... [--out DIR]``

Typical use::

    from mixlab.report import load_records, summarize, write_report
    records = load_records(["runs/demo"])             # a suite folder from `mixlab compare`
    print(summarize(records, baseline="uniform").table())
    write_report(records, "runs/demo/report")
"""

from __future__ import annotations

from mixlab.report.records import RunRecord, load_records
from mixlab.report.summary import Summary, summarize
from mixlab.report.write import write_report

__all__ = ["RunRecord", "Summary", "load_records", "summarize", "write_report"]
