"""What ``mixlab search`` prints, and the tables its report section shows.

Table builders work on the plain data of ``search_weights.json`` and ``swarm.json`` (so the
report can rebuild them from a folder) and return ``(header, rows)`` of strings:

* :func:`weights_rows`  per domain: prior vs chosen weight, epochs at the target budget (prior
  and chosen) against the cap, predicted loss with its bootstrap interval;
* :func:`fit_rows`      held-out fit diagnostics: R^2 per domain and of the objective,
  Spearman rho, the verdict;
* :func:`compute_rows`  proxy compute against the target's.

:func:`format_plan` and :func:`format_outcome` are the terminal text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from mixlab.report.summary import fmt_tokens, text_table

if TYPE_CHECKING:
    from mixlab.search.plan import SearchPlan
    from mixlab.search.run import SearchOutcome

Rows = tuple[list[str], list[list[str]]]


def _num(value: Any, digits: int = 3) -> str:
    if value is None or not isinstance(value, (int, float)) or not np.isfinite(value):
        return "-"
    return f"{value:.{digits}f}"


def _epochs(value: Any) -> str:
    if value is None or not np.isfinite(value):
        return "-"
    return "0" if abs(value) < 1e-9 else f"{value:.3g}"


def _seconds(value: float) -> str:
    m, s = divmod(round(value), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


# ---------------------------------------------------------------------------- tables
def weights_rows(record: Mapping[str, Any]) -> Rows:
    """Per domain: prior, chosen, epochs at the target, cap, predicted loss [interval]."""
    uncertainty = record.get("uncertainty") or {}
    intervals = uncertainty.get("predicted") or {}
    level = uncertainty.get("level")
    pred_head = f"predicted loss [{100 * level:.0f}%]" if level else "predicted loss"
    header = ["domain", "prior", "chosen", "epochs prior", "epochs chosen", "max epochs"]
    header += [pred_head, "prior predicted"]
    predicted, prior_pred = record.get("predicted", {}), record.get("prior_predicted", {})
    rows = []
    for d, w in record["weights"].items():
        pred = predicted.get(d)
        cell = _num(pred)
        if d in intervals:
            cell += f" [{_num(intervals[d]['low'])}, {_num(intervals[d]['high'])}]"
        rows.append(
            [
                d,
                _num(record["prior"].get(d)),
                _num(w),
                _epochs(record.get("prior_epochs", {}).get(d)),
                _epochs(record.get("epochs", {}).get(d)),
                _epochs((record.get("max_epochs") or {}).get(d)),
                cell if pred is not None else "-",
                _num(prior_pred.get(d)),
            ]
        )
    return header, rows


def fit_rows(record: Mapping[str, Any]) -> Rows:
    """Held-out fit diagnostics (cross-validation over the swarm) and the verdict."""
    fit = record["fit"]
    header = ["diagnostic", "value"]
    rows = [
        ["law", str(fit["law"])],
        ["runs (mixtures)", str(fit["runs"])],
        ["folds", "leave-one-out" if fit["folds"] == fit["runs"] else str(fit["folds"])],
        ["objective", str(record.get("objective_kind", "mean"))],
        ["held-out Spearman rho (objective)", _num(fit["spearman"], 2)],
        ["held-out R^2 (objective)", _num(fit["objective_r2"], 2)],
    ]
    rows += [[f"held-out R^2 {d}", _num(v, 2)] for d, v in fit["r2"].items()]
    verdict = record.get("verdict") or {}
    rows.append(
        [
            "verdict",
            "recommended"
            if record.get("recommended")
            else "not recommended: " + "; ".join(verdict.get("reasons", [])),
        ]
    )
    return header, rows


def compute_rows(record: Mapping[str, Any]) -> Rows:
    """Proxy compute next to the target's (tokens; wall-clock of the swarm)."""
    b = record["budget"]
    header = ["", "tokens", "note"]
    rows = [
        ["target run", fmt_tokens(b["target_tokens"]), str(b["target"])],
        [
            "one proxy run",
            fmt_tokens(b["proxy_tokens"]),
            f"data.subsample = {b['subsample']:.4g} (repetition matching)",
        ],
        [
            f"swarm ({b['proxy_runs']} runs)",
            fmt_tokens(b["proxy_total_tokens"]),
            f"{b['proxy_to_target']:.3g}x the target's tokens; "
            f"{_seconds(float(b.get('swarm_seconds') or 0.0))} wall-clock",
        ],
    ]
    return header, rows


