"""The report's figures, each rendered to PNG bytes with matplotlib's Agg canvas.

=======================  ==================================================================
function                 what it shows
=======================  ==================================================================
validation_curves        the metric, natural_ppl and worst_ppl vs step; mean over seeds per
                         method (band = min..max over seeds)
per_domain_ppl           final validation perplexity per domain, grouped bars per method
weight_trajectories      requested weights ``mix/weight/<d>`` over steps, stacked area, one
                         panel per method (its first seed)
shares_and_repetition    achieved vs requested token shares at the end (``mix/achieved`` vs
                         ``mix/requested``) and per-domain repetition ``domain/<d>/epochs``
acodm_diagnostics        AC-ODM, for the runs that logged it: critic loss, actor loss, mean Q;
                         the first run's per-domain reward and weights; the bound and KL
                         actually used (max_i |log w_i / p0_i| with the bound as a red alarm
                         line) and each run's epoch-cap use (alarm line at 1)
=======================  ==================================================================

Each function returns ``None`` when the runs logged nothing it could draw. Figures are drawn
on a :class:`matplotlib.figure.Figure` with an Agg canvas, never through ``pyplot``: no
display is needed and a notebook's backend is left alone. matplotlib is imported lazily.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mixlab.errors import ConfigError
from mixlab.report.records import RunRecord
from mixlab.report.summary import Summary, metric_key

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure as MplFigure

DPI = 100
ACODM_KEYS = (
    ("mix/acodm/critic_loss", "critic loss"),
    ("mix/acodm/actor_loss", "actor loss"),
    ("mix/acodm/mean_q", "mean Q"),
)


@dataclass(frozen=True)
class Figure:
    """A rendered figure: file stem, title, one-line caption and the PNG bytes."""

    name: str
    title: str
    caption: str
    png: bytes


def build_figures(records: Sequence[RunRecord], summary: Summary) -> list[Figure]:
    """Every figure the runs have data for, in report order."""
    runs = [r for r in records if r.ok]
    candidates = [
        (
            "validation_curves",
            "Validation curves",
            f"{summary.metric}, natural_ppl and worst_ppl vs step (log scale): mean over seeds, "
            "band = min..max over seeds. Lower is better.",
            validation_curves(runs, summary.metric, order=_order(summary)),
        ),
        (
            "per_domain_ppl",
            "Per-domain validation perplexity",
            "Final perplexity per domain (mean over seeds) in each cell; colour = relative to the "
            f"baseline {summary.baseline} (blue = lower, red = higher).",
            per_domain_ppl(summary),
        ),
        (
            "weight_trajectories",
            "Mixture weights over training",
            "Requested domain weights (mix/weight) per step, stacked; first seed of each method.",
            weight_trajectories(runs, order=_order(summary)),
        ),
        (
            "shares_and_repetition",
            "Achieved vs requested shares, repetition",
            "Left: achieved token shares at the end (bars) against the requested shares "
            "(black ticks). Right: epochs over each domain's training data (repetition).",
            shares_and_repetition(runs, order=_order(summary)),
        ),
        (
            "acodm_diagnostics",
            "AC-ODM diagnostics",
            "Critic loss, actor loss and mean Q of the AC-ODM agent per run; the reward, "
            "weights and held-out loss per domain of the first run; the largest log-ratio to "
            "the prior (red dashed: the bound, the alarm line) and KL(w||p0) per run; each "
            "run's largest use of an epoch cap (red dashed at 1: the cap).",
            acodm_diagnostics(runs),
        ),
    ]
    return [Figure(n, t, c, png) for n, t, c, png in candidates if png is not None]


# ---------------------------------------------------------------------------- figures
def validation_curves(
    records: Sequence[RunRecord], metric: str = "mean_ppl", *, order: Sequence[str] = ()
) -> bytes | None:
    """Metric, natural_ppl and worst_ppl vs step, mean over seeds, one line per method."""
    keys = list(dict.fromkeys([metric_key(metric), "eval/natural_ppl", "eval/worst_ppl"]))
    groups = _groups(records, order)
    if not any(r.eval_steps for runs in groups.values() for r in runs):
        return None
    fig, axes = _figure(1, len(keys), width=4.6, height=3.4)
    for ax, key in zip(axes, keys, strict=True):
        for i, (method, runs) in enumerate(groups.items()):
            steps, mean, low, high = _seed_band(runs, key)
            if not steps:
                continue
            (line,) = ax.plot(steps, mean, marker="o", ms=3, label=method, color=_color(i))
            if len(runs) > 1:
                ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.15, lw=0)
        ax.set_title(key.removeprefix("eval/"))
        ax.set_xlabel("step")
        ax.set_yscale("log")  # early evals are orders of magnitude above the final ones
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8)
    return _png(fig)


def per_domain_ppl(summary: Summary) -> bytes | None:
    """Heatmap: rows = methods, columns = domains; colour = final ppl relative to the baseline.

    Absolute perplexities differ by orders of magnitude between domains, so bars would show
    only the hardest domain; the colour is (ppl / baseline ppl − 1), blue = better, red =
    worse, and each cell is annotated with the perplexity itself.
    """
    domains, methods = summary.domains, summary.methods
    if not domains or not methods:
        return None
    base = summary.method(summary.baseline)
    values = [[_nan(m.per_domain[d].mean) if d in m.per_domain else math.nan for d in domains]
              for m in methods]  # fmt: skip
    ref = [_nan(base.per_domain[d].mean) if d in base.per_domain else math.nan for d in domains]
    rel = [[v / r - 1.0 if r > 0 else math.nan for v, r in zip(row, ref, strict=True)]
           for row in values]  # fmt: skip
    finite = [abs(x) for row in rel for x in row if math.isfinite(x)]
    limit = max(max(finite, default=0.0), 1e-3)
    width = min(20.0, 2.5 + 0.9 * len(domains))
    fig, axes = _figure(1, 1, width=width, height=1.4 + 0.45 * len(methods))
    ax = axes[0]
    image = ax.imshow(rel, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(range(len(domains)), domains, rotation=30 if len(domains) > 6 else 0,
                  ha="right" if len(domains) > 6 else "center")  # fmt: skip
    ax.set_yticks(range(len(methods)), [m.method for m in methods])
    if len(domains) * len(methods) <= 200:
        size = 8 if len(domains) <= 12 else 6
        for i, row in enumerate(values):
            for j, v in enumerate(row):
                dark = math.isfinite(rel[i][j]) and abs(rel[i][j]) > 0.6 * limit
                color = "white" if dark else "black"
                ax.text(j, i, _short(v), ha="center", va="center", fontsize=size, color=color)
    fig.colorbar(image, ax=ax, label=f"ppl / {summary.baseline} ppl − 1")
    return _png(fig)


def weight_trajectories(records: Sequence[RunRecord], *, order: Sequence[str] = ()) -> bytes | None:
    """Stacked area of ``mix/weight/<d>`` over steps, one panel per method (first seed)."""
    panels = []
    for method, runs in _groups(records, order).items():
        run = min(runs, key=lambda r: r.seed)
        domains = _logged_domains(run, "mix/weight/")
        if domains:
            panels.append((method, run, domains))
    if not panels:
        return None
    all_domains = list(dict.fromkeys(d for _, _, ds in panels for d in ds))
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = _figure(rows, cols, width=4.0, height=2.8)
    for ax, (method, run, domains) in zip(axes, panels, strict=False):
        keys = [f"mix/weight/{d}" for d in domains]
        logged = [r for r in run.train_log if all(k in r for k in keys)]
        steps = [int(r["step"]) for r in logged]
        series = [[_nan(r[k]) for r in logged] for k in keys]
        colors = [_color(all_domains.index(d)) for d in domains]
        ax.stackplot(steps, series, labels=domains, colors=colors, alpha=0.85)
        ax.set_title(f"{method} (seed {run.seed})", fontsize=10)
        ax.set_ylim(0, 1)
        ax.set_xlabel("step")
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    axes[0].set_ylabel("weight")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", fontsize=8)
    return _png(fig)


def shares_and_repetition(
    records: Sequence[RunRecord], *, order: Sequence[str] = ()
) -> bytes | None:
    """Achieved vs requested token shares at the end, and epochs per domain, per method."""
    rows = []  # (method, domains, achieved, requested, epochs) of each method's first seed
    for method, runs in _groups(records, order).items():
        run = min(runs, key=lambda r: r.seed)
        domains = _logged_domains(run, "mix/achieved/")
        if not domains:
            continue
        last = next(r for r in reversed(run.train_log) if f"mix/achieved/{domains[0]}" in r)
        rows.append(
            (
                method,
                domains,
                [_nan(last.get(f"mix/achieved/{d}")) for d in domains],
                [_nan(last.get(f"mix/requested/{d}")) for d in domains],
                [_nan(last.get(f"domain/{d}/epochs")) for d in domains],
            )
        )
    if not rows:
        return None
    domains = list(dict.fromkeys(d for row in rows for d in row[1]))
    fig, axes = _figure(
        1, 2, width=min(10.0, max(4.5, 0.45 * len(domains) * len(rows))), height=3.6
    )
    width = 0.8 / len(rows)
    for i, (method, ds, achieved, requested, epochs) in enumerate(rows):
        xs = [domains.index(d) + (i - (len(rows) - 1) / 2) * width for d in ds]
        axes[0].bar(xs, achieved, width=width, color=_color(i), label=method)
        axes[0].scatter(xs, requested, marker="_", s=200, color="black", zorder=3)
        axes[1].bar(xs, epochs, width=width, color=_color(i), label=method)
    for ax, label in ((axes[0], "token share at the end"), (axes[1], "epochs (repetition)")):
        ax.set_xticks(range(len(domains)), domains)
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    return _png(fig)


def acodm_diagnostics(records: Sequence[RunRecord]) -> bytes | None:
    """Agent losses and Q; the first run's reward and weights per domain; bound, KL, caps."""
    runs = [
        r for r in records if any(k.startswith("mix/acodm/") for row in r.train_log for k in row)
    ]
    if not runs:  # (a frozen run logs no agent losses, but its bound and weights)
        return None
    fig, axes = _figure(2, 4, width=3.6, height=3.0)
    bound_lines: set[float] = set()
    for i, run in enumerate(runs):
        label = f"{run.method} s{run.seed}"
        for ax, (key, _) in zip(axes, ACODM_KEYS, strict=False):
            steps, values = run.train_series(key)
            ax.plot(steps, values, label=label, color=_color(i), lw=1.2)
        for ax, key in ((axes[6], "mix/acodm/max_log_ratio"), (axes[7], "mix/acodm/max_cap_use")):
            steps, values = run.train_series(key)
            ax.plot(steps, values, label=label, color=_color(i), lw=1.2)
        steps, values = run.train_series("mix/acodm/kl")
        axes[6].plot(steps, values, color=_color(i), lw=0.8, ls=":")
        _, bounds = run.train_series("mix/acodm/bound")
        bound_lines.update(b for b in bounds if math.isfinite(b))
    # The paper's reward is z-scored across domains (mean ~0 at every step), so its mean says
    # nothing: show each domain's reward for the first run instead, and its weights.
    first = runs[0]
    for j, d in enumerate(_logged_domains(first, "mix/acodm/reward/")):
        steps, values = first.train_series(f"mix/acodm/reward/{d}")
        axes[3].plot(steps, values, label=d, color=_color(j), lw=1.0)
    for j, d in enumerate(_logged_domains(first, "mix/weight/")):
        steps, values = first.train_series(f"mix/weight/{d}")
        axes[4].plot(steps, values, label=d, color=_color(j), lw=1.0)
    for j, d in enumerate(_logged_domains(first, "mix/acodm/heldout_loss/")):
        steps, values = first.train_series(f"mix/acodm/heldout_loss/{d}")
        axes[5].plot(steps, values, label=d, color=_color(j), lw=1.0)
    for b in sorted(bound_lines):
        axes[6].axhline(b, color="red", ls="--", lw=1.0, label=f"bound {b:g}")
    if any(ax.lines for ax in axes[7:8]):
        axes[7].axhline(1.0, color="red", ls="--", lw=1.0, label="epoch cap")
    tag = f"{first.method} s{first.seed}"
    titles = [t for _, t in ACODM_KEYS] + [
        f"reward per domain ({tag})",
        f"weights ({tag})",
        f"held-out loss ({tag})",
        "max |log w/p0| (solid), KL(w||p0) (dotted)",
        "epoch-cap use (served / cap)",
    ]
    for ax, title in zip(axes, titles, strict=True):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    for ax in axes[3:5]:
        if ax.lines:
            ax.legend(fontsize=6)
    for ax in axes[5:]:
        if not ax.lines:
            ax.set_visible(False)
    if axes[6].lines:
        axes[6].legend(fontsize=6)
    return _png(fig)


