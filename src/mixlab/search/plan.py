"""Plan a mixture search: budgets, epoch caps, prior, proposals and the proxies' subsample.

:func:`plan_search` turns a checked :class:`~mixlab.search.spec.SearchSpec` into a
:class:`SearchPlan`, before anything trains (``mixlab search --dry-run`` prints it):

* **budgets**: the proxy's ``b = steps x batch x grad_accum x seq_len`` tokens (``base``), the
  target's ``B`` (``target``: steps x tokens per step, a token count, or a run config);
* **epoch caps** at the target budget: ``swarm.max_epochs`` ``E_d`` bounds every weight by
  ``u_d = E_d N_d / B`` (:func:`mixlab.mixing.budget.weight_caps`; ``N_d`` the store's training
  tokens);
* **prior**: natural shares, uniform, UniMax (:func:`~mixlab.mixing.budget.unimax_weights`) or
  given weights, made feasible under the caps (:func:`~mixlab.mixing.budget.cap_weights`);
* **proposals** (:func:`mixlab.search.propose.propose_mixtures`): the prior, one corner per
  domain and ``swarm.runs`` (default ``3 K``) Dirichlet mixtures around the prior;
* **repetition matching**: the proxies train on ``data.subsample = f = min(1, b / B)``
  (:mod:`mixlab.data.subsample`), so a proxy with mixture ``w`` makes ``w_d b / n_d`` epochs
  over the ``n_d ~ f N_d`` tokens it sees, the ``w_d B / N_d`` the target will make.
  :meth:`SearchPlan.proxy_epochs` and :meth:`SearchPlan.target_epochs` give both (they differ
  by whole documents only). A subsample too small for one ``seq_len + 1`` window is an error.

:meth:`SearchPlan.suite` is the swarm as a :class:`~mixlab.comparison.suite.Suite` (one method
per mixture, the proxy seeds as seeds) for the suite runner.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mixlab.comparison.suite import RunSpec, Suite, run_tokens
from mixlab.config import RunConfig
from mixlab.errors import ConfigError, MixlabError
from mixlab.mixing.base import weights_from_mapping
from mixlab.mixing.budget import (
    cap_weights,
    epochs,
    natural_weights,
    unimax_weights,
    weight_caps,
)
from mixlab.search.objective import Objective, make_objective
from mixlab.search.propose import Proposals, default_swarm_size, propose_mixtures
from mixlab.search.spec import SearchSpec, merge_mappings

log = logging.getLogger(__name__)

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
        """The swarm as a suite: one method per proposal, the proxy seeds as seeds.

        Each run's ``mixing`` section is replaced by ``{name: fixed, weights: ...}`` (keeping
        the base's ``sampling`` mode), so settings of another policy in the base cannot leak
        into the proxies.
        """
        base_mixing = self.spec.base.get("mixing") or {}
        kept = {k: base_mixing[k] for k in ("sampling",) if k in base_mixing}
        runs = [
            RunSpec(
                name,
                (
                    ("mixing", {**kept, "name": "fixed", "weights": self.named(w)}),
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
                d: finite(e) for d, e in zip(self.domains, self.max_epochs, strict=True)
            },
            "prior": self.named(self.prior),
            "mixtures": [
                {"name": n, "label": label, "weights": self.named(w)}
                for n, label, w in zip(
                    self.names, self.proposals.labels, self.proposals.weights, strict=True
                )
            ],
        }


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
    plan_objective(plan)  # fit.objective_weights must name evaluation domains: fail before training
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
    raw = copy.deepcopy(spec.base)
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
            p = natural_weights(n_tokens)
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


def finite(value: float) -> float | None:
    """``value``, or None for an infinite one (JSON has no inf)."""
    return float(value) if np.isfinite(value) else None


def plan_objective(plan: SearchPlan) -> Objective:
    """The objective ``fit.objective`` over the plan's evaluation domains."""
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
