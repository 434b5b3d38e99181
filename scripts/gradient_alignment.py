#!/usr/bin/env python
"""Which domains share gradient directions at the end of a run, and does that predict transfer?

At a run's checkpoint, each domain's mean training-loss gradient (every parameter) over
``--windows`` random training windows, taken twice on disjoint windows (A and B), weighted by
the run's Adam second moments (AdamW steps along ``m / (sqrt(v_hat) + eps)``, so a step on
domain j moves the loss of domain i by about ``-lr <g_i, P g_j>``):

    M_ij = (<g_i^A, P g_j^B> + <g_i^B, P g_j^A>) / 2        P = 1 / (sqrt(v_hat) + eps)

The split halves keep each gradient's own sampling noise out of the diagonal.
``T_ij = M_ij / M_ii`` is how much a step on j lowers i's loss next to a step on i itself.
Read as effective tokens (domain i learns from ``e_i(w) = sum_j T_ij w_j``), T gives a transfer
model of a mixture change, ``dL_i = -d_i log2(e_i(w) / e_i(p))``, of which the own-token model
(:mod:`mixlab.mixing.own_tokens`) is the case T = I.

``--check RUN`` puts that model to the test: RUN is the same proxy trained at another static
mixture (the headroom arm's check stage); the table gives each domain's measured change, the
own-token model's and the transfer model's, and the rms error of each. Measured on the demo
corpus (llama-tiny proxies, uniform and at their guarded w*, 1200 steps, 8 seeds; README
"Headroom"): the transfer model is the worse one on 7 seeds of 8 (rms 0.12 nats against 0.08
pooled): the measured changes are larger than the own-token ones (1.36x by least squares,
licenses most), not damped by the neighbours the way T says. As a map of who learns from whom
T is steadier (mean of the 8: python_code and python_tests 0.19-0.21 each way, the prose
domains 0.13-0.19 among themselves, c_headers and type_stubs under 0.1 from anyone); one draw
at 256 windows is noisy (two draws differ by 0.04 per entry on average, up to 0.2)::

    python scripts/gradient_alignment.py runs/hg/headroom-guard/seed0/stages/proxy \\
        --check runs/hg/headroom-checked/seed0/stages/check
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from mixlab.errors import MixlabError
from mixlab.eval.runs import load_run
from mixlab.model.losses import token_losses
from mixlab.report.headroom import headroom, model_check
from mixlab.report.records import load_records
from mixlab.train.build import build_optimizer


def alignment(run: Path, windows: int, seed: int, batch: int = 32) -> tuple[list[str], np.ndarray]:
    """(domains, M): split-half, Adam-weighted gradient inner products at ``run``'s checkpoint."""
    saved = load_run(run)
    model, cfg = saved.model, saved.cfg
    optimizer = build_optimizer(model, cfg)
    optimizer.load_state_dict(saved.state["optimizer"])
    params = [p for p in model.parameters() if p.requires_grad]
    weight: dict[int, torch.Tensor] = {}  # id(param) -> 1 / (sqrt(v_hat) + eps), by its group
    for group in optimizer.param_groups:
        beta2, eps = group["betas"][1], group["eps"]
        for p in group["params"]:
            st = optimizer.state[p]
            v_hat = st["exp_avg_sq"] / (1 - beta2 ** float(st["step"]))
            weight[id(p)] = 1.0 / (v_hat.sqrt() + eps)
    precond = torch.cat([weight[id(p)].flatten() for p in params]).double()
    seq_len = cfg.data.seq_len
    rng = np.random.default_rng(seed)

    def mean_gradient(rows: np.ndarray) -> torch.Tensor:
        model.zero_grad()
        for k in range(0, len(rows), batch):
            x = torch.as_tensor(rows[k : k + batch])
            loss = token_losses(model(input_ids=x, use_cache=False).logits, x).sum()
            (loss / (len(rows) * (seq_len - 1))).backward()
        # a parameter the loss does not reach keeps its place (zeros), aligned with precond
        return torch.cat(
            [torch.zeros(p.numel()) if p.grad is None else p.grad.flatten() for p in params]
        ).double()

    halves: list[list[torch.Tensor]] = [[], []]
    for domain in saved.store.domains:
        tokens = saved.store.tokens(domain, "train")
        if len(tokens) <= seq_len:
            raise SystemExit(f"{domain}: {len(tokens)} training tokens, fewer than one window")
        starts = rng.integers(0, len(tokens) - seq_len, 2 * windows)
        rows = np.stack([np.asarray(tokens[s : s + seq_len], dtype=np.int64) for s in starts])
        halves[0].append(mean_gradient(rows[:windows]))
        halves[1].append(mean_gradient(rows[windows:]))
    a, b = torch.stack(halves[0]), torch.stack(halves[1])
    m = ((a * precond) @ b.T + (b * precond) @ a.T) / 2
    return list(saved.store.domains), m.numpy()


