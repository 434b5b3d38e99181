"""``mixlab search``: propose mixtures, train a repetition-matched proxy swarm, fit, recommend.

The driver around the numerical core of :mod:`mixlab.search` (METHODS.md §7, issue 15)::

    spec (search_spec.yaml)  --plan_search-->  SearchPlan: target budget B, proxy budget b,
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
process per run, ``jobs`` side by side, finished runs skipped, interrupted ones resumed, costs in
``OUT/swarm/suite.json``. ``OUT/search_plan.json`` keeps the spec: a folder made with another
swarm (base, target or swarm settings) is refused (``fresh=True`` redoes it); a changed ``fit``
or ``eval.domains`` only refits. ``dry_run=True`` plans and writes nothing.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mixlab.comparison.runner import MANIFEST_NAME, run_suite
from mixlab.comparison.suite import RunSpec, Suite, run_tokens
from mixlab.config import RunConfig
from mixlab.errors import ConfigError, DataError, MixlabError
from mixlab.files import write_json
from mixlab.mixing.base import weights_from_mapping
from mixlab.mixing.budget import cap_weights, epochs, unimax_weights, weight_caps
from mixlab.search.objective import Objective, make_objective
from mixlab.search.propose import Proposals, default_swarm_size, propose_mixtures
from mixlab.search.recommend import SearchResult, search_mixture
from mixlab.search.spec import SearchSpec, load_search_spec, parse_search_spec

log = logging.getLogger(__name__)

PLAN_NAME = "search_plan.json"
WEIGHTS_NAME = "search_weights.json"
SWARM_NAME = "swarm.json"
SWARM_DIR = "swarm"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class SearchPlan:
    """Everything decided before training: budgets, caps, prior, proposals, proxy configs."""

    spec: SearchSpec
    domains: tuple[str, ...]
    domain_tokens: np.ndarray  # (K,) N_d, the store's training tokens
    eval_domains: tuple[str, ...]
    proxy: RunConfig
    proxy_tokens: int  # b
    target_tokens: int  # B
    target_desc: str
    subsample: float  # f
    subsample_tokens: np.ndarray  # (K,) n_d, tokens of the proxies' document subsample
    max_epochs: np.ndarray  # (K,) E_d, inf = no cap
    caps: np.ndarray | None  # (K,) u_d = E_d N_d / B, None without caps
    prior: np.ndarray  # (K,), feasible under the caps
    proposals: Proposals
    names: tuple[str, ...]  # one run name per proposal (folder names)

    @property
    def seeds(self) -> list[int]:
        return list(self.spec.swarm.proxy_seeds)

    @property
    def n_processes(self) -> int:
        return len(self.names) * len(self.seeds)

    @property
    def proxy_total_tokens(self) -> int:
        return self.proxy_tokens * self.n_processes

    def target_epochs(self, weights: np.ndarray) -> np.ndarray:
        """(K,) epochs the target run makes over each domain with ``weights``."""
        return epochs(weights, self.target_tokens, self.domain_tokens)

    def proxy_epochs(self, weights: np.ndarray) -> np.ndarray:
        """(K,) epochs a proxy makes over each domain's subsample with ``weights``."""
        return epochs(weights, self.proxy_tokens, self.subsample_tokens)

    def named(self, values: np.ndarray, names: Sequence[str] | None = None) -> dict[str, float]:
        return {d: float(v) for d, v in zip(names or self.domains, values, strict=True)}

    def suite(self) -> Suite:
        """The swarm as a suite: one method per proposal, the proxy seeds as seeds."""
        runs = [
            RunSpec(
                name,
                (
                    ("mixing.name", "fixed"),
                    ("mixing.weights", self.named(w)),
                    ("mixing.weights_file", None),
                    ("data.subsample", self.subsample),
                    ("train.eval_every", self.spec.eval.every),
                ),
            )
            for name, w in zip(self.names, self.proposals.weights, strict=True)
        ]
        return Suite(
            name=f"{self.spec.name}-swarm",
            base=self.spec.base,
            runs=runs,
            seeds=self.seeds,
            baseline=self.names[0],
            source=self.spec.source,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec.to_dict(),
            "domains": list(self.domains),
            "eval_domains": list(self.eval_domains),
            "store": self.proxy.data.store,
            "domain_tokens": self.named(self.domain_tokens),
            "target": {"tokens": self.target_tokens, "from": self.target_desc},
            "proxy": {
                "tokens": self.proxy_tokens,
                "subsample": self.subsample,
                "subsample_tokens": self.named(self.subsample_tokens),
                "runs": self.n_processes,
                "total_tokens": self.proxy_total_tokens,
            },
            "max_epochs": {
                d: _finite(e) for d, e in zip(self.domains, self.max_epochs, strict=True)
            },
            "prior": self.named(self.prior),
            "mixtures": [
                {"name": n, "label": label, "weights": self.named(w)}
                for n, label, w in zip(
                    self.names, self.proposals.labels, self.proposals.weights, strict=True
                )
            ],
        }


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


