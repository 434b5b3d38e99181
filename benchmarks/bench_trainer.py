"""Trainer step time vs a bare PyTorch loop on the same model and batch.

mixlab side: ``Trainer.train_step(sampler.next_step())`` — sampling, forward, per-token fp32
loss, per-domain loss sums, backward, clipping, AdamW, LR schedule — plus the policy update
the loop does each step. Bare side: the same model (same preset and init), the same batch
shape, AdamW + LambdaLR + clipping, ``model(input_ids, labels=labels).loss.backward()`` on
pre-sampled tensors. Steps alternate in blocks (A, B, A, B, ...) so machine noise hits both.

Prints the median step times and ``RESULT trainer/bare throughput ratio`` (target >= 0.97).
"""

from __future__ import annotations

import torch
from _common import bench_config, demo_store, interleaved, median, step_parser, workdir


def main() -> None:
    ap = step_parser(__doc__, per_block=5)
    ap.add_argument("--policy", default="natural", help="mixing policy on the mixlab side")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from mixlab.train.loop import Trainer, build_optimizer, lr_factor, model_from_config

    root = workdir(args.workdir)
    store = demo_store(root)
    cfg = bench_config(
        store,
        preset=args.preset,
        mixing={"name": args.policy},
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        precision=args.precision,
        threads=args.threads,
    )
    trainer = Trainer(cfg, root / "bench-run")

    bare_model = model_from_config(cfg, trainer.store)
    bare_model.train()
    bare_opt = build_optimizer(bare_model, cfg)
    t = cfg.train
    bare_sched = torch.optim.lr_scheduler.LambdaLR(
        bare_opt, lambda s: lr_factor(s, t.warmup_steps, t.max_steps, t.min_lr_ratio)
    )
    batches = [trainer.sampler.next_step()[0] for _ in range(8)]

    def mixlab_step() -> None:
        trainer.run_step()

    i = [0]

    def bare_step() -> None:
        b = batches[i[0] % len(batches)]
        i[0] += 1
        loss = bare_model(input_ids=b["input_ids"], labels=b["labels"]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(bare_model.parameters(), t.grad_clip)
        bare_opt.step()
        bare_sched.step()
        bare_opt.zero_grad(set_to_none=True)

    interleaved({"mixlab": mixlab_step, "bare": bare_step}, blocks=1, per_block=3)  # warm-up
    times = interleaved(
        {"mixlab": mixlab_step, "bare": bare_step}, blocks=args.blocks, per_block=args.per_block
    )
    tm, tb = median(times["mixlab"]), median(times["bare"])
    tokens = args.batch_size * args.seq_len
    print(
        f"preset {args.preset}, batch {args.batch_size}x{args.seq_len}, {args.threads} threads, "
        f"mixlab {args.precision} / bare fp32, {len(times['mixlab'])} steps each"
    )
    print(
        f"mixlab step {tm * 1e3:.1f} ms ({tokens / tm:,.0f} tok/s); "
        f"bare step {tb * 1e3:.1f} ms ({tokens / tb:,.0f} tok/s)"
    )
    print(f"RESULT trainer/bare throughput ratio = {tb / tm:.3f} (target >= 0.97)")


if __name__ == "__main__":
    main()
