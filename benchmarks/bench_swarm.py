"""What a mixture search costs: one swarm run vs a plain `mixlab train`, and fit + optimise.

1. **Swarm run vs plain run** (issue 15 target: <= 1.05x). One proxy run of the search's swarm
   exactly as ``mixlab search`` runs it — planned from a search spec on the demo store (target
   budget ``--target-factor`` x the proxy's, so repetition matching gives it ``data.subsample =
   1 / factor``, a fixed mixture from the proposals, eval only at the end) and executed by the
   suite runner (a ``mixlab train`` process, manifest and cost bookkeeping) — against a plain
   ``mixlab train`` process with the same model, steps, batch, eval and threads (natural
   mixture, whole store). The two alternate ``--rounds`` times (A, B, A, B, ...) so machine
   noise hits both; each is a fresh process, so start-up (importing torch) is in both.
2. **Sampler**: tokens/s of ``MixtureSampler.next_step()`` on the document subsample vs on the
   whole store (the subsample is an index: windows are cut from the memory map).
3. **Fit + optimise** of the default swarm for the demo store (K = 8: 3 K Dirichlet mixtures,
   the prior and 8 corners) on losses from a known log-linear law: cross-validation + verdict +
   optimisation (``search_mixture(n_bootstrap=0)``), then with the default 50 bootstrap
   resamples.

Prints ``RESULT`` lines: ``swarm/plain wall-clock ratio``, ``sampler subsample/full
throughput``, ``search fit+optimise seconds`` and ``search fit+optimise+bootstrap seconds``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _common import demo_store, workdir


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--preset", default="llama-tiny", help="proxy model preset")
    ap.add_argument("--steps", type=int, default=60, help="proxy optimiser steps")
    ap.add_argument("--batch-size", type=int, default=16, help="sequences per step")
    ap.add_argument("--seq-len", type=int, default=128, help="tokens per sequence")
    ap.add_argument("--target-factor", type=int, default=16, help="target tokens / proxy tokens")
    ap.add_argument("--rounds", type=int, default=5, help="A/B alternations of the two runs")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run")
    ap.add_argument("--workdir", help="where the demo store and the runs are kept")
    args = ap.parse_args()

    root = workdir(args.workdir)
    store = demo_store(root)
    base = {
        "data": {"store": str(store), "seq_len": args.seq_len},
        "model": {"preset": args.preset},
        "train": {
            "max_steps": args.steps,
            "batch_size": args.batch_size,
            "warmup_steps": max(1, args.steps // 10),
            "threads": args.threads,
            "progress": False,
            "precision": "fp32",
            "log_every": 10,
            "checkpoint_every": 0,
        },
        "eval": {"max_tokens_per_domain": 20_000},
    }
    runs_vs_plain(root / "bench-swarm", base, args)
    sampler_throughput(store, args)
    fit_seconds(base, args)


def runs_vs_plain(work: Path, base: dict, args: argparse.Namespace) -> None:
    from mixlab.comparison.runner import run_suite
    from mixlab.comparison.suite import Suite
    from mixlab.config import RunConfig
    from mixlab.search.plan import plan_search
    from mixlab.search.spec import parse_search_spec

    proxy_tokens = args.steps * args.batch_size * args.seq_len
    spec = parse_search_spec(
        {"base": base, "target": {"tokens": args.target_factor * proxy_tokens}}
    )
    plan = plan_search(spec)
    swarm = plan.suite()
    # The prior's run (natural weights here): it differs from the plain run only by the
    # subsample and by going through the runner.
    one = Suite(name="bench", base=swarm.base, runs=swarm.runs[:1], seeds=[0], baseline="x")
    plain_cfg = RunConfig.from_dict({**base, "train": {**base["train"], "eval_every": 0}})
    plain_cfg.validate()
    print(
        f"proxy: {args.preset}, {args.steps} steps x {args.batch_size} x {args.seq_len} = "
        f"{proxy_tokens:,} tokens; swarm run {one.runs[0].name!r} with data.subsample = "
        f"{plan.subsample:.4g}, eval at the end; {args.threads} thread(s) per run"
    )
    times: dict[str, list[float]] = {"swarm run": [], "plain train": []}
    loop: dict[str, list[float]] = {"swarm run": [], "plain train": []}
    for r in range(args.rounds):
        folder = work / f"round{r}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        t0 = time.perf_counter()
        run_suite(one, folder / "swarm", echo=lambda _: None)
        times["swarm run"].append(time.perf_counter() - t0)
        plain_cfg.save(folder / "plain.yaml")
        cmd = [sys.executable, "-m", "mixlab", "train", "--config", str(folder / "plain.yaml")]
        t0 = time.perf_counter()
        subprocess.run([*cmd, "--out", str(folder / "plain")], check=True, capture_output=True)
        times["plain train"].append(time.perf_counter() - t0)
        run_dir = folder / "swarm" / one.runs[0].name / "seed0"
        loop["swarm run"].append(_loop_seconds(run_dir))
        loop["plain train"].append(_loop_seconds(folder / "plain"))
        print(
            f"round {r}: swarm run {times['swarm run'][-1]:6.2f} s (loop "
            f"{loop['swarm run'][-1]:5.2f} s)   plain train {times['plain train'][-1]:6.2f} s "
            f"(loop {loop['plain train'][-1]:5.2f} s)"
        )
    for what, series in (("process wall-clock", times), ("training loop", loop)):
        swarm_s, plain_s = (statistics.median(series[k]) for k in ("swarm run", "plain train"))
        low = min(series["swarm run"]) / min(series["plain train"])
        print(
            f"{what}: median swarm run {swarm_s:.2f} s, plain train {plain_s:.2f} s "
            f"(ratio of the minima {low:.3f})"
        )
    swarm_s = statistics.median(times["swarm run"])
    plain_s = statistics.median(times["plain train"])
    print(f"RESULT swarm/plain wall-clock ratio = {swarm_s / plain_s:.3f} (target <= 1.05)")


def _loop_seconds(run_dir: Path) -> float:
    """Seconds the run spent in its training steps (the checkpoint's ``elapsed_seconds``)."""
    import torch

    state = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)
    return float(state["elapsed_seconds"])


