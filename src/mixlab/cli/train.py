"""``mixlab train``: train a causal LM on a shard store with a mixing policy (``--resume``).

The work is :func:`mixlab.train.loop.train`; ``--help-config`` lists every config field, the
mixing policies and the model presets. ``--resume`` without ``--config``/``--set`` continues
with the config saved in the checkpoint.
"""

from __future__ import annotations

import argparse

from mixlab.cli.options import add_command, add_set_option
from mixlab.errors import ConfigError

SUMMARY = "train a causal LM on a shard store with a mixing policy"
DESCRIPTION = """\
Train a Hugging Face causal LM on a prepared shard store. The mixing policy (mixing.name)
sets the domain weights and may update them from per-domain training losses. The run folder
gets config.yaml (resolved config), metrics.jsonl, checkpoint.pt (atomic; --resume continues
it exactly) and eval.json. Show every config field with --help-config.
"""


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = add_command(sub, "train", SUMMARY, DESCRIPTION)
    p.add_argument("--config", "-c", help="YAML recipe, e.g. configs/tiny_cpu.yaml")
    add_set_option(p, "override config fields, e.g. --set mixing.name=uniform train.max_steps=200")
    p.add_argument("--out", "-o", help="run folder (required unless --help-config)")
    p.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its checkpoint"
    )
    p.add_argument("--help-config", action="store_true", help="list every config field and exit")
    p.set_defaults(func=cmd_train)
    return p


def cmd_train(args: argparse.Namespace) -> int:
    from mixlab.config import RunConfig, describe_fields

    if args.help_config:
        from mixlab.mixing.base import available_policies
        from mixlab.model.factory import describe_presets

        print(describe_fields())
        print("\nmixing policies: " + ", ".join(available_policies()))
        print("\nmodel presets:\n" + describe_presets())
        return 0
    if not args.out:
        raise ConfigError("--out: name the run folder, e.g. --out runs/natural")
    from mixlab.train.loop import train

    if args.resume and not args.config and not args.set:
        from mixlab.train.checkpoint import load_checkpoint

        cfg = RunConfig.from_dict(load_checkpoint(args.out)["config"])
    else:
        cfg = RunConfig.load(args.config, args.set)
    trainer = train(cfg, args.out, resume=args.resume)
    if not trainer.dist.is_main:  # under torchrun rank 0 prints the result
        return 0
    if trainer.last_eval is not None:
        print(trainer.last_eval.format_table())
    else:
        print(f"{args.out} had finished at step {trainer.step}; its evaluation is in eval.json")
    print(f"\nrun folder: {args.out}")
    return 0