# ---------------------------------------------------------------------------- terminal text
def format_plan(plan: SearchPlan, *, mixtures: bool = False) -> str:
    """The plan: budgets, repetition matching, caps, prior; ``mixtures`` adds every mixture."""
    spec, proxy = plan.spec, plan.proxy
    t = proxy.train
    per_step = plan.proxy_tokens // t.max_steps
    seeds = plan.seeds
    model = proxy.model.preset or proxy.model.config_path or proxy.model.pretrained_path
    lines = [
        f"search {spec.name!r}: {len(plan.domains)} domains, {len(plan.names)} mixtures x "
        f"{len(seeds)} proxy seed(s) = {plan.n_processes} proxy runs",
        f"  proxy:  {model}, {t.max_steps} steps x {per_step:,} tokens = "
        f"{plan.proxy_tokens:,} tokens per run ({fmt_tokens(plan.proxy_total_tokens)} in all)",
        f"  target: {plan.target_tokens:,} tokens ({plan.target_desc}); the swarm costs "
        f"{plan.proxy_total_tokens / plan.target_tokens:.3g}x the target's tokens",
    ]
    if plan.subsample < 1:
        lines.append(
            f"  repetition matching: proxies train on data.subsample = {plan.proxy_tokens:,} / "
            f"{plan.target_tokens:,} = {plan.subsample:.4g}\n    of every domain's documents, "
            "so they repeat each domain as often as the target (epochs@proxy vs @target below)"
        )
    elif spec.swarm.repetition_matching:
        lines.append("  repetition matching: not needed (the proxy budget is >= the target's)")
    else:
        lines.append("  repetition matching: off (proxies see every document)")
    prior = spec.swarm.prior if isinstance(spec.swarm.prior, str) else "given"
    lines.append(
        f"  prior: {prior}; Dirichlet concentration {spec.swarm.concentration:g}, "
        f"seed {spec.swarm.seed}; fit: {spec.fit.law}, objective {spec.fit.objective}"
    )
    header = ["domain", "tokens", "subsample", "max epochs", "prior", "epochs@target", "@proxy"]
    target_e, proxy_e = plan.target_epochs(plan.prior), plan.proxy_epochs(plan.prior)
    rows = [
        [
            d,
            fmt_tokens(plan.domain_tokens[i]),
            fmt_tokens(plan.subsample_tokens[i]),
            _epochs(plan.max_epochs[i]),
            _num(plan.prior[i]),
            _epochs(target_e[i]),
            _epochs(proxy_e[i]),
        ]
        for i, d in enumerate(plan.domains)
    ]
    lines += ["", text_table(header, rows)]
    if mixtures:
        header = ["run", *plan.domains, "max epochs@target"]
        rows = [
            [name, *(_num(x) for x in w), _epochs(float(plan.target_epochs(w).max()))]
            for name, w in zip(plan.names, plan.proposals.weights, strict=True)
        ]
        lines += ["", text_table(header, rows)]
    return "\n".join(lines)


def format_outcome(outcome: SearchOutcome, *, top: int = 3) -> str:
    """Fit diagnostics, the verdict, chosen vs prior, runner-ups, compute, what was written."""
    record, swarm = outcome.record, outcome.swarm
    if record is None or swarm is None:
        return "dry run: nothing trained or written"
    fit = record["fit"]
    folds = "leave-one-out" if fit["folds"] == fit["runs"] else f"{fit['folds']}-fold"
    lines = [
        "",
        f"fit: {fit['law']} law, {folds} over {fit['runs']} mixtures (held-out): objective "
        f"R^2 {_num(fit['objective_r2'], 2)}, Spearman rho {_num(fit['spearman'], 2)}",
        "  per-domain R^2: " + ", ".join(f"{d} {_num(v, 2)}" for d, v in fit["r2"].items()),
    ]
    verdict = record["verdict"]
    if record["recommended"]:
        lines.append("verdict: recommended (the law ranks held-out mixtures well enough)")
    else:
        lines.append("verdict: NOT recommended")
        lines += [f"  why: {r}" for r in verdict["reasons"]]
        lines += [f"  to do: {a}" for a in verdict["advice"]]
    lines += [f"  warning: {w}" for w in verdict["warnings"]]
    lines += ["", text_table(*weights_rows(record))]
    kind = record.get("objective_kind", "mean")
    interval = (record.get("uncertainty") or {}).get("objective_interval")
    ci = f" [{_num(interval[0])}, {_num(interval[1])}]" if interval else ""
    best = min(swarm["runs"], key=lambda r: r["objective"])
    prior_obj = record.get("prior_objective")
    lines.append(
        f"objective ({kind}): chosen {_num(record['objective'])}{ci} predicted; prior "
        f"{_num(prior_obj)} predicted; best swarm run {best['name']} {_num(best['objective'])} "
        "measured"
    )
    region = record.get("trust_region") or {}
    if region.get("max_kl") is not None:
        lines.append(
            f"trust region: KL(chosen || prior) = {region['kl']:.3f} <= {region['max_kl']:.3f} "
            "nats (fit.trust_region; the law is evidence only where the swarm sampled)"
        )
    if record["runner_ups"]:
        lines.append("runner-ups:")
        for i, c in enumerate(record["runner_ups"][:top], 1):
            w = ", ".join(f"{d} {v:.3f}" for d, v in c["weights"].items())
            lines.append(f"  {i}. objective {_num(c['objective'])}: {w}")
    lines += ["", text_table(*compute_rows(record))]
    from mixlab.search.run import SWARM_NAME, WEIGHTS_NAME

    weights_path = outcome.out / WEIGHTS_NAME
    lines += [
        "",
        f"wrote {weights_path} and {outcome.out / SWARM_NAME}",
        f"train the target with: --set mixing.name=fixed mixing.weights_file={weights_path}",
    ]
    return "\n".join(lines)