def sampler_throughput(store_path: Path, args: argparse.Namespace) -> None:
    from mixlab.data.store import ShardStore
    from mixlab.data.subsample import SubsampledStore
    from mixlab.sampling.sampler import MixtureSampler

    store = ShardStore(store_path)
    sources = {"full": store, "subsample": SubsampledStore(store, 1 / args.target_factor)}
    rates = {}
    k = len(store.domains)
    for name, source in sources.items():
        sampler = MixtureSampler(
            source, seq_len=args.seq_len, batch_size=args.batch_size, weights=np.full(k, 1 / k)
        )
        steps = 300
        t0 = time.perf_counter()
        for _ in range(steps):
            sampler.next_step()
        rates[name] = steps * sampler.tokens_per_step / (time.perf_counter() - t0)
        print(f"sampler on {name:9s}: {rates[name] / 1e6:6.2f} M tokens/s")
    ratio = rates["subsample"] / rates["full"]
    print(f"RESULT sampler subsample/full throughput = {ratio:.3f}")


def fit_seconds(base: dict, args: argparse.Namespace) -> None:
    from mixlab.search import search_mixture
    from mixlab.search.plan import plan_search
    from mixlab.search.spec import parse_search_spec

    proxy_tokens = args.steps * args.batch_size * args.seq_len
    spec = parse_search_spec(
        {"base": base, "target": {"tokens": args.target_factor * proxy_tokens}}
    )
    plan = plan_search(spec)
    x = plan.proposals.weights
    k = x.shape[1]
    rng = np.random.default_rng(0)
    t = -np.diag(rng.uniform(1.0, 3.0, k)) + rng.normal(0, 0.2, (k, k))
    c, scale = rng.uniform(1.5, 3.0, k), rng.uniform(0.5, 1.5, k)
    y = c + scale * np.exp(x @ t.T) + rng.normal(0, 0.01, x.shape)
    for n_bootstrap, label in ((0, "fit+optimise"), (50, "fit+optimise+bootstrap")):
        t0 = time.perf_counter()
        result = search_mixture(x, y, plan.prior, caps=plan.caps, n_bootstrap=n_bootstrap)
        seconds = time.perf_counter() - t0
        print(
            f"{label}: {len(x)} runs x {k} domains, {result.cv.folds} CV folds -> "
            f"{seconds:.2f} s (rho {result.cv.spearman:.2f}, recommended "
            f"{result.verdict.recommend})"
        )
        print(f"RESULT search {label} seconds = {seconds:.2f}")


if __name__ == "__main__":
    main()
