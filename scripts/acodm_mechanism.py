#!/usr/bin/env python
"""Why the paper's AC-ODM actor collapses onto one domain, measured piece by piece.

Small, seeded, single-thread measurements (issue 18; README "AC-ODM without collapse"):

Synthetic (no LM, about a minute):

* **A1 vertex.** Feed the agent a *constant* reward (+0.3 for one domain, zero-sum) or a null
  one (z-scored noise, no domain better) and follow the mixture. The paper's objective
  sum_i a_i Q_i over a softmax is linear in a: it ends at a vertex, and not necessarily the
  advantaged one. mixlab's bounded actor (log-ratio bound 1 around the prior, KL term) tilts
  toward the advantaged domain and never leaves the bound.
* **A2 zero-sum reward.** The paper reward clip3(z(r~)) sums to 0 over the domains at every
  step (the clip cannot bind for K <= 10) and has unit spread whether the gradients carry
  information or are pure noise.
* **A3 critic extrapolation.** A critic fitted on actions near uniform (the warm-up and sigma
  0.1 exploration) with a reward that does not depend on the action: what it says about the
  never-tried vertices (it extends Q(s) flat, so nothing tells the actor a vertex costs).
* **A4 exploration.** How far sigma = 0.1 logit noise moves w and p_eff (floor 1, B = 16,
  K = 8), against how far a collapsing actor moves.

LM (``--lm``; llama-1m on the demo store, 16 x 128 tokens per step; ~15 min on one core):

* **B1 state identifies the domain.** A paper-variant online run (300 steps): its mixture;
  how often the state's counts group (the previous batch's sequences per domain, floor
  included) names the domain the actor weights most; which state groups carry its choice;
  which domains the paper reward favours early (Spearman with domain size).
* **B3 repeated domains.** In the same run, the most-weighted domain's epochs, and the cosine
  between its training gradient and its own held-out gradient (a train-only reward cannot see
  repetition).
* **B2 scale-dependent state.** llama-tiny (2 layers) and llama-1m (8 layers) trained on the
  same data order: how well each state group of the paper and of mixlab agrees between the two
  sizes (the proxy -> target transfer reads the target's state with the proxy's actor).
* **B4/B5 reward vs ground truth.** At steps 60, 150, 250 of a near-uniform run: what sampling
  domain i really does to the mean held-out log-loss (16 windows per domain from the start of
  each split; the reward's windows come from the end) -- B4: one real AdamW step (the run's
  optimizer state) or one SGD step on 16 sequences of domain i; B5: 20 steps with the mixture
  tilted toward domain i by a log-ratio of 1, on the same data stream, against no tilt -- and
  the Spearman correlation over the 8 domains of that truth with the paper reward, the
  held-out alignment reward, first-order oracles on the full model (with and without Adam's
  preconditioner) and the domain's training loss.

* **B6 is there a signal?** The B5 truth measured again from the same checkpoint with other
  label draws (3 repeats, 20- and 50-step tilts, steps 60 and 200): how well the repeats agree
  (Spearman between them) and what share of the per-domain spread is more than repeat noise.

    PYTHONPATH=src python scripts/acodm_mechanism.py            # A1-A4
    PYTHONPATH=src python scripts/acodm_mechanism.py --lm       # + B1-B6 (demo store)
    PYTHONPATH=src python scripts/acodm_mechanism.py --lm --parts b6 --b6-checkpoints 60
"""

from __future__ import annotations

import argparse
import copy
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

K_SYN = 8
TRUTH_BATCHES = 3  # B4: one-step effects averaged over this many 16-sequence batches


# --------------------------------------------------------------------------- synthetic
def _agent(variant: str, seed: int, state_dim: int, k: int, **kw: Any) -> Any:
    from mixlab.mixing.acodm.agent import DdpgAgent
    from mixlab.mixing.acodm.options import AcodmOptions

    opts = AcodmOptions(variant=variant, hidden=64, batch_size=32, buffer_size=2000, **kw)
    return DdpgAgent(state_dim, k, opts, seed=seed)


