"""Reports: from run folders to a summary table, plots, ``report.md`` and ``report.html``.

records = load_records(["runs/suite"])          # records.py: read runs back
summary = summarize(records, baseline="uniform") # summary.py: METHODS.md §5 metrics
print(summary.table())
"""

from __future__ import annotations

from mixlab.report.records import RunRecord, load_records
from mixlab.report.summary import Summary, summarize

__all__ = ["RunRecord", "Summary", "load_records", "summarize"]
