"""``mixlab search``: propose mixtures, train a repetition-matched proxy swarm, fit, recommend.

The driver around the numerical core of :mod:`mixlab.search` (METHODS.md §7, issue 15)::

    spec (search_spec.yaml)  --plan_search (mixlab.search.plan)-->  SearchPlan: budgets B, b,
        epoch caps u_d = E_d N_d / B, prior, proposals R (n, K), subsample f = b / B
    R  --the suite runner (mixlab.comparison.runner), one `mixlab train` per mixture and
        proxy seed: mixing.name=fixed, data.subsample=f, eval at the end-->  OUT/swarm/
    eval.json of every run  -->  per-domain validation losses Y (n, D), mean over proxy seeds
    (R, Y)  --search_mixture: cross-validate, verdict, optimise under u, bootstrap-->
    OUT/search_weights.json  (``{"weights": ..., "recommended": ...}``; mixing.weights_file)
    OUT/swarm.json           (every run: mixture, epochs at B, losses, held-out predictions)

**Repetition matching.** Each proxy trains ``b = steps x batch x grad_accum x seq_len`` tokens;
the target ``B``. Proxies train on ``data.subsample = f = b / B`` of every domain's documents
(:mod:`mixlab.data.subsample`), so a proxy with mixture ``w`` repeats domain ``d``
``w_d b / (f N_d) = w_d B / N_d`` times, as the target will (up to whole documents: the plan
prints both). Off with ``swarm.repetition_matching: false`` (then ``f = 1``; an ablation).

**Resumable.** The swarm is a suite run by :func:`~mixlab.comparison.runner.run_suite`: one
process per run, ``jobs`` side by side (or Ray tasks on a cluster: ``executor``), finished runs
skipped, interrupted ones resumed, costs in ``OUT/swarm/suite.json``. ``OUT/search_plan.json``
keeps the spec: a folder made with another swarm (base, target or swarm settings) is refused
(``fresh=True`` redoes it); a changed ``fit`` or ``eval.domains`` only refits. ``dry_run=True``
plans and writes nothing.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mixlab.comparison.executor import Executor
from mixlab.comparison.runner import MANIFEST_NAME, run_suite
from mixlab.errors import ConfigError, DataError
from mixlab.files import write_json
from mixlab.search.plan import SearchPlan, finite, plan_objective, plan_search
from mixlab.search.recommend import SearchResult, search_mixture
from mixlab.search.spec import SearchSpec, load_search_spec, parse_search_spec
from mixlab.train.run_folder import RunFolder, differences

log = logging.getLogger(__name__)

PLAN_NAME = "search_plan.json"
WEIGHTS_NAME = "search_weights.json"
SWARM_NAME = "swarm.json"
SWARM_DIR = "swarm"
__all__ = [
    "PLAN_NAME",
    "SWARM_DIR",
    "SWARM_NAME",
    "WEIGHTS_NAME",
    "SearchOutcome",
    "fit_swarm",
    "load_spec",
    "run_search",
]


@dataclass
class SearchOutcome:
    """What :func:`run_search` produced (``result`` is None after a dry run)."""

    out: Path
    plan: SearchPlan
    result: SearchResult | None = None
    record: dict[str, Any] | None = None  # search_weights.json
    swarm: dict[str, Any] | None = None  # swarm.json
    swarm_seconds: float = 0.0

    @property
    def recommended(self) -> bool:
        return bool(self.record and self.record.get("recommended"))

    @property
    def weights(self) -> dict[str, float] | None:
        return None if self.record is None else dict(self.record["weights"])


# ---------------------------------------------------------------------------- running
def load_spec(
    spec: SearchSpec | str | Path | dict[str, Any], overrides: Sequence[str] = ()
) -> SearchSpec:
    """A :class:`SearchSpec` from a file, a mapping or a spec, with ``a.b=c`` overrides."""
    if isinstance(spec, (str, Path)):
        return load_search_spec(spec, overrides)
    if isinstance(spec, SearchSpec):
        return parse_search_spec(spec.to_dict(), source=spec.source, overrides=overrides)
    return parse_search_spec(spec, overrides=overrides)


def run_search(
    spec: SearchSpec | str | Path | dict[str, Any],
    out: str | Path,
    *,
    jobs: int | None = None,
    fresh: bool = False,
    dry_run: bool = False,
    overrides: Sequence[str] = (),
    echo: Callable[[str], None] = print,
    executor: Executor | None = None,
) -> SearchOutcome:
    """Plan, train (or resume) the swarm into ``out``, fit and write the recommendation.

    ``executor`` runs the swarm's processes (default: on this machine, ``jobs`` at a time;
    :func:`~mixlab.comparison.executor.make_executor` ``("ray", ...)`` for a Ray cluster).

    Returns a :class:`SearchOutcome`; ``outcome.recommended`` is the verdict (the weights are
    written either way, with ``"recommended": false`` when the fit is not trusted).

    >>> outcome = run_search("configs/search/demo.yaml", "runs/search")  # doctest: +SKIP
    >>> outcome.weights  # doctest: +SKIP
    """
    from mixlab.search.summary import format_outcome, format_plan

    parsed = load_spec(spec, overrides)
    plan = plan_search(parsed)
    root = Path(out).resolve()
    echo(format_plan(plan, mixtures=dry_run))
    if dry_run:
        return SearchOutcome(root, plan)
    _check_folder(root, plan, fresh)
    root.mkdir(parents=True, exist_ok=True)
    write_json(root / PLAN_NAME, plan.to_dict())
    if fresh and (root / SWARM_DIR).exists():
        shutil.rmtree(root / SWARM_DIR)
    start = time.perf_counter()
    run_suite(plan.suite(), root / SWARM_DIR, jobs=jobs, echo=echo, executor=executor)
    log.info("swarm finished in %.1f s", time.perf_counter() - start)
    outcome = fit_swarm(plan, root)
    echo(format_outcome(outcome))
    return outcome


def _check_folder(root: Path, plan: SearchPlan, fresh: bool) -> None:
    path = root / PLAN_NAME
    if fresh or not path.is_file():
        return
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))["spec"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: unreadable ({exc}); delete it or pass --fresh") from exc
    ours = plan.spec.swarm_part()
    theirs = {
        "base": saved.get("base"),
        "target": saved.get("target"),
        "swarm": saved.get("swarm"),
        "eval": {"every": (saved.get("eval") or {}).get("every")},
    }
    changed = differences(theirs, json.loads(json.dumps(ours)))
    if changed:
        more = f" (and {len(changed) - 3} more)" if len(changed) > 3 else ""
        raise ConfigError(
            f"{root} holds a search whose swarm was made with other settings than "
            f"{plan.spec.source} asks for: {'; '.join(changed[:3])}{more}. Use a new --out, or "
            "pass --fresh to redo its swarm (changing only fit or eval.domains refits the "
            "finished swarm)"
        )


# ---------------------------------------------------------------------------- fitting
def fit_swarm(plan: SearchPlan, out: str | Path) -> SearchOutcome:
    """Read the finished swarm under ``out``, fit and write ``search_weights.json`` and
    ``swarm.json`` (see the module docstring)."""
    root = Path(out)
    losses, per_seed, seconds = _collect(plan, root / SWARM_DIR)
    spec, fit = plan.spec, plan.spec.fit
    objective = plan_objective(plan)
    result = search_mixture(
        plan.proposals.weights,
        losses,
        plan.prior,
        objective=objective,
        law=fit.law,
        caps=plan.caps,
        kl_weight=fit.kl_weight,
        trust_region=fit.trust_region,
        cv_folds=fit.cv_folds,
        n_bootstrap=fit.bootstrap,
        bootstrap_level=fit.bootstrap_level,
        min_spearman=fit.min_spearman,
        min_objective_r2=fit.min_objective_r2,
        eval_domains=plan.eval_domains,
        seed=spec.swarm.seed,
    )
    chosen = result.weights
    prior_predicted = result.fitted.predict(plan.prior[None, :])[0]
    record: dict[str, Any] = {
        **result.to_dict(plan.domains, plan.eval_domains),
        "name": spec.name,
        "objective_kind": fit.objective,
        "epochs": plan.named(plan.target_epochs(chosen)),
        "prior_epochs": plan.named(plan.target_epochs(plan.prior)),
        "max_epochs": {d: finite(e) for d, e in zip(plan.domains, plan.max_epochs, strict=True)},
        "prior_predicted": plan.named(prior_predicted, plan.eval_domains),
        "prior_objective": float(objective(prior_predicted)),
        "budget": {
            "target_tokens": plan.target_tokens,
            "target": plan.target_desc,
            "proxy_tokens": plan.proxy_tokens,
            "proxy_runs": plan.n_processes,
            "proxy_total_tokens": plan.proxy_total_tokens,
            "proxy_to_target": plan.proxy_total_tokens / plan.target_tokens,
            "subsample": plan.subsample,
            "swarm_seconds": seconds,
        },
    }
    cv = result.cv
    runs = []
    for i, (name, label, w) in enumerate(
        zip(plan.names, plan.proposals.labels, plan.proposals.weights, strict=True)
    ):
        runs.append(
            {
                "name": name,
                "label": label,
                "dir": f"{SWARM_DIR}/{name}",
                "weights": plan.named(w),
                "epochs_target": plan.named(plan.target_epochs(w)),
                "epochs_proxy": plan.named(plan.proxy_epochs(w)),
                "losses": plan.named(losses[i], plan.eval_domains),
                "losses_per_seed": per_seed[i],
                "objective": float(cv.objective_actual[i]),
                "heldout_predicted": plan.named(cv.predicted[i], plan.eval_domains),
                "heldout_objective": float(cv.objective_predicted[i]),
            }
        )
    swarm = {
        "name": spec.name,
        "domains": list(plan.domains),
        "eval_domains": list(plan.eval_domains),
        "objective": fit.objective,
        "law": result.law,
        "fit": cv.summary(plan.eval_domains),
        "budget": record["budget"],
        "domain_tokens": plan.named(plan.domain_tokens),
        "subsample_tokens": plan.named(plan.subsample_tokens),
        "prior": plan.named(plan.prior),
        "runs": runs,
    }
    write_json(root / SWARM_NAME, swarm)
    write_json(root / WEIGHTS_NAME, record)
    return SearchOutcome(root, plan, result, record, swarm, seconds)


def _collect(plan: SearchPlan, swarm_dir: Path) -> tuple[np.ndarray, list[dict[str, Any]], float]:
    """(n, D) losses (mean over proxy seeds), per-seed losses per run, total swarm seconds."""
    manifest = json.loads((swarm_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
    seconds = sum(float(r.get("seconds") or 0.0) for r in manifest.get("runs", []))
    losses = np.empty((len(plan.names), len(plan.eval_domains)))
    per_seed: list[dict[str, Any]] = []
    for i, name in enumerate(plan.names):
        rows = {}
        for seed in plan.seeds:
            path = RunFolder(swarm_dir / name / f"seed{seed}").eval
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
                rows[str(seed)] = [float(record[f"eval/{d}/loss"]) for d in plan.eval_domains]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise DataError(
                    f"{path}: no final evaluation ({exc}); re-run the same command to finish "
                    "the swarm"
                ) from exc
        losses[i] = np.mean(list(rows.values()), axis=0)
        per_seed.append({s: plan.named(np.array(v), plan.eval_domains) for s, v in rows.items()})
    return losses, per_seed, seconds