# ---------------------------------------------------------------------------- helpers
def _figure(rows: int, cols: int, *, width: float, height: float) -> tuple[MplFigure, list[Axes]]:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure as MplFigure
    except ImportError as exc:  # pragma: no cover - matplotlib is a dependency
        raise ConfigError("the report's plots need matplotlib: pip install matplotlib") from exc
    fig = MplFigure(figsize=(width * cols, height * rows), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.subplots(rows, cols, squeeze=False)
    return fig, [ax for row in grid for ax in row]


def _png(fig: MplFigure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _color(i: int) -> Any:
    from matplotlib import colormaps

    return colormaps["tab20"](i % 20) if i >= 10 else colormaps["tab10"](i)


def _short(value: float) -> str:
    if not math.isfinite(value):
        return "-"
    return f"{value:.3g}" if value < 1000 else f"{value:.0f}"


def _order(summary: Summary) -> list[str]:
    return [m.method for m in summary.methods]


def _groups(records: Sequence[RunRecord], order: Sequence[str]) -> dict[str, list[RunRecord]]:
    groups: dict[str, list[RunRecord]] = {m: [] for m in order}
    for r in records:
        groups.setdefault(r.method, []).append(r)
    return {m: rs for m, rs in groups.items() if rs}


def _seed_band(
    runs: Sequence[RunRecord], key: str
) -> tuple[list[int], list[float], list[float], list[float]]:
    """Steps every seed evaluated at, with the mean, min and max over seeds."""
    curves = [dict(zip(*r.curve(key), strict=True)) for r in runs]
    common = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
    steps = [s for s in common if all(math.isfinite(c[s]) for c in curves)]
    mean = [sum(c[s] for c in curves) / len(curves) for s in steps]
    return (
        steps,
        mean,
        [min(c[s] for c in curves) for s in steps],
        [max(c[s] for c in curves) for s in steps],
    )


def _logged_domains(run: RunRecord, prefix: str) -> list[str]:
    for row in run.train_log:
        names = [k[len(prefix) :] for k in row if k.startswith(prefix)]
        if names:
            return names
    return []


def _nan(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and value is not None else math.nan
