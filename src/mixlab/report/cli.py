"""The ``mixlab report`` subcommand: run or suite folders -> summary table + report files.

:func:`add_parser` registers it on the ``mixlab`` command's subparsers; the library does the
work (:func:`mixlab.report.load_records`, :func:`mixlab.report.write_report`). User errors
are :class:`~mixlab.errors.MixlabError`, printed by ``mixlab``'s main as one line.
"""

from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = """\
Compare finished runs and write a report. Each PATH is a suite folder written by
`mixlab compare` (it has suite.json: methods, seeds, wall-clock and the extra cost of stages)
or a run folder written by `mixlab train` (method = folder name, or the parent's name for a
folder called seed<k>; seed = train.seed of its config.yaml).

The summary (printed, and in every file) has one row per method, the baseline first:
  mean_ppl, natural_ppl, worst_ppl (+ worst domain)   final validation, mean ± std over seeds;
                                  mean_ppl never alone: it rewards mixtures flatter than natural
  AUC                             area under the validation curve of --metric / step span
  to target: % fewer steps        s* = first eval step at which the method reaches the same-seed
                                  baseline's best --metric (S_b = that best's step);
                                  100·(1 - s*/S_b), with the count of seeds that never reach it
  Δ% (95% CI), wins               mean paired difference vs the same-seed baseline, in % of
                                  it, ± t(0.975, n-1)·s/√n, and seeds where the method is lower
  Δ% worst_ppl (wins)             the same for the worst domain's perplexity
  extra tokens                    tokens and seconds spent in stages (DoReMi reference + proxy,
                                  AC-ODM proxy) on top of the main run
plus a cost table (s/step and peak RSS vs the natural run, in %), a per-domain perplexity
table and per-seed steps-to-target.

A folder written by `mixlab search` (search_weights.json + swarm.json) gets a search report:
held-out fit diagnostics and the verdict, chosen vs prior weights with the epochs each makes at
the target budget, proxy compute vs the target's, and a swarm scatter of measured vs held-out
predicted loss per domain. A suite with `search` stages gets the same as extra sections.

Written to --out: report.html (self-contained: inline CSS, images embedded), report.md with
figures/*.png (validation curves, per-domain perplexity, mixture weights over training,
achieved vs requested shares and per-domain epochs, AC-ODM critic/actor/Q/reward when
logged) and results.json (the summary and per-run metadata, for programs).
"""

EPILOG = """\
examples:
  mixlab report runs/demo                          # a suite folder -> runs/demo/report/
  mixlab report runs/uniform runs/natural runs/odm --baseline uniform --out report/
  mixlab report runs/demo --metric natural_ppl     # steps-to-target on the pooled loss
  mixlab report runs/search                        # a mixlab search folder
"""


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``report`` on the ``mixlab`` subparsers; returns the new parser."""
    p: argparse.ArgumentParser = sub.add_parser(
        "report",
        help="summary table, plots, report.html / report.md / results.json from run folders",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="suite folders and/or run folders")
    p.add_argument(
        "--out",
        "-o",
        help="folder to write into (default: <suite>/report for a suite folder, else "
        "report/ next to the first run folder)",
    )
    p.add_argument(
        "--baseline",
        help="method the others are compared with (default: the suite's, else uniform, "
        "else the first method)",
    )
    p.add_argument(
        "--metric",
        help="aggregate for AUC, steps-to-target and Δ: mean_ppl, natural_ppl, geo_ppl, "
        "worst_ppl, ... or a full key such as eval_uncond/mean_ppl (default: the suite's "
        "metric, else mean_ppl)",
    )
    p.add_argument("--title", default="mixlab report", help="title of the report")
    p.set_defaults(func=cmd_report)
    return p


def default_out(first: str | Path) -> Path:
    """``<suite>/report`` for a suite folder, ``<parent>/report`` for a run folder."""
    from mixlab.comparison.runner import MANIFEST_NAME
    from mixlab.report.search import is_search_folder

    path = Path(first)
    own = (path / MANIFEST_NAME).is_file() or is_search_folder(path)
    return path / "report" if own else path.parent / "report"


def cmd_report(args: argparse.Namespace) -> int:
    from mixlab.report import load_records, summarize, write_report
    from mixlab.report.search import is_search_folder

    searches = [p for p in args.paths if is_search_folder(p)]
    if searches:
        return _search_report(args, searches)
    records = load_records(args.paths)
    out = Path(args.out) if args.out else default_out(args.paths[0])
    metric = args.metric or next((r.suite_metric for r in records if r.suite_metric), "mean_ppl")
    summary = summarize(records, baseline=args.baseline, metric=metric)
    print(summary.table())
    paths = write_report(records, out, baseline=summary.baseline, metric=metric, title=args.title)
    print()
    for name in ("html", "markdown", "json"):
        print(f"wrote {paths[name]}")
    return 0


def _search_report(args: argparse.Namespace, folders: list[str]) -> int:
    """``mixlab report`` on ``mixlab search`` folders: their search sections on one page."""
    from mixlab.errors import ConfigError
    from mixlab.files import write_bytes, write_text
    from mixlab.report.html import FIGURES_DIR, render_sections_html, render_sections_md
    from mixlab.report.search import load_search_section
    from mixlab.report.summary import text_table

    if len(folders) != len(args.paths):
        raise ConfigError(
            "mixlab report: give either search folders (from mixlab search) or run/suite "
            "folders, not both; a suite's search stages are reported with the suite"
        )
    sections = [
        load_search_section(f, key=str(i) if len(folders) > 1 else "")
        for i, f in enumerate(folders, 1)
    ]
    out = Path(args.out) if args.out else default_out(folders[0])
    (out / FIGURES_DIR).mkdir(parents=True, exist_ok=True)
    for section in sections:
        print(f"{section.title}\n{section.intro}")
        for caption, header, rows in section.tables[:2]:
            print(f"\n{caption}\n{text_table(header, rows)}")
        print()
        for fig in section.figures:
            write_bytes(out / FIGURES_DIR / f"{fig.name}.png", fig.png)
    title = args.title if args.title != "mixlab report" else "mixlab search report"
    write_text(out / "report.html", render_sections_html(sections, title=title))
    write_text(out / "report.md", render_sections_md(sections, title=title))
    print(f"wrote {out / 'report.html'}")
    print(f"wrote {out / 'report.md'}")
    return 0