def a1_vertex(seeds: int, updates: int) -> None:
    from mixlab.mixing.acodm.reward import clip3, zscore

    k, s_dim = K_SYN, 3 * K_SYN + 1
    print(f"\nA1  constant or null reward, {updates} agent updates per run, K = {k}")
    print("    adv: r = +0.3 for domain 2, -0.3/(K-1) elsewhere; null: clip3(z(N(0, I))) each step")
    print(f"    {'arm':<34} {'reward':<5} {'final max w (argmax)':<48} {'max |log w/p0|':>14}")
    arms = [
        ("paper (lr 1e-4)", "paper", {}),
        ("paper, actor lr 1e-3", "paper", {"actor_lr": 1e-3}),
        ("mixlab (bound 1, kl 1)", "mixlab", {}),
        ("mixlab, kl 0 (bound only)", "mixlab", {"kl_coef": 0.0}),
    ]
    for label, variant, kw in arms:
        for kind in ("adv", "null"):
            finals, ratios = [], []
            for seed in range(seeds):
                agent = _agent(variant, seed, s_dim, k, **kw)
                rng = np.random.default_rng(seed)
                s = rng.normal(size=s_dim)
                worst = 0.0
                for _ in range(updates):
                    if kind == "adv":
                        r = np.full(k, -0.3 / (k - 1))
                        r[2] = 0.3
                    else:
                        r = clip3(zscore(rng.normal(size=k)))
                    a = agent.act(s, "logit_gaussian", 0.1)
                    worst = max(worst, float(np.abs(np.log(a * k)).max()))
                    s2 = rng.normal(size=s_dim)
                    agent.push(s, a, r, s2, np.ones(k))
                    if agent.ready:
                        agent.update()
                    s = s2
                w = agent.act(s)
                finals.append(f"{w.max():.2f}({int(w.argmax())})")
                ratios.append(worst)
            print(f"    {label:<34} {kind:<5} {' '.join(finals):<48} {max(ratios):>14.3f}")
    print("    (bound 1 means every w_i in [p0/e, e p0] = [0.046, 0.340] for K = 8)")


def a2_zero_sum(steps: int) -> None:
    from mixlab.mixing.acodm.reward import alignment_reward

    rng = np.random.default_rng(0)
    k, p = K_SYN, 512
    print(
        f"\nA2  the paper reward is zero-sum with unit spread, whatever the gradients "
        f"({steps} steps)"
    )
    shared = rng.normal(size=p)
    scale = np.linspace(0.0, 1.0, k)[:, None]  # domain i shares scale_i of the common direction
    for label, signal in (("domain i aligned by i/(K-1)", 1.0), ("pure noise", 0.0)):
        sums, spreads, means = [], [], []
        for _ in range(steps):
            g = signal * scale * shared + rng.normal(size=(k, p))
            r, _ = alignment_reward(g, np.ones(k, dtype=bool))
            sums.append(abs(r.sum()))
            spreads.append(r.std(ddof=1))
            means.append(r)
        m = np.mean(means, axis=0)
        print(
            f"    {label:<30} max |sum_i r_i| = {max(sums):.1e}  mean spread over domains = "
            f"{np.mean(spreads):.3f}  mean_t r = {np.round(m, 2).tolist()}"
        )
    print(
        "    Any return sum_i a_i r_i = sum_i (a_i - 1/K) r_i then rewards concentration and "
        "nothing else,\n    and mean_i Q_i (the release's actor objective) carries no signal."
    )