def print_matrix(title: str, domains: Sequence[str], matrix: np.ndarray) -> None:
    print(title)
    print(" " * 18 + " ".join(f"{d[:7]:>7s}" for d in domains))
    for d, row in zip(domains, matrix, strict=True):
        print(f"{d[:17]:>17s} " + " ".join(f"{x:7.2f}" for x in row))


def check(run: Path, check_run: Path, domains: Sequence[str], t: np.ndarray) -> None:
    """Measured changes of ``check_run`` against ``run`` next to both models' predictions."""
    base = [r for r in load_records([run]) if r.ok]
    h = headroom(base)
    missing = sorted(set(h.domains) - set(domains))
    if missing:
        raise SystemExit(f"{run}: evaluates {missing}, which its store does not have")
    idx = [list(domains).index(d) for d in h.domains]  # T in the eval's domain order
    t = t[np.ix_(idx, idx)]
    mc = model_check(h, base, load_records([check_run]))
    w = mc.mixtures[0]
    transfer = -h.drop * np.log2((t @ w) / (t @ h.prior))
    measured, own = mc.measured[0], mc.predicted[0]
    print(f"\n{check_run} against {run} at step {mc.step} (nats):")
    print(f"{'domain':>17s} {'p':>6s} {'w':>6s} {'measured':>9s} {'own':>7s} {'transfer':>9s}")
    for i, d in enumerate(h.domains):
        print(
            f"{d[:17]:>17s} {h.prior[i]:6.3f} {w[i]:6.3f} {measured[i]:+9.3f} {own[i]:+7.3f} "
            f"{transfer[i]:+9.3f}"
        )
    rms = [float(np.sqrt(np.mean((measured - x) ** 2))) for x in (own, transfer)]
    print(f"rms error: own-token model {rms[0]:.3f}, transfer model {rms[1]:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("run", type=Path, help="a run folder (or checkpoint.pt) of a static mixture")
    ap.add_argument("--windows", type=int, default=256, help="windows per half (default 256)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the window draw (default 0)")
    ap.add_argument("--check", type=Path, metavar="RUN", help="the same proxy at another mixture")
    ap.add_argument("--out", type=Path, help="write {domains, M, T} as JSON")
    args = ap.parse_args()
    if args.windows < 1:
        raise SystemExit("--windows must be at least 1")
    try:
        domains, m = alignment(args.run, args.windows, args.seed)
        t = m / np.diag(m)[:, None]
        print_matrix("T_ij = M_ij / M_ii (row i gains from a step on column j):", domains, t)
        cos = m / np.sqrt(np.abs(np.outer(np.diag(m), np.diag(m))))
        print_matrix("\ncosine M_ij / sqrt(M_ii M_jj):", domains, cos)
        if args.out:
            record = {"domains": domains, "M": m.tolist(), "T": t.tolist()}
            args.out.write_text(json.dumps(record, indent=1) + "\n")
        if args.check:
            check(args.run, args.check, domains, t)
    except MixlabError as exc:
        raise SystemExit(f"gradient_alignment: {exc}") from None


if __name__ == "__main__":
    main()