# ---------------------------------------------------------------------------- planning
def plan_search(spec: SearchSpec) -> SearchPlan:
    """Resolve budgets, caps, prior and proposals; ConfigError naming the field otherwise."""
    from mixlab.data.store import ShardStore

    src = spec.source
    proxy = _run_config(spec.base, f"{src}: base")
    if not proxy.data.store:
        raise ConfigError(f"{src}: base.data.store: the proxy runs need a prepared store")
    store = ShardStore(proxy.data.store)
    domains = store.domains
    n_tokens = store.train_tokens_per_domain().astype(np.float64)
    target_tokens, target_desc = _target_tokens(spec, proxy)
    proxy_tokens = run_tokens(proxy)
    subsample = 1.0
    if spec.swarm.repetition_matching:
        subsample = min(1.0, proxy_tokens / target_tokens)
        if proxy_tokens > target_tokens:
            log.warning(
                "%s: a proxy trains %d tokens, more than the target's %d: it repeats every "
                "domain %.3gx more than the target will (a subsample cannot fix that); shrink "
                "the proxy budget",
                src,
                proxy_tokens,
                target_tokens,
                proxy_tokens / target_tokens,
            )
    seed = proxy.data.subsample_seed
    kept = np.array([_kept_tokens(store, d, subsample, seed) for d in domains])
    short = [d for d, n in zip(domains, kept, strict=True) if n < proxy.data.seq_len + 1]
    if short:
        raise ConfigError(
            f"{src}: repetition matching gives the proxies data.subsample = {proxy_tokens} / "
            f"{target_tokens} = {subsample:.4g}, which leaves {', '.join(short)} fewer than "
            f"data.seq_len + 1 = {proxy.data.seq_len + 1} tokens; raise the proxy budget "
            "(base.train.max_steps) or lower the target"
        )
    max_epochs = _max_epochs(spec, domains, src)
    caps = (
        weight_caps(max_epochs, target_tokens, n_tokens) if np.isfinite(max_epochs).any() else None
    )
    prior = _prior(spec, domains, n_tokens, target_tokens, max_epochs, src)
    runs = spec.swarm.runs if spec.swarm.runs is not None else default_swarm_size(len(domains))
    proposals = propose_mixtures(
        prior,
        runs,
        concentration=spec.swarm.concentration,
        seed=spec.swarm.seed,
        caps=caps,
        include_corners=spec.swarm.corners,
        domains=domains,
    )
    if len(proposals) < 3:
        raise ConfigError(
            f"{src}: swarm.runs: the swarm has {len(proposals)} mixture(s); fitting and "
            "cross-validating a law needs at least 3 (raise swarm.runs)"
        )
    width = len(str(len(proposals) - 1))
    names = tuple(
        f"{i:0{width}d}-{_UNSAFE.sub('_', label.replace('/', '-'))}"
        for i, label in enumerate(proposals.labels)
    )
    plan = SearchPlan(
        spec=spec,
        domains=domains,
        domain_tokens=n_tokens,
        eval_domains=_eval_domains(spec, domains, src),
        proxy=proxy,
        proxy_tokens=proxy_tokens,
        target_tokens=target_tokens,
        target_desc=target_desc,
        subsample=subsample,
        subsample_tokens=kept,
        max_epochs=max_epochs,
        caps=caps,
        prior=prior,
        proposals=proposals,
        names=names,
    )
    _objective(plan)  # fit.objective_weights must name evaluation domains: fail before training
    return plan


