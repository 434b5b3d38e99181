"""Lightning: adaptive mixing through one callback; the LightningModule knows nothing of it.

    pip install 'mixlab[lightning]'
    python examples/lightning_trainer.py                   # builds ./mixlab-demo/store first
    python examples/lightning_trainer.py --store shards/ --steps 200 --out runs/lightning

``MixingCallback`` watches the wrapped Hugging Face model's forward passes (per-domain loss
sums of every micro-batch) and calls ``policy.update`` after each optimiser step; its state
(policy, dataset position) is saved in Lightning checkpoints, so ``fit(ckpt_path=...)``
continues the mixture exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from _common import format_mixture, open_store, parse_args, tiny_model
from torch.utils.data import DataLoader

from mixlab.integrations import MixingController, MixtureDataset
from mixlab.integrations.lightning import MixingCallback


class CausalLM(pl.LightningModule):
    """A plain LightningModule around a Hugging Face causal LM."""

    def __init__(self, model: torch.nn.Module, lr: float = 3e-3) -> None:
        super().__init__()
        self.model = model
        self.lr = lr

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out = self.model(input_ids=batch["input_ids"], labels=batch["labels"])
        self.log("train/loss", out.loss)
        return out.loss

    def configure_optimizers(self) -> Any:
        return torch.optim.AdamW(self.parameters(), lr=self.lr)


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    args = parse_args(argv, "Adaptive mixing in a Lightning Trainer.")
    pl.seed_everything(0, verbose=False)
    store = open_store(args.store)
    dataset = MixtureDataset(
        store, seq_len=args.seq_len, batch_size=args.batch_size, grad_accum=args.grad_accum
    )
    controller = MixingController(
        dataset, args.policy, total_steps=args.steps, options={"odm": {"warmup_steps": 5}}
    )
    trainer = pl.Trainer(
        max_steps=args.steps,
        accumulate_grad_batches=dataset.grad_accum,
        callbacks=[MixingCallback(controller)],
        default_root_dir=args.out,
        accelerator="cpu",
        devices=1,
        log_every_n_steps=args.log_every,
        logger=pl.loggers.CSVLogger(args.out),
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    loader = DataLoader(dataset, batch_size=dataset.batch_size)  # num_workers=0
    trainer.fit(CausalLM(tiny_model(store, args)), train_dataloaders=loader)
    values = controller.log_values()
    print(f"step {controller.step_count:4d}  " + format_mixture(values, store.domains))
    return values


if __name__ == "__main__":
    main()
