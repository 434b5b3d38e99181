"""Plain PyTorch: a MixtureDataset whose mixture an adaptive policy changes while training.

    python examples/plain_pytorch.py                       # builds ./mixlab-demo/store first
    python examples/plain_pytorch.py --store shards/ --steps 200 --policy odm

The loop is an ordinary PyTorch loop over a ``DataLoader``. Two mixlab lines close the
mixing loop: ``controller.observe_losses(...)`` per micro-batch (per-domain loss sums from the
per-token losses the loop computes anyway) and ``controller.step()`` after each optimiser
step (``policy.update(feedback)``, then new weights for the dataset). Prints the mixture and
per-domain training loss every ``--log-every`` steps.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from _common import format_mixture, open_store, parse_args, tiny_model
from torch.utils.data import DataLoader

from mixlab.integrations import MixingController, MixtureDataset
from mixlab.model.losses import masked_mean, target_mask, token_losses


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    args = parse_args(argv, "Adaptive mixing in a plain PyTorch loop.")
    torch.manual_seed(0)
    store = open_store(args.store)
    dataset = MixtureDataset(
        store,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        max_steps=args.steps,
    )
    controller = MixingController(
        dataset, args.policy, total_steps=args.steps, options={"odm": {"warmup_steps": 5}}
    )
    model = tiny_model(store, args)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    loader = DataLoader(dataset, batch_size=dataset.batch_size)  # num_workers=0
    for i, batch in enumerate(loader, start=1):
        logits = model(input_ids=batch["input_ids"]).logits
        tok_loss = token_losses(logits, batch["labels"])  # (B, L-1), fp32
        loss = masked_mean(tok_loss, target_mask(batch["labels"])) / dataset.grad_accum
        loss.backward()
        controller.observe_losses(tok_loss, batch["labels"], batch["domain_id"])
        if i % dataset.grad_accum == 0:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            controller.step()  # <- the mixture learns from this step
            step = controller.step_count
            if step % args.log_every == 0 or step == args.steps:
                print(f"step {step:4d}  " + format_mixture(controller.log_values(), store.domains))
    return controller.log_values()


if __name__ == "__main__":
    main()