def a3_critic_extrapolation(seeds: int, updates: int) -> None:
    k, s_dim = K_SYN, 3 * K_SYN + 1
    print(
        f"\nA3  critic extrapolation: fitted on near-uniform actions (Dirichlet(50): the warm-up "
        f"and sigma 0.1 noise), {updates} updates,"
    )
    print(
        "    reward r_i = 0.1 i + N(0, 0.5^2), independent of the action; gamma 0, so the true "
        "Q_i(s, a) = 0.1 i everywhere"
    )
    print(
        f"    {'seed':<5} {'RMSE of Q on the data':<24} {'RMSE of Q_j(s, e_j) at vertices':<33}"
        f" {'vertex argmax of sum a_i Q_i':<30} {'its value - value at uniform':<28}"
    )
    for seed in range(seeds):
        agent = _agent("paper", seed, s_dim, k, train_actor=False, gamma=0.0)
        rng = np.random.default_rng(seed)
        true = 0.1 * np.arange(k)
        s = rng.normal(size=s_dim)
        for _ in range(updates):
            a = rng.dirichlet(np.full(k, 50.0))
            s2 = rng.normal(size=s_dim)
            agent.push(s, a, true + 0.5 * rng.normal(size=k), s2, np.ones(k))
            if agent.ready:
                agent.update()
            s = s2
        states = torch.as_tensor(rng.normal(size=(256, s_dim)), dtype=torch.float32)
        with torch.no_grad():
            data = torch.as_tensor(rng.dirichlet(np.full(k, 50.0), size=256), dtype=torch.float32)
            q_data = agent.critic(states, data).numpy()
            on_data = float(np.sqrt(((q_data - true) ** 2).mean()))
            u = torch.full((256, k), 1.0 / k)
            at_uniform = float((u * agent.critic(states, u)).sum(-1).mean())
            errs, values = [], []
            for j in range(k):
                a = torch.zeros(256, k)
                a[:, j] = 1.0
                q = agent.critic(states, a)[:, j].numpy()
                errs.append((q - true[j]) ** 2)
                values.append(q.mean())
        at_vertex = float(np.sqrt(np.mean(errs)))
        print(
            f"    {seed:<5} {on_data:<24.3f} {at_vertex:<33.3f} "
            f"{int(np.argmax(values))} (true best {k - 1}){'':<14} "
            f"{max(values) - at_uniform:+.3f}"
        )
    print(
        "    The critic learns Q(s) and extends it flat to actions it never saw (no larger error "
        "at the vertices):\n    nothing in the data says that a vertex costs anything, so "
        "sum_i a_i Q_i stays linear in a and the actor\n    climbs to a vertex. In the LM the "
        "real effect of concentrating is negative (diminishing returns, ACODM_AUDIT\n    §2.2) "
        "but about 300x below the noise sigma = 0.1 exploration can probe (A4)."
    )


def a4_exploration(samples: int) -> None:
    rng = np.random.default_rng(0)
    k, batch, floor = K_SYN, 16, 1
    print(
        f"\nA4  exploration: sigma = 0.1 logit noise at uniform, K = {k}, B = {batch}, "
        f"floor {floor}"
    )
    u = np.full(k, 1.0 / k)
    dw = []
    for _ in range(samples):
        logits = np.log(u) + 0.1 * rng.normal(size=k)
        w = np.exp(logits) / np.exp(logits).sum()
        dw.append(np.abs(w - u).mean())
    share = (batch - k * floor) / batch
    print(
        f"    mean |delta w_i| = {np.mean(dw):.4f}; after the floor p_eff = {floor}/{batch} + "
        f"{share:.2f} w: mean |delta p_eff_i| = {share * np.mean(dw):.4f} "
        f"(a collapsed actor moves w_i by up to {1 - 1 / k:.3f})"
    )


# --------------------------------------------------------------------------- LM
def _config(store: Path, mixing: dict[str, Any], preset: str, steps: int, seed: int) -> Any:
    from mixlab.config import RunConfig

    cfg = RunConfig.from_dict(
        {
            "data": {"store": str(store), "seq_len": 128},
            "model": {"preset": preset},
            "mixing": mixing,
            "train": {
                "max_steps": steps,
                "batch_size": 16,
                "lr": 3e-3,
                "warmup_steps": 15,
                "seed": seed,
                "threads": 1,
                "progress": False,
                "eval_every": 0,
                "log_every": 1000,
            },
        }
    )
    cfg.validate()
    return cfg


def _heldout_probe(trainer: Any, windows: int) -> Any:
    from mixlab.mixing.base import HeldoutGradientNeeds
    from mixlab.train.probes import HeldoutProbe

    needs = HeldoutGradientNeeds(every=1, windows_per_domain=windows, blocks=(-1, -3, -5))
    return HeldoutProbe(needs, trainer.raw_model, trainer.store, 128)


