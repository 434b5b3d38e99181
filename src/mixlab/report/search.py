"""The report's search section: how a mixture search fitted its swarm and what it chose.

A search folder (``mixlab search --out``) holds ``search_weights.json`` and ``swarm.json``
(:mod:`mixlab.search.run`). This module turns one into a :class:`~mixlab.report.html.Section`:

* **tables** (built by :mod:`mixlab.search.summary`, the same the terminal shows): held-out fit
  diagnostics and the verdict; prior vs chosen weights with the epochs each implies at the
  target budget, the caps and the predicted losses; proxy compute vs the target's;
* **swarm scatter**: per evaluation domain, every swarm run's measured final loss against the
  loss a law fitted *without that run* predicted (cross-validation), with the identity line;
  points on the line = a law that generalises across mixtures;
* **mixture and repetition**: prior vs chosen weights per domain, and the epochs each makes at
  the target budget with the caps marked.

Sections come from search folders given to ``mixlab report`` (:mod:`mixlab.report.cli`) or
from the ``search`` stages of a suite (:func:`search_sections`, used by
:func:`mixlab.report.write.write_report`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mixlab.errors import DataError
from mixlab.report.html import Section
from mixlab.report.plots import Figure, _color, _figure, _png
from mixlab.report.records import RunRecord

SWARM_NAME = "swarm.json"
WEIGHTS_NAME = "search_weights.json"


def is_search_folder(path: str | Path) -> bool:
    """Whether ``path`` is a finished ``mixlab search`` folder."""
    p = Path(path)
    return (p / SWARM_NAME).is_file() and (p / WEIGHTS_NAME).is_file()


def search_sections(records: Sequence[RunRecord]) -> list[Section]:
    """One section per finished ``search`` stage of the records (suite order, no repeats)."""
    seen: list[Path] = []
    sections = []
    for r in records:
        for stage in r.stages:
            folder = stage.dir
            if stage.kind != "search" or folder is None or folder in seen:
                continue
            seen.append(folder)
            if is_search_folder(folder):
                title = f"Mixture search: {r.method} seed {r.seed} (stage {stage.name})"
                sections.append(load_search_section(folder, title=title, key=f"s{len(seen)}"))
    return sections


def load_search_section(folder: str | Path, *, title: str | None = None, key: str = "") -> Section:
    """The section of one search folder (DataError when its files are missing or unreadable)."""
    from mixlab.search.summary import compute_rows, fit_rows, weights_rows

    path = Path(folder)
    record, swarm = _read(path / WEIGHTS_NAME), _read(path / SWARM_NAME)
    stem = f"search{'-' + key if key else ''}"
    figures = [
        Figure(
            f"{stem}-scatter",
            "Swarm: predicted vs measured loss",
            "Each point is a swarm run: its measured final validation loss (x) against the loss "
            "predicted by the law fitted without that run (y, cross-validation). On the "
            "diagonal = the law generalises to unseen mixtures.",
            swarm_scatter(swarm),
        ),
        Figure(
            f"{stem}-mixture",
            "Chosen vs prior mixture, epochs at the target",
            "Left: prior and chosen weight per domain. Right: epochs each makes over the "
            "domain's training data at the target budget (black ticks: the caps).",
            mixture_and_epochs(record),
        ),
    ]
    verdict = "recommended" if record.get("recommended") else "NOT recommended"
    intro = (
        f"{path}: {record['fit']['runs']} swarm mixtures, {record['fit']['law']} law, "
        f"objective {record.get('objective_kind', 'mean')}; {verdict}."
    )
    advice = (record.get("verdict") or {}).get("advice") or []
    if advice and not record.get("recommended"):
        intro += " To do: " + " ".join(f"({i}) {a}." for i, a in enumerate(advice, 1))
    return Section(
        title=title or f"Mixture search: {record.get('name', path.name)}",
        intro=intro,
        tables=[
            ("Fit diagnostics (held-out)", *fit_rows(record)),
            ("Mixture", *weights_rows(record)),
            ("Compute", *compute_rows(record)),
            ("Swarm runs", *swarm_rows(swarm)),
        ],
        figures=[f for f in figures if f.png],
    )


def swarm_rows(swarm: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """One row per swarm run: name, proposal, measured and held-out objective, max epochs."""
    header = ["run", "proposal", "objective", "held-out predicted", "max epochs@target"]
    rows = [
        [
            r["name"],
            r["label"],
            f"{r['objective']:.4f}",
            f"{r['heldout_objective']:.4f}",
            f"{max(r['epochs_target'].values()):.3g}",
        ]
        for r in swarm["runs"]
    ]
    return header, rows


# ---------------------------------------------------------------------------- figures
def swarm_scatter(swarm: dict[str, Any]) -> bytes:
    """Held-out predicted vs measured final loss per evaluation domain, one panel each."""
    domains = list(swarm["eval_domains"])
    cols = min(4, len(domains))
    rows = math.ceil(len(domains) / cols)
    fig, axes = _figure(rows, cols, width=3.0, height=2.8)
    r2 = (swarm.get("fit") or {}).get("r2") or {}
    for i, (ax, d) in enumerate(zip(axes, domains, strict=False)):
        actual = [r["losses"][d] for r in swarm["runs"]]
        predicted = [r["heldout_predicted"][d] for r in swarm["runs"]]
        ax.scatter(actual, predicted, s=16, color=_color(i), alpha=0.8)
        values = [v for v in actual + predicted if math.isfinite(v)]
        if values:
            lo, hi = min(values), max(values)
            pad = 0.05 * (hi - lo or 1.0)
            ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="black", lw=0.8, ls="--")
        score = r2.get(d)
        ax.set_title(f"{d} (R² {score:.2f})" if score is not None else d, fontsize=10)
        ax.set_xlabel("measured loss")
        ax.grid(alpha=0.3)
    for ax in axes[len(domains) :]:
        ax.set_visible(False)
    axes[0].set_ylabel("held-out predicted loss")
    return _png(fig)


def mixture_and_epochs(record: dict[str, Any]) -> bytes:
    """Prior vs chosen weight per domain, and the epochs each makes at the target budget."""
    domains = list(record["weights"])
    xs = list(range(len(domains)))
    fig, axes = _figure(1, 2, width=max(4.0, 0.7 * len(domains) + 1.5), height=3.4)
    series = (
        ("prior", record["prior"], record.get("prior_epochs") or {}),
        ("chosen", record["weights"], record.get("epochs") or {}),
    )
    for i, (label, weights, epochs) in enumerate(series):
        shift = [x + (i - 0.5) * 0.38 for x in xs]
        axes[0].bar(shift, [weights[d] for d in domains], width=0.38, color=_color(i), label=label)
        axes[1].bar(shift, [epochs.get(d, math.nan) for d in domains], width=0.38, color=_color(i))
    caps = record.get("max_epochs") or {}
    capped = [(x, caps[d]) for x, d in zip(xs, domains, strict=True) if caps.get(d) is not None]
    if capped:
        cap_x, cap_y = [x for x, _ in capped], [y for _, y in capped]
        axes[1].scatter(cap_x, cap_y, marker="_", s=300, color="black", zorder=3)
    for ax, label in ((axes[0], "weight"), (axes[1], "epochs at the target budget")):
        ax.set_xticks(xs, domains, rotation=30 if len(domains) > 6 else 0)
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    return _png(fig)


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not readable JSON ({exc}); re-run mixlab search") from exc
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object; re-run mixlab search")
    return data
