"""What the mixture-search core costs: fit, optimise, cross-validate and bootstrap a mixing law.

A swarm of ``n`` mixtures of K domains (``mixlab.search.propose_mixtures`` around uniform) is
scored by a known log-linear law (``L_i = c_i + k_i exp(t_i . r)``, each domain's own share
lowering its loss most) plus Gaussian noise; each law (``loglinear``, ``linear``, ``gbm`` when
LightGBM is installed) is then fitted, optimised (mean objective), cross-validated and
bootstrapped. Prints the seconds of each step, the held-out Spearman rho and R^2, and the
true objective at the chosen mixture next to the true optimum (how good the answer is).

No training: the swarm runs are what a real search pays for; this is the part after them.
Prints ``RESULT search fit+optimise <law> n=<n> = x s`` lines (target: seconds for K = 8).
"""

from __future__ import annotations

import argparse
import importlib.util
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--domains", type=int, default=8, help="K = D, mixture and eval domains")
    ap.add_argument("--runs", type=int, nargs="+", default=[24, 50, 100], help="swarm sizes")
    ap.add_argument("--noise", type=float, default=0.01, help="loss noise std (nats)")
    ap.add_argument("--bootstrap", type=int, default=50, help="bootstrap resamples")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from mixlab.search import (
        FittedLogLinear,
        bootstrap,
        build_law,
        cross_validate,
        make_objective,
        optimize_mixture,
        propose_mixtures,
    )

    k = args.domains
    rng = np.random.default_rng(args.seed)
    t = -np.diag(rng.uniform(0.5, 3.0, k)) + rng.normal(0, 0.2, (k, k))
    c, scale = rng.uniform(1.5, 3.0, k), rng.uniform(0.5, 1.5, k)
    truth = FittedLogLinear(c=c, s=np.log(scale)[:, None] + t)  # the same law on the simplex
    prior = np.full(k, 1.0 / k)
    objective = make_objective("mean", k)
    best = optimize_mixture(truth, objective, prior).best.objective
    laws = ["loglinear", "linear"]
    if importlib.util.find_spec("lightgbm") is not None:
        laws.append("gbm")
    print(f"K = D = {k}, noise {args.noise}, true optimum objective {best:.4f}")
    results = []
    for n in args.runs:
        x = propose_mixtures(prior, n, seed=args.seed + n, include_corners=False).weights[:n]
        y = truth.predict(x) + rng.normal(0, args.noise, x.shape)
        for name in laws:
            law = build_law(name, seed=args.seed)
            t0 = time.perf_counter()
            fitted = law.fit(x, y)
            t1 = time.perf_counter()
            chosen = optimize_mixture(fitted, objective, prior, starts=x[:3]).best.weights
            t2 = time.perf_counter()
            cv = cross_validate(law, x, y, objective)
            t3 = time.perf_counter()
            bootstrap(law, x, y, chosen, objective, prior, n_resamples=args.bootstrap)
            t4 = time.perf_counter()
            gap = float(objective(truth.predict(chosen))[0]) - best
            print(
                f"n={n:4d} {name:9s} fit {t1 - t0:6.3f}s  optimise {t2 - t1:6.3f}s  "
                f"CV ({cv.folds} folds) {t3 - t2:6.2f}s  bootstrap ({args.bootstrap}) "
                f"{t4 - t3:6.2f}s | rho {cv.spearman:.2f}  R^2 {cv.objective_r2:.2f}  "
                f"true objective - optimum {gap:.4f}"
            )
            results.append((name, n, t2 - t0))
    for name, n, seconds in results:
        print(f"RESULT search fit+optimise {name} n={n} = {seconds:.3f} s")


if __name__ == "__main__":
    main()