def b1_b3_paper_run(store: Path, steps: int, seed: int, out: Path) -> None:
    from mixlab.train.loop import Trainer

    print(f"\nB1/B3  paper-variant online run, llama-1m, {steps} steps x 16 x 128, seed {seed}")
    cfg = _config(store, {"name": "acodm", "acodm": {"variant": "paper"}}, "llama-1m", steps, seed)
    trainer = Trainer(cfg, out / f"paper-s{seed}")
    policy = trainer.policy
    k = len(trainer.domains)
    probe = _heldout_probe(trainer, 2)
    tokens_per_domain = trainer.train_data.train_tokens_per_domain()
    actions, states, rewards, cosines, served = [], [], [], [], np.zeros(k)
    for t in range(1, steps + 1):
        a_t = trainer.mixer.weights.copy()
        out_step = trainer.run_step()
        served += out_step["token_count"]
        actions.append(a_t)
        states.append(policy.last_state)  # type: ignore[attr-defined]
        rewards.append([policy.log_values()[f"acodm/reward/{d}"] for d in trainer.domains])
        if t % 25 == 0:
            trainer.probes.capture.stop()  # type: ignore[union-attr]
            h = probe.measure(trainer.raw_model, step=t)
            g = out_step["grad_sum"] / np.maximum(out_step["grad_count"], 1)[:, None]
            hd = h["heldout_grad_sum"] / np.maximum(h["heldout_grad_count"], 1)[:, None]
            cos = [
                float(g[i] @ hd[i] / (np.linalg.norm(g[i]) * np.linalg.norm(hd[i]) + 1e-30))
                for i in range(k)
            ]
            cosines.append((t, served / tokens_per_domain, cos))
    probe.capture.close()
    w = trainer.mixer.weights
    top = int(w.argmax())
    print(f"    final mixture: max w = {w.max():.3f} on {trainer.domains[top]}")
    main = np.arange(policy.warmup_steps, steps)  # type: ignore[attr-defined]
    a = np.array(actions)[main]
    s = np.array(states)[main - 1]  # s_{t-1}: the state the actor saw when it chose a_t
    counts = s[:, 2 * k : 3 * k]
    agree = float(np.mean(counts.argmax(1) == a.argmax(1)))
    print(
        f"    main phase: argmax of the counts group of s_(t-1) = argmax of a_t at "
        f"{100 * agree:.0f}% of steps (chance {100 / k:.0f}%)"
    )
    for name, lo, hi in (("loss", 0, k), ("loss change", k, 2 * k), ("counts", 2 * k, 3 * k)):
        group = s[:, lo:hi]
        corr = [
            np.corrcoef(group[:, i], a[:, i])[0, 1]
            for i in range(k)
            if group[:, i].std() > 0 and a[:, i].std() > 0
        ]
        print(
            f"    corr(group {name:<11} of s_(t-1), a_t) per domain, mean: {np.nanmean(corr):+.2f}"
        )
    r = np.array(rewards)
    early = r[: steps // 3].mean(0)
    nat = tokens_per_domain / tokens_per_domain.sum()
    print(
        "    early mean paper reward vs domain size: Spearman "
        f"{_spearman(early, nat):+.2f} (negative: small domains favoured); "
        f"collapsed domain's mean reward {r[:, top].mean():+.2f}"
    )
    print(f"    B3  {trainer.domains[top]}: epochs and cos(train grad, own held-out grad)")
    others = [i for i in range(k) if i != top]
    for t, epochs, cos in cosines:
        print(
            f"      step {t:>4}: epochs {epochs[top]:.2f} (others <= {epochs[others].max():.2f}), "
            f"cos {cos[top]:+.3f} (others' median {np.median([cos[i] for i in others]):+.3f})"
        )
    trainer.probes.close()  # type: ignore[union-attr]


def b2_scale_dependent_state(store: Path, steps: int, out: Path) -> None:
    """The same seed and data order on llama-tiny and llama-1m: do the state groups agree?"""
    from mixlab.mixing.acodm.state import MixlabStateBuilder
    from mixlab.train.loop import Trainer

    print(
        f"\nB2  the state on llama-tiny (2 layers, d 32) vs llama-1m (8 layers, d 64), same seed "
        f"and data order, {steps} steps"
    )
    traces: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for preset in ("llama-tiny", "llama-1m"):
        mixing = {"name": "acodm", "acodm": {"variant": "paper", "train_actor": False}}
        trainer = Trainer(_config(store, mixing, preset, steps, 0), out / f"state-{preset}")
        k = len(trainer.domains)
        mixlab = MixlabStateBuilder(np.full(k, 1.0 / k))
        paper_states, mixlab_states = [], []
        for t in range(1, steps + 1):
            o = trainer.run_step()
            loss = np.divide(o["loss_sum"], np.maximum(o["token_count"], 1))
            mixlab_states.append(mixlab.build(loss, o["token_count"], t, steps))
            paper_states.append(trainer.policy.last_state)  # type: ignore[attr-defined]
        traces[preset] = (np.array(paper_states), np.array(mixlab_states))
        print(f"    {preset:<11} depth-point blocks {_blocks(trainer)}")
        trainer.probes.close()  # type: ignore[union-attr]
    k, late = 8, slice(steps // 2, steps)
    groups = {
        "paper": [
            ("loss", 0, k),
            ("loss change", k, 2 * k),
            ("counts", 2 * k, 3 * k),
            ("weight norms", 3 * k, 3 * k + 5),
            ("norm change", 3 * k + 5, 3 * k + 10),
        ],
        "mixlab": [("EMA loss", 0, k), ("loss trend", k, 2 * k), ("served share", 2 * k, 3 * k)],
    }
    print("    mean over the 2nd half of the steps of corr(group on tiny, group on 1m):")
    for index, kind in enumerate(("paper", "mixlab")):
        tiny, big = traces["llama-tiny"][index], traces["llama-1m"][index]
        cells = []
        for name, lo, hi in groups[kind]:
            corr = [
                np.corrcoef(tiny[t, lo:hi], big[t, lo:hi])[0, 1]
                for t in range(steps)[late]
                if tiny[t, lo:hi].std() > 0 and big[t, lo:hi].std() > 0
            ]
            cells.append(f"{name} {np.mean(corr):+.2f}" if corr else f"{name} (constant)")
        print(f"    {kind:<7} " + ", ".join(cells))
    tiny, big = traces["llama-tiny"][0][-1], traces["llama-1m"][0][-1]
    norms = [np.round(x[3 * k : 3 * k + 5], 2).tolist() for x in (tiny, big)]
    print(f"    paper weight-norm group at the end: tiny {norms[0]}, 1m {norms[1]}")


def _blocks(trainer: Any) -> list[int]:
    from mixlab.mixing.acodm.state import select_depth_blocks
    from mixlab.model.layers import decoder_blocks

    return select_depth_blocks(len(decoder_blocks(trainer.raw_model)), [0, 0.25, 0.5, 0.75, 1])


def b4_b5_reward_vs_truth(
    store: Path, checkpoints: list[int], batches: int, horizon: int, out: Path
) -> None:
    """Per-domain predictions at theta_t against what sampling the domain really does."""

    print(
        "\nB4/B5  rewards vs what sampling domain i really does (uniform+floor run, llama-1m, "
        f"seed 0; paper and heldout_alignment rewards averaged over {batches} mixed batches)"
    )
    print(
        "    truths: B4 one AdamW step (the run's optimizer state) / one SGD step (lr 0.05) on "
        f"16 sequences of domain i ({TRUTH_BATCHES} batches);\n    B5 {horizon} training steps "
        "with the mixture tilted toward domain i (log-ratio +1, the same data stream) vs not."
    )
    print(
        "    held-out loss = mean over domains of 16 validation windows from the start of the "
        "split (the reward's windows come from the end).\n    oracle = <g_i, P h_E> on the "
        "full model with the eval windows' own gradient h_E (P: AdamW's 1/sqrt(v) or 1)"
    )
    acodm = {"train_actor": False, "exploration": "none", "reward_layers": [-1, -3, -5]}
    trainer, evals = _truth_trainer(store, acodm, max(checkpoints), out / "truth")
    probe = _heldout_probe(trainer, 4)
    for ckpt in checkpoints:
        while trainer.step < ckpt:
            trainer.run_step()
        preds = _predictions(trainer, probe, evals, batches, ckpt)
        truths = _one_step_truths(trainer, evals, ckpt)
        truths[f"B5 {horizon}-step tilt"] = _tilt_truth(trainer, evals, horizon)
        names = list(preds)
        print(f"    step {ckpt}: Spearman over the 8 domains")
        print(f"      {'truth':<18}" + "".join(f"{n:>20}" for n in names))
        for label, truth in truths.items():
            cells = "".join(f"{_spearman(truth, preds[n]):>+20.2f}" for n in names)
            print(f"      {label:<18}{cells}")
    probe.capture.close()
    trainer.probes.close()  # type: ignore[union-attr]


def _predictions(
    trainer: Any, probe: Any, evals: list[torch.Tensor], batches: int, ckpt: int
) -> dict[str, np.ndarray]:
    from mixlab.mixing.acodm.reward import alignment_reward, heldout_alignment, heldout_direction

    k = len(trainer.domains)
    paper, heldout = np.zeros(k), np.zeros(k)
    present = np.ones(k, dtype=bool)
    for b in range(batches):
        g = _domain_gradients(trainer, seed=1000 * ckpt + b)
        paper += alignment_reward(g, present)[0] / batches
        hd = probe.measure(trainer.raw_model, step=b + 1)
        h = heldout_direction(hd["heldout_grad_sum"], hd["heldout_grad_count"])
        heldout += heldout_alignment(g, present, h) / batches
    model = trainer.raw_model
    params = list(model.parameters())
    h_e = _flat_grad(model, lambda m: _mean_loss(m, evals))
    inv_sqrt_v = []
    for p in params:
        state = trainer.optimizer.state[p]
        v_hat = state["exp_avg_sq"] / (1 - 0.999 ** float(state["step"]))
        inv_sqrt_v.append((1.0 / (v_hat.sqrt() + 1e-8)).flatten())
    precond = torch.cat(inv_sqrt_v).double()
    oracle, oracle_adam, loss = np.zeros(k), np.zeros(k), np.zeros(k)
    for i, d in enumerate(trainer.domains):
        for rep in range(TRUTH_BATCHES):
            ids = torch.from_numpy(
                _train_windows(trainer.store.tokens(d, "train"), 16, 7919 * ckpt + rep)
            )
            g = _flat_grad(model, lambda m, ids=ids: _token_loss(m, ids))
            oracle[i] += float(g @ h_e) / TRUTH_BATCHES
            oracle_adam[i] += float((g * precond) @ h_e) / TRUTH_BATCHES
            with torch.no_grad():
                loss[i] += float(_token_loss(model, ids)) / TRUTH_BATCHES
    return {
        "paper reward": paper,
        "heldout_alignment": heldout,
        "oracle, P = 1": oracle,
        "oracle, P = Adam": oracle_adam,
        "train loss": loss,
    }


def _one_step_truths(trainer: Any, evals: list[torch.Tensor], ckpt: int) -> dict[str, np.ndarray]:
    from mixlab.train.build import build_optimizer

    k = len(trainer.domains)
    base = _heldout_loss(trainer.raw_model, evals)
    adam, sgd = np.zeros(k), np.zeros(k)
    for i, d in enumerate(trainer.domains):
        for rep in range(TRUTH_BATCHES):
            ids = torch.from_numpy(
                _train_windows(trainer.store.tokens(d, "train"), 16, 7919 * ckpt + rep)
            )
            model = copy.deepcopy(trainer.raw_model)
            opt = build_optimizer(model, trainer.cfg)  # the run's groups, then its state
            opt.load_state_dict(trainer.optimizer.state_dict())
            _token_loss(model, ids).backward()
            opt.step()
            adam[i] += (base - _heldout_loss(model, evals)) / TRUTH_BATCHES
            with torch.no_grad():
                for p in model.parameters():
                    p.grad = None
            model.load_state_dict(trainer.raw_model.state_dict())
            _token_loss(model, ids).backward()
            with torch.no_grad():
                for p in model.parameters():
                    if p.grad is not None:
                        p -= 0.05 * p.grad
            sgd[i] += (base - _heldout_loss(model, evals)) / TRUTH_BATCHES
    return {"B4 one AdamW step": adam, "B4 one SGD step": sgd}


def b6_truth_reproducibility(
    store: Path, checkpoints: list[int], horizons: list[int], repeats: int, out: Path
) -> None:
    """Is there a per-domain signal to learn? The B5 truth measured again on other draws."""

    print(
        f"\nB6  is the B5 truth reproducible? The {'/'.join(map(str, horizons))}-step tilt "
        f"gains measured {repeats} times from the same checkpoint with other label draws "
        "(sampler seed), llama-1m, uniform + floor run, seed 0."
    )
    print(
        "    Spearman between repeats (mean over pairs); signal share = 1 - (repeat-noise "
        "variance of the mean gain) / (its variance across domains), floored at 0; the repeat "
        "noise includes the shift common to all domains (the shared no-tilt arm), so the share "
        "is a lower bound and the Spearman is the fairer measure"
    )
    acodm = {"train_actor": False, "exploration": "none"}
    trainer, evals = _truth_trainer(store, acodm, max(checkpoints), out / "truth-repeats")
    for ckpt in checkpoints:
        while trainer.step < ckpt:
            trainer.run_step()
        for horizon in horizons:
            gains = np.stack(
                [
                    _tilt_truth(trainer, evals, horizon, label_seed=10_000 + r)
                    for r in range(repeats)
                ]
            )
            pairs = [
                _spearman(gains[a], gains[b]) for a in range(repeats) for b in range(a + 1, repeats)
            ]
            mean = gains.mean(axis=0)
            noise = float(gains.var(axis=0, ddof=1).mean()) / repeats
            between = float(mean.var(ddof=1))
            share = max(between - noise, 0.0) / between if between > 0 else 0.0
            cells = " ".join(f"{g:+.4f}" for g in mean)
            print(
                f"    step {ckpt:>3}, {horizon:>2} steps: Spearman between repeats "
                f"{np.mean(pairs):+.2f} (pairs {' '.join(f'{p:+.2f}' for p in pairs)}); signal "
                f"share {share:.2f}; mean gain per domain [{cells}] nats, repeat sd "
                f"{np.sqrt(gains.var(axis=0, ddof=1).mean()):.4f}"
            )


def _truth_trainer(
    store: Path, acodm: dict[str, Any], steps: int, folder: Path
) -> tuple[Any, list[torch.Tensor]]:
    """A uniform + floor llama-1m run (seed 0) and the 16 first validation windows per domain
    on which the truths are measured."""
    from mixlab.train.loop import Trainer

    trainer = Trainer(
        _config(store, {"name": "acodm", "acodm": acodm}, "llama-1m", steps, 0), folder
    )
    evals = [
        torch.from_numpy(_first_windows(trainer.store.tokens(d, "val"), 16))
        for d in trainer.domains
    ]
    return trainer, evals


def _tilt_truth(
    trainer: Any, evals: list[torch.Tensor], horizon: int, label_seed: int | None = None
) -> np.ndarray:
    """Held-out gain of `horizon` steps tilted toward each domain, against no tilt.

    ``label_seed`` draws the arms' domain labels from another stream (the windows each domain
    serves stay in the same order)."""
    snap = (
        copy.deepcopy(trainer.raw_model.state_dict()),
        copy.deepcopy(trainer.optimizer.state_dict()),
        copy.deepcopy(trainer.scheduler.state_dict()),
        copy.deepcopy(trainer.sampler.state_dict()),
    )
    k = len(trainer.domains)
    seed = trainer.sampler.seed

    def arm(weights: np.ndarray) -> float:
        trainer.raw_model.load_state_dict(snap[0])
        trainer.optimizer.load_state_dict(copy.deepcopy(snap[1]))
        trainer.scheduler.load_state_dict(snap[2])
        trainer.sampler.seed = seed
        trainer.sampler.load_state_dict(copy.deepcopy(snap[3]))
        if label_seed is not None:
            trainer.sampler.seed = label_seed
        trainer.sampler.set_weights(weights)
        for _ in range(horizon):
            trainer.train_step(trainer.sampler.next_step())
        return _heldout_loss(trainer.raw_model, evals)

    uniform = np.full(k, 1.0 / k)
    base = arm(uniform)
    gains = np.zeros(k)
    for i in range(k):
        logits = np.log(uniform)
        logits[i] += 1.0
        gains[i] = base - arm(np.exp(logits) / np.exp(logits).sum())
    trainer.raw_model.load_state_dict(snap[0])
    trainer.optimizer.load_state_dict(copy.deepcopy(snap[1]))
    trainer.scheduler.load_state_dict(snap[2])
    trainer.sampler.seed = seed
    trainer.sampler.load_state_dict(copy.deepcopy(snap[3]))
    trainer.sampler.set_weights(uniform)
    return gains


def _token_loss(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    from mixlab.model.losses import token_losses

    return token_losses(model(input_ids=ids).logits, ids).mean()


def _mean_loss(model: torch.nn.Module, windows: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack([_token_loss(model, w) for w in windows]).mean()


def _flat_grad(model: torch.nn.Module, loss_fn: Any) -> torch.Tensor:
    params = list(model.parameters())
    grads = torch.autograd.grad(loss_fn(model), params, allow_unused=True)
    flat = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]
    return torch.cat([g.flatten() for g in flat]).double()


def _domain_gradients(trainer: Any, seed: int) -> np.ndarray:
    """Per-domain mean gradients of one mixed batch at the current parameters (no step)."""
    from mixlab.model.losses import token_losses

    probes = trainer.probes
    gen = np.random.default_rng(seed)
    k = len(trainer.domains)
    rows, ids = [], []
    for n in range(16):
        d = n % k if n < k else int(gen.integers(k))
        rows.append(
            _train_windows(trainer.store.tokens(trainer.domains[d], "train"), 1, seed + n)[0]
        )
        ids.append(d)
    batch = torch.from_numpy(np.stack(rows))
    probes.capture.begin(torch.tensor(ids))
    loss = token_losses(trainer.raw_model(input_ids=batch).logits, batch)
    grads = [m.weight for m in probes.capture.modules]
    torch.autograd.grad(loss.sum(), grads)
    probes.capture.stop()
    sums = probes.capture.collect()
    counts = np.bincount(ids, minlength=k) * (batch.shape[1] - 1)
    return sums / np.maximum(counts, 1)[:, None]


def _first_windows(tokens: np.ndarray, n: int) -> np.ndarray:
    n = min(n, tokens.shape[0] // 128)
    return np.asarray(tokens[: n * 128], dtype=np.int64).reshape(n, 128)


def _train_windows(tokens: np.ndarray, n: int, seed: int) -> np.ndarray:
    gen = np.random.default_rng(seed)
    starts = gen.integers(0, tokens.shape[0] - 129, size=n)
    return np.stack([np.asarray(tokens[s : s + 128], dtype=np.int64) for s in starts])


@torch.no_grad()
def _heldout_loss(model: torch.nn.Module, windows: list[torch.Tensor]) -> float:
    """Mean over the domains of the mean held-out log-loss (= log geo-ppl)."""
    from mixlab.model.losses import token_losses

    return float(np.mean([token_losses(model(input_ids=w).logits, w).mean() for w in windows]))


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seeds", type=int, default=4, help="seeds of the synthetic runs")
    ap.add_argument("--updates", type=int, default=600, help="agent updates per synthetic run")
    ap.add_argument("--lm", action="store_true", help="also run the LM measurements B1-B6")
    ap.add_argument("--store", default="mixlab-demo/store", help="the store mixlab demo made")
    ap.add_argument("--steps", type=int, default=300, help="LM steps of the B1 run")
    ap.add_argument("--lm-seed", type=int, default=0, help="seed of the B1 run")
    ap.add_argument("--workdir", help="where the LM runs go (default: a temporary folder)")
    ap.add_argument(
        "--parts",
        default="b1,b2,b4,b6",
        help="LM parts to run, comma-separated from b1 (B1+B3), b2, b4 (B4+B5), b6",
    )
    ap.add_argument(
        "--b6-checkpoints", default="60,200", help="B6: steps at which the truth is repeated"
    )
    ap.add_argument("--b6-horizons", default="20,50", help="B6: tilt lengths in steps")
    ap.add_argument("--b6-repeats", type=int, default=3, help="B6: repeats per measurement")
    args = ap.parse_args()
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    parts = {p.strip() for p in args.parts.split(",")}
    if not args.lm or parts >= {"b1", "b2", "b4", "b6"}:
        a1_vertex(args.seeds, args.updates)
        a2_zero_sum(400)
        a3_critic_extrapolation(args.seeds, args.updates)
        a4_exploration(2000)
    if not args.lm:
        return
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.workdir) if args.workdir else Path(tmp)
        store = Path(args.store)
        if "b1" in parts:
            b1_b3_paper_run(store, args.steps, args.lm_seed, out)
        if "b2" in parts:
            b2_scale_dependent_state(store, 120, out)
        if "b4" in parts:
            b4_b5_reward_vs_truth(store, [60, 150, 250], 8, 20, out)
        if "b6" in parts:
            b6_truth_reproducibility(
                store,
                [int(c) for c in args.b6_checkpoints.split(",")],
                [int(h) for h in args.b6_horizons.split(",")],
                args.b6_repeats,
                out,
            )


if __name__ == "__main__":
    main()
