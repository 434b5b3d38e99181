"""What the online mixing policies cost per step: ``odm``, ``odm-smoothed``, ``doremi-online``.

Each policy drives its own Trainer of the same preset, init, batch and store; steps alternate
in blocks with a ``uniform`` trainer (uniform, odm, odm-smoothed, doremi-online, ...) so machine
noise hits all alike. Per policy it prints the median step time, the median time of the policy
update itself (``policy``: ``Feedback`` in, weights out, set on the sampler) as a share of the
uniform step, and for ``doremi-online`` the frozen reference model's forward pass
(``reference``) separately: that is the method's real cost.

A reference run for ``doremi-online`` (the same preset, ``--reference-steps`` steps on the
natural mixture) is trained once and cached in the work folder.

Prints ``RESULT <policy> update share = x%`` lines (target: < 0.5% of a step).
"""

from __future__ import annotations

from typing import Any

import torch
from _common import bench_config, demo_store, interleaved, median, step_parser, workdir

POLICIES = ("uniform", "odm", "odm-smoothed", "doremi-online")


def main() -> None:
    ap = step_parser(__doc__)
    ap.add_argument("--reference-steps", type=int, default=40, help="steps of the reference run")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from mixlab.train.checkpoint import load_checkpoint
    from mixlab.train.loop import Trainer, train

    root = workdir(args.workdir)
    store = demo_store(root)

    def config(mixing: dict[str, Any]) -> Any:
        return bench_config(
            store,
            preset=args.preset,
            mixing=mixing,
            batch_size=args.batch_size,
            seq_len=args.seq_len,
            precision=args.precision,
            threads=args.threads,
        )

    ref_dir = root / f"bench-reference-{args.preset}-{args.reference_steps}"
    if not (ref_dir / "checkpoint.pt").exists() or not load_checkpoint(ref_dir)["finished"]:
        ref_cfg = config({"name": "natural"})
        ref_cfg.train.max_steps = args.reference_steps
        ref_cfg.train.eval_every = 0
        train(ref_cfg, ref_dir, resume=(ref_dir / "checkpoint.pt").exists())
    mixings = {
        "uniform": {"name": "uniform"},
        "odm": {"name": "odm", "odm": {"warmup_steps": 0}},
        "odm-smoothed": {"name": "odm-smoothed", "odm": {"warmup_steps": 0}},
        "doremi-online": {"name": "doremi-online", "doremi": {"reference": str(ref_dir)}},
    }
    trainers = {p: Trainer(config(m), root / f"bench-policy-{p}") for p, m in mixings.items()}
    parts: dict[str, list[dict[str, float]]] = {p: [] for p in POLICIES}

    def stepper(policy: str) -> Any:
        def step() -> None:
            out = trainers[policy].run_step()
            parts[policy].append(
                {"policy": out["policy_seconds"], "reference": out.get("reference_seconds", 0.0)}
            )

        return step

    steps = {p: stepper(p) for p in POLICIES}
    interleaved(steps, blocks=1, per_block=2)  # warm-up
    for p in POLICIES:
        parts[p].clear()
    times = interleaved(steps, blocks=args.blocks, per_block=args.per_block)
    base = median(times["uniform"])
    print(
        f"preset {args.preset}, batch {args.batch_size}x{args.seq_len}, {args.threads} threads, "
        f"{args.precision}, {len(times['uniform'])} steps per policy (interleaved)"
    )
    print(f"{'policy':<14} {'step ms':>8} {'vs uniform':>10} {'policy ms':>9} {'reference ms':>12}")
    for p in POLICIES:
        t = median(times[p])
        pol = median([x["policy"] for x in parts[p]])
        ref = median([x["reference"] for x in parts[p]])
        print(
            f"{p:<14} {t * 1e3:>8.1f} {100 * (t / base - 1):>9.2f}% {pol * 1e3:>9.3f} "
            f"{ref * 1e3:>12.1f}"
        )
    for p in POLICIES[1:]:
        share = 100 * median([x["policy"] for x in parts[p]]) / base
        print(f"RESULT {p} update share = {share:.3f}% of a uniform step (target < 0.5%)")
    ref_share = 100 * median([x["reference"] for x in parts["doremi-online"]]) / base
    print(f"RESULT doremi-online reference forward = {ref_share:.1f}% of a uniform step")


if __name__ == "__main__":
    main()
