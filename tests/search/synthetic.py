"""A known log-linear mixing law and noisy swarms drawn from it, for the search tests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tests.conftest import tiny_run_config


@dataclass(frozen=True)
class TrueLaw:
    """``L_i(r) = c_i + k_i exp(t_i . r)``: each domain's own share lowers its loss most."""

    c: np.ndarray  # (D,)
    k: np.ndarray  # (D,)
    t: np.ndarray  # (D, K)

    def __call__(self, mixtures: np.ndarray) -> np.ndarray:
        r = np.atleast_2d(mixtures)
        return np.asarray(self.c + self.k * np.exp(r @ self.t.T))


def true_law(n_domains: int, seed: int = 0) -> TrueLaw:
    rng = np.random.default_rng(seed)
    t = -np.diag(rng.uniform(1.0, 3.0, n_domains)) + rng.normal(0, 0.2, (n_domains, n_domains))
    return TrueLaw(c=rng.uniform(1.5, 3.0, n_domains), k=rng.uniform(0.5, 1.5, n_domains), t=t)


def swarm(
    law: TrueLaw, n: int, *, noise: float = 0.005, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` flat-Dirichlet mixtures and their losses plus Gaussian noise of std ``noise``."""
    rng = np.random.default_rng(seed)
    x = rng.dirichlet(np.ones(law.t.shape[1]), size=n)
    return x, law(x) + rng.normal(0, noise, (n, law.t.shape[0]))


def write_finished_swarm(plan: Any, out: Path, law: TrueLaw, *, noise: float = 0.002) -> None:
    """The files a finished swarm of ``plan`` leaves under ``out/swarm`` (no training): each
    run's ``eval.json`` with losses from ``law``, and the runner's ``suite.json``."""
    rng = np.random.default_rng(1)
    swarm_dir = out / "swarm"
    runs = []
    for name, w in zip(plan.names, plan.proposals.weights, strict=True):
        for seed in plan.seeds:
            folder = swarm_dir / name / f"seed{seed}"
            folder.mkdir(parents=True, exist_ok=True)
            losses = law(w)[0] + rng.normal(0, noise, len(plan.eval_domains))
            record = {"step": 6, **{f"eval/{d}/loss": float(v) for d, v in zip(
                plan.eval_domains, losses, strict=True)}}  # fmt: skip
            (folder / "eval.json").write_text(json.dumps(record))
            runs.append({"method": name, "seed": seed, "dir": f"{name}/seed{seed}",
                         "status": "done", "seconds": 2.0, "stages": []})  # fmt: skip
    (swarm_dir / "suite.json").write_text(json.dumps({"version": 1, "runs": runs}))


PROXY_STEPS = 6


def tiny_spec(store: Path, **sections: dict) -> dict:
    """A search spec for the tiny store: 6-step proxies, a 4x target (subsample 0.25), 4 runs."""
    base = tiny_run_config(
        store, max_steps=PROXY_STEPS, eval_every=0, checkpoint_every=3, log_every=3
    )
    raw: dict = {
        "name": "tiny-search",
        "base": base,
        "target": {"max_steps": 4 * PROXY_STEPS},
        "swarm": {"runs": 3, "corners": False, "prior": "uniform", "max_epochs": 4},
        "fit": {"bootstrap": 5},
    }
    for key, value in sections.items():  # target is replaced, the other sections updated
        raw[key] = value if key == "target" else {**raw.get(key, {}), **value}
    return raw
