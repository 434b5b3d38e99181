"""What AC-ODM costs per training step: ``acodm`` (online and frozen) vs ``uniform``.

All trainers use the same model preset, init, batch geometry and store, and each runs a few
steps first so AC-ODM is past its warm-up (the main phase: critic + actor updates each step,
or the frozen actor only). Steps then alternate in blocks (uniform, online, online with the
agent updated every 4th step, frozen, the paper variant online, ...) so machine noise hits all
of them alike. Per mode it prints the step time (the median without the held-out pass plus
that pass's mean cost per step: it runs on one step in ``heldout_every``), its overhead over
``uniform`` (and the median of per-block ratios, steadier on a busy machine), and where the
time goes: the gradient-capture hooks (``capture``), the held-out pass of the mixlab variant
averaged per step (``heldout``), and the policy update incl. the agent (``policy``).

``online`` is the mixlab variant with the held-out alignment reward: training-gradient capture
every step plus one small held-out forward/backward every 10 steps; ``loss`` is the mixlab
variant with ``reward: loss`` (no probe inside the model: the agent only), ``progress`` the same
with ``reward: progress`` (plus its per-domain loss history), ``progress_heldout`` that with
the estimate on held-out text (``progress_loss: heldout``: a forward of 8 fixed validation
windows per domain every 40 steps, no backward), ``gain`` that with the progress
estimate in the state (``state_gain``); ``frozen`` is a mixlab proxy policy driving the run (no
probe inside the model at all), ``frozen_gain`` a ``gain`` policy file driving it (the frozen
target keeps the loss history to build its state); ``paper`` is
``variant: paper`` online (capture + weight norms, no held-out pass).

Peak memory: each mode also runs in a fresh subprocess for ``--memory-steps`` steps and
reports its peak RSS (``ru_maxrss``), so the figure includes Python and torch themselves, as
a user's process would.

Prints ``RESULT`` lines with the time overhead of each mode (targets: frozen <= 2%, online
<= 5%).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
from _common import bench_config, demo_store, interleaved, median, step_parser, workdir

MODES = (
    "uniform",
    "online",
    "online_k4",
    "loss",
    "progress",
    "progress_heldout",
    "gain",
    "frozen",
    "frozen_gain",
    "paper",
)
# frozen mode -> the online mode whose policy file (saved after its warm-up) drives it
POLICY_SOURCES = {"frozen": "online", "frozen_gain": "gain"}
WARMUP = 12  # AC-ODM warm-up steps in the benchmark (the main phase is what is measured)


def policy_file(root: Path, source: str) -> Path:
    return root / f"bench-{source}.acodm.pt"


def make_trainer(args: argparse.Namespace, mode: str, root: Path) -> Any:
    from mixlab.train.loop import Trainer

    mixing: dict[str, Any] = {"name": "uniform"}
    if mode != "uniform":
        mixing = {
            "name": "acodm",
            "acodm": {
                "warmup_steps": WARMUP,
                "batch_size": 8,
                "agent_update_every": 4 if mode == "online_k4" else 1,
                "agent_threads": args.agent_threads,
                **({"variant": "paper"} if mode == "paper" else {}),
                **({"reward": "heldout_alignment"} if mode.startswith("online") else {}),
                **({"reward": mode} if mode in ("loss", "progress") else {}),
                **(
                    {"reward": "progress", "progress_loss": "heldout"}
                    if mode == "progress_heldout"
                    else {}
                ),
                **({"reward": "progress", "state_gain": True} if mode == "gain" else {}),
                **({"state_gain": True} if mode == "frozen_gain" else {}),
            },
        }
        if mode in POLICY_SOURCES:
            mixing["policy_in"] = str(policy_file(root, POLICY_SOURCES[mode]))
    cfg = bench_config(
        demo_store(root),
        preset=args.preset,
        mixing=mixing,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        precision=args.precision,
        threads=args.threads,
    )
    # The demo's evaluation (8,192 tokens per domain) leaves validation text for the held-out
    # reward; the default (100,000) would score every demo split whole.
    cfg.eval.max_tokens_per_domain = 8192
    return Trainer(cfg, root / f"bench-acodm-{mode}")


def step_time(times: list[float], parts: list[dict[str, float]]) -> float:
    """Median step time without the held-out pass, plus that pass's mean cost per step.

    The held-out pass runs on one step in ``heldout_every``: a median of all steps would hide
    it, a mean would let machine noise in; this amortises it exactly.
    """
    plain = [t - p["heldout"] for t, p in zip(times, parts, strict=True)]
    return median(plain) + sum(p["heldout"] for p in parts) / len(parts)


def block_ratio(
    times: dict[str, list[float]], parts: dict[str, list[dict[str, float]]], mode: str, k: int
) -> float:
    """Median over the alternation blocks of step_time(mode) / step_time(uniform)."""
    ratios = []
    for i in range(0, len(times[mode]), k):
        mine = step_time(times[mode][i : i + k], parts[mode][i : i + k])
        base = step_time(times["uniform"][i : i + k], parts["uniform"][i : i + k])
        ratios.append(mine / base)
    return median(ratios)


def memory_child(args: argparse.Namespace) -> None:
    """Train ``--memory-steps`` steps in mode ``--memory-mode``; print peak RSS in MB."""
    root = workdir(args.workdir)
    trainer = make_trainer(args, args.memory_mode, root)
    for _ in range(args.memory_steps):
        trainer.run_step()
    print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> None:
    ap = step_parser(__doc__, batch_size=32)
    ap.add_argument("--memory-steps", type=int, default=30, help="0 skips the memory runs")
    ap.add_argument("--agent-threads", type=int, default=1, help="mixing.acodm.agent_threads")
    ap.add_argument("--memory-mode", help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_mode:
        memory_child(args)
        return

    root = workdir(args.workdir)
    trainers = {}
    sources = tuple(POLICY_SOURCES.values())
    for mode in (*sources, *MODES):  # the policy files' sources first
        if mode in trainers:
            continue
        trainers[mode] = make_trainer(args, mode, root)
        for _ in range(WARMUP + 2):
            trainers[mode].run_step()
        if mode in sources:
            trainers[mode].policy.save_policy_file(policy_file(root, mode))
    parts: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}

    def stepper(mode: str) -> Any:
        def step() -> None:
            out = trainers[mode].run_step()
            parts[mode].append(
                {
                    "capture": out.get("capture_seconds", 0.0),
                    "heldout": out.get("heldout_seconds", 0.0),
                    "policy": out["policy_seconds"],
                }
            )

        return step

    times = interleaved(
        {m: stepper(m) for m in MODES}, blocks=args.blocks, per_block=args.per_block
    )
    step = {m: step_time(times[m], parts[m]) for m in MODES}
    base = step["uniform"]
    tokens = args.batch_size * args.seq_len
    print(
        f"preset {args.preset}, batch {args.batch_size}x{args.seq_len}, {args.threads} threads, "
        f"{args.precision}, {len(times['uniform'])} steps per mode (interleaved)"
    )
    print(
        f"{'mode':<11} {'step ms':>8} {'tok/s':>8} {'overhead':>9} {'per-block':>10} "
        f"{'capture':>8} {'heldout':>8} {'policy':>8}"
    )
    for m in MODES:
        t = step[m]
        cap = median([p["capture"] for p in parts[m]]) * 1e3
        held = sum(p["heldout"] for p in parts[m]) / len(parts[m]) * 1e3  # mean: 1 step in k
        pol = median([p["policy"] for p in parts[m]]) * 1e3
        print(
            f"{m:<11} {t * 1e3:>8.1f} {tokens / t:>8,.0f} {100 * (t / base - 1):>8.2f}% "
            f"{100 * (block_ratio(times, parts, m, args.per_block) - 1):>9.2f}% "
            f"{cap:>6.2f}ms {held:>6.2f}ms {pol:>6.2f}ms"
        )
    if args.memory_steps:
        rss = {}
        for m in MODES:
            cmd = [sys.executable, __file__, "--memory-mode", m, *sys.argv[1:]]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            rss[m] = json.loads(out.strip().splitlines()[-1])["peak_rss_mb"]
        print(
            "peak RSS (fresh process each, MB): "
            + ", ".join(f"{m} {v:.0f}" for m, v in rss.items())
        )
        for m in MODES[1:]:
            print(f"RESULT {m} memory overhead = {100 * (rss[m] / rss['uniform'] - 1):.2f}%")
    for m in MODES[1:]:
        print(
            f"RESULT {m} time overhead = {100 * (step[m] / base - 1):.2f}% "
            f"(per-block median {100 * (block_ratio(times, parts, m, args.per_block) - 1):.2f}%)"
        )


if __name__ == "__main__":
    main()