def _kept_tokens(store: Any, domain: str, fraction: float, seed: int) -> float:
    """Training tokens of ``domain`` in the document subsample a proxy will see."""
    from mixlab.data.subsample import select_documents

    lengths = np.diff(np.asarray(store.doc_offsets(domain), dtype=np.int64))
    return float(lengths[select_documents(lengths, fraction, seed=seed, domain=domain)].sum())


def _run_config(raw: dict[str, Any], where: str) -> RunConfig:
    try:
        cfg = RunConfig.from_dict(raw)
        cfg.validate()
    except MixlabError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    return cfg


def _target_tokens(spec: SearchSpec, proxy: RunConfig) -> tuple[int, str]:
    t, src = spec.target, spec.source
    if "tokens" in t:
        return int(t["tokens"]), f"target.tokens = {int(t['tokens'])}"
    if "max_steps" in t:
        per_step = int(t.get("tokens_per_step") or run_tokens(proxy) // proxy.train.max_steps)
        return int(t["max_steps"]) * per_step, f"{t['max_steps']} steps x {per_step} tokens"
    from mixlab.search.spec import merge_mappings

    raw = json.loads(json.dumps(spec.base))
    merge_mappings(raw, t["config"])
    cfg = _run_config(raw, f"{src}: target.config")
    if Path(cfg.data.store).resolve() != Path(proxy.data.store).resolve():
        raise ConfigError(
            f"{src}: target.config: data.store {cfg.data.store} is not the proxies' store "
            f"{proxy.data.store}; epochs and caps are counted on one store"
        )
    tr = cfg.train
    return run_tokens(cfg), (
        f"target config: {tr.max_steps} steps x {tr.batch_size} x {tr.grad_accum} x "
        f"{cfg.data.seq_len} tokens"
    )


def _max_epochs(spec: SearchSpec, domains: tuple[str, ...], src: str) -> np.ndarray:
    cap = spec.swarm.max_epochs
    if cap is None:
        return np.full(len(domains), np.inf)
    if isinstance(cap, dict):
        _known(cap, domains, "swarm.max_epochs", src)
        return np.array([cap.get(d, np.inf) for d in domains], dtype=np.float64)
    return np.full(len(domains), float(cap))


def _prior(
    spec: SearchSpec,
    domains: tuple[str, ...],
    n_tokens: np.ndarray,
    budget: int,
    max_epochs: np.ndarray,
    src: str,
) -> np.ndarray:
    prior = spec.swarm.prior
    try:
        if isinstance(prior, dict):
            _known(prior, domains, "swarm.prior", src)
            p = weights_from_mapping(prior, domains, where=f"{src}: swarm.prior")
        elif prior == "natural":
            p = n_tokens / n_tokens.sum()
        elif prior == "uniform":
            p = np.full(len(domains), 1.0 / len(domains))
        else:
            p = unimax_weights(n_tokens, budget, max_epochs)
        return cap_weights(p, max_epochs, budget, n_tokens)
    except ConfigError as exc:
        raise ConfigError(f"{src}: swarm.prior / swarm.max_epochs: {exc}") from exc


def _eval_domains(spec: SearchSpec, domains: tuple[str, ...], src: str) -> tuple[str, ...]:
    if spec.eval.domains is None:
        return domains
    _known(dict.fromkeys(spec.eval.domains), domains, "eval.domains", src)
    return tuple(spec.eval.domains)


def _known(mapping: dict[str, Any], domains: tuple[str, ...], field: str, src: str) -> None:
    unknown = sorted(set(mapping) - set(domains))
    if unknown:
        raise ConfigError(
            f"{src}: {field}: {', '.join(unknown)} not in the store; its domains are "
            f"{', '.join(domains)}"
        )


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


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
    jobs: int = 1,
    fresh: bool = False,
    dry_run: bool = False,
    overrides: Sequence[str] = (),
    echo: Callable[[str], None] = print,
) -> SearchOutcome:
    """Plan, train (or resume) the swarm into ``out``, fit and write the recommendation.

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
    run_suite(plan.suite(), root / SWARM_DIR, jobs=jobs, echo=echo)
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
    changed = _differences(json.loads(json.dumps(ours)), theirs)
    if changed:
        more = f" (and {len(changed) - 3} more)" if len(changed) > 3 else ""
        raise ConfigError(
            f"{root} holds a search whose swarm was made with other settings than "
            f"{plan.spec.source} asks for: {'; '.join(changed[:3])}{more}. Use a new --out, or "
            "pass --fresh to redo its swarm (changing only fit or eval.domains refits the "
            "finished swarm)"
        )


def _differences(ours: Any, theirs: Any, path: str = "") -> list[str]:
    """``path: theirs -> ours`` for every leaf that differs."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        out = []
        for key in sorted(set(ours) | set(theirs), key=str):
            sub = f"{path}.{key}" if path else str(key)
            out += _differences(ours.get(key), theirs.get(key), sub)
        return out
    return [] if ours == theirs else [f"{path}: {theirs!r} -> {ours!r}"]


