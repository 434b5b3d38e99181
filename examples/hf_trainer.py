"""Hugging Face Trainer: adaptive mixing through one callback.

    pip install 'mixlab[hf-trainer]'
    python examples/hf_trainer.py                          # builds ./mixlab-demo/store first
    python examples/hf_trainer.py --store shards/ --steps 200 --out runs/hf

The Trainer is stock. ``MixingCallback`` watches the model's forward passes (per-domain loss
sums of every micro-batch) and calls ``policy.update`` after each optimiser step; the weights,
achieved shares and per-domain losses appear in the Trainer's logs as ``mix/weight/<domain>``.
Checkpoints (``--out``/checkpoint-N) also hold the mixing state, so
``trainer.train(resume_from_checkpoint=...)`` continues the mixture exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

from _common import format_mixture, open_store, parse_args, tiny_model
from transformers import Trainer, TrainingArguments

from mixlab.integrations import MixingController, MixtureDataset
from mixlab.integrations.hf_trainer import MixingCallback


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    args = parse_args(argv, "Adaptive mixing in a Hugging Face Trainer.")
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
    training_args = TrainingArguments(
        output_dir=args.out,
        max_steps=args.steps,
        per_device_train_batch_size=dataset.batch_size,
        gradient_accumulation_steps=dataset.grad_accum,
        learning_rate=3e-3,
        lr_scheduler_type="constant",
        logging_steps=args.log_every,
        save_steps=max(1, args.steps // 2),
        remove_unused_columns=False,  # keep domain_id in the batches
        ignore_data_skip=True,  # the dataset resumes itself
        dataloader_num_workers=0,
        use_cpu=True,
        report_to=[],
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=tiny_model(store, args),
        args=training_args,
        train_dataset=dataset,
        callbacks=[MixingCallback(controller)],
    )
    trainer.train()
    values = controller.log_values()
    print(f"step {controller.step_count:4d}  " + format_mixture(values, store.domains))
    return values


if __name__ == "__main__":
    main()
