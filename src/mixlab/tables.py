"""Plain-text and markdown tables: the one formatter behind every table mixlab prints.

:func:`text_table` lines up columns with spaces for the terminal. Each column is as wide as its
widest cell (or its ``min_widths`` entry); cells are left- or right-aligned by ``align``, one
letter per column (``"l"`` / ``"r"``; default: the first column left, numbers right). A rule
of dashes goes under the header (``rule="columns"``: one dash run per column, ``"full"``: one
line as wide as the table, ``None``: no rule), and ``footer`` rows (totals, aggregates) follow
a full-width rule. A row with fewer cells than the header lets its last cell run on, unpadded
and not counted in the widths (free text such as ``"317.590  (unweighted mean of PPLs)"``).
Cells are formatted by the caller (``f"{x:.4f}"``), so every table keeps its own precision.

:func:`markdown_table` writes the same header and rows as a GitHub markdown table.

Used by ``mixlab prepare`` (ingest summary), ``train`` and ``eval`` (per-domain perplexity,
runs side by side), ``doremi`` (weights per round) and ``compare`` / ``report`` / ``demo``
(the summary).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

Rule = Literal["columns", "full"]


def text_table(
    header: Sequence[str],
    rows: Sequence[Sequence[object]],
    *,
    align: str = "",
    sep: str = "  ",
    min_widths: Sequence[int] = (),
    rule: Rule | None = "columns",
    footer: Sequence[Sequence[object]] = (),
) -> str:
    """Columns aligned with spaces: header, rule, rows, then ``footer`` after a full rule.

    ``align`` has one letter per column, ``l`` or ``r`` (columns past its end: the first
    left, the others right); ``min_widths`` the least width of the first columns. Trailing
    spaces are stripped from every line.
    """
    n = len(header)
    if len(align) > n or set(align) - {"l", "r"}:
        raise ValueError(f"text_table: align {align!r} needs at most {n} letters l or r")
    aligns = [align[i] if i < len(align) else ("l" if i == 0 else "r") for i in range(n)]
    body = [[str(c) for c in r] for r in rows]
    foot = [[str(c) for c in r] for r in footer]
    for r in (*body, *foot):
        if len(r) > n:
            raise ValueError(f"text_table: a row has {len(r)} cells for {n} columns: {r}")
    widths = [len(str(h)) for h in header]
    for i, least in enumerate(min_widths[:n]):
        widths[i] = max(widths[i], least)
    for r in (*body, *foot):
        sized = r if len(r) == n else r[:-1]  # a short row's last cell runs on
        for i, cell in enumerate(sized):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        out = []
        for i, cell in enumerate(cells):
            if len(cells) < n and i == len(cells) - 1:
                out.append(cell)
            elif aligns[i] == "l":
                out.append(cell.ljust(widths[i]))
            else:
                out.append(cell.rjust(widths[i]))
        return sep.join(out).rstrip()

    full_rule = "-" * (sum(widths) + len(sep) * (n - 1))
    lines = [line([str(h) for h in header])]
    if rule == "columns":
        lines.append(sep.join("-" * w for w in widths))
    elif rule == "full":
        lines.append(full_rule)
    lines += [line(r) for r in body]
    if foot:
        lines.append(full_rule)
        lines += [line(r) for r in foot]
    return "\n".join(lines)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table (``|`` in cells escaped)."""

    def line(cells: Sequence[object]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), "|" + "|".join("---" for _ in header) + "|", *map(line, rows)])
