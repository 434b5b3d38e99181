"""Mixture search from a swarm of small runs: propose -> (train) -> fit -> judge -> optimise.

The numerical core of ``mixlab search`` (issue 15; METHODS.md §7) is pure functions on numpy
arrays (propose, law, objective, validate, optimize, bootstrap, recommend): no config, training
loop, store or files there. The driver is apart: :mod:`~mixlab.search.spec` (the search spec),
:mod:`~mixlab.search.plan` (budgets, epoch caps, prior, proposals, repetition-matched subsample),
:mod:`~mixlab.search.run` (:func:`~mixlab.search.run.run_search`: train the proxy swarm through
the suite runner, fit, write ``search_weights.json``),
:mod:`~mixlab.search.summary` (what it prints) and :mod:`~mixlab.search.cli`.

```
prior p0, epoch caps u  --propose.propose_mixtures-->  swarm mixtures R (n, K)
R  --one small proxy run each (the caller's runner)-->  per-domain validation losses Y (n, D)
(R, Y)  --law.build_law(name).fit-->  L(r): mixture -> (D,) losses
        --validate.cross_validate / verdict-->  held-out R^2, Spearman rho, recommend or not
L  --optimize.optimize_mixture-->  argmin objective(L(w)) + lam KL(w || p0), w <= u
(R, Y)  --bootstrap.bootstrap-->  intervals on the predictions and the spread of the optimum
```

:func:`search_mixture` runs fit -> judge -> optimise -> bootstrap in one call. Papers: RegMix
(arXiv 2407.01492), Data Mixing Laws (arXiv 2403.16952), olmix (arXiv 2602.12237), UniMax
(arXiv 2304.09151, in :mod:`mixlab.mixing.budget` with the epoch caps).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mixlab.search.bootstrap import BootstrapResult, bootstrap
    from mixlab.search.law import (
        DifferentiableLaw,
        FittedLaw,
        FittedLinear,
        FittedLogLinear,
        GBMLaw,
        LinearLaw,
        LogLinearLaw,
        MixingLaw,
        available_laws,
        build_law,
        check_swarm,
    )
    from mixlab.search.objective import OBJECTIVES, Objective, make_objective
    from mixlab.search.optimize import Candidate, OptimizeResult, kl_divergence, optimize_mixture
    from mixlab.search.propose import Proposals, default_swarm_size, propose_mixtures
    from mixlab.search.recommend import SearchResult, search_mixture
    from mixlab.search.validate import CrossValidation, Verdict, cross_validate, r2_score, verdict

_EXPORTS = {
    "BootstrapResult": "mixlab.search.bootstrap",
    "Candidate": "mixlab.search.optimize",
    "CrossValidation": "mixlab.search.validate",
    "DifferentiableLaw": "mixlab.search.law",
    "FittedLaw": "mixlab.search.law",
    "FittedLinear": "mixlab.search.law",
    "FittedLogLinear": "mixlab.search.law",
    "GBMLaw": "mixlab.search.law",
    "LinearLaw": "mixlab.search.law",
    "LogLinearLaw": "mixlab.search.law",
    "MixingLaw": "mixlab.search.law",
    "OBJECTIVES": "mixlab.search.objective",
    "Objective": "mixlab.search.objective",
    "OptimizeResult": "mixlab.search.optimize",
    "Proposals": "mixlab.search.propose",
    "SearchResult": "mixlab.search.recommend",
    "Verdict": "mixlab.search.validate",
    "available_laws": "mixlab.search.law",
    "bootstrap": "mixlab.search.bootstrap",
    "build_law": "mixlab.search.law",
    "check_swarm": "mixlab.search.law",
    "cross_validate": "mixlab.search.validate",
    "default_swarm_size": "mixlab.search.propose",
    "kl_divergence": "mixlab.search.optimize",
    "make_objective": "mixlab.search.objective",
    "optimize_mixture": "mixlab.search.optimize",
    "propose_mixtures": "mixlab.search.propose",
    "r2_score": "mixlab.search.validate",
    "search_mixture": "mixlab.search.recommend",
    "verdict": "mixlab.search.validate",
}

__all__ = [
    "OBJECTIVES",
    "BootstrapResult",
    "Candidate",
    "CrossValidation",
    "DifferentiableLaw",
    "FittedLaw",
    "FittedLinear",
    "FittedLogLinear",
    "GBMLaw",
    "LinearLaw",
    "LogLinearLaw",
    "MixingLaw",
    "Objective",
    "OptimizeResult",
    "Proposals",
    "SearchResult",
    "Verdict",
    "available_laws",
    "bootstrap",
    "build_law",
    "check_swarm",
    "cross_validate",
    "default_swarm_size",
    "kl_divergence",
    "make_objective",
    "optimize_mixture",
    "propose_mixtures",
    "r2_score",
    "search_mixture",
    "verdict",
]


def __getattr__(name: str) -> Any:
    # Lazy: `mixlab search --help` and the CLI's parser must not pay for scipy at start-up.
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mixlab.search' has no attribute {name!r}")