# ---------------------------------------------------------------------------- fitting
def fit_swarm(plan: SearchPlan, out: str | Path) -> SearchOutcome:
    """Read the finished swarm under ``out``, fit and write ``search_weights.json`` and
    ``swarm.json`` (see the module docstring)."""
    root = Path(out)
    losses, per_seed, seconds = _collect(plan, root / SWARM_DIR)
    spec, fit = plan.spec, plan.spec.fit
    objective = _objective(plan)
    result = search_mixture(
        plan.proposals.weights,
        losses,
        plan.prior,
        objective=objective,
        law=fit.law,
        caps=plan.caps,
        kl_weight=fit.kl_weight,
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
        "max_epochs": {d: _finite(e) for d, e in zip(plan.domains, plan.max_epochs, strict=True)},
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


def _objective(plan: SearchPlan) -> Objective:
    fit = plan.spec.fit
    d = len(plan.eval_domains)
    weights = None
    if fit.objective == "weighted":
        assert fit.objective_weights is not None  # checked when the spec was parsed
        _known(fit.objective_weights, plan.eval_domains, "fit.objective_weights", plan.spec.source)
        weights = [fit.objective_weights.get(e, 0.0) for e in plan.eval_domains]
    index = [plan.domains.index(e) for e in plan.eval_domains]
    try:
        return make_objective(
            fit.objective, d, weights=weights, domain_tokens=plan.domain_tokens[index]
        )
    except ConfigError as exc:
        raise ConfigError(f"{plan.spec.source}: fit.objective: {exc}") from exc


def _collect(plan: SearchPlan, swarm_dir: Path) -> tuple[np.ndarray, list[dict[str, Any]], float]:
    """(n, D) losses (mean over proxy seeds), per-seed losses per run, total swarm seconds."""
    manifest = json.loads((swarm_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
    seconds = sum(float(r.get("seconds") or 0.0) for r in manifest.get("runs", []))
    losses = np.empty((len(plan.names), len(plan.eval_domains)))
    per_seed: list[dict[str, Any]] = []
    for i, name in enumerate(plan.names):
        rows = {}
        for seed in plan.seeds:
            path = swarm_dir / name / f"seed{seed}" / "eval.json"
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
