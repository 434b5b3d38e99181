"""``mixlab doremi``: DoReMi's reference -> proxy -> weights, from one command.

The work is :func:`mixlab.train.doremi.run_doremi`.

Prints the weights per round and the ``mixlab train`` command that trains the target with them.
"""

from __future__ import annotations

import argparse
import shlex

from mixlab.cli.options import add_command, add_set_option

SUMMARY = "find static domain weights with DoReMi (reference -> proxy -> weights)"
DESCRIPTION = """\
DoReMi (arXiv 2305.10429) from one command:
  1. train a small reference model on the reference mixture (natural by default);
  2. train a proxy of the same recipe on uniform sampling with Group DRO on its excess
     loss over the reference (per token: max(proxy loss - reference loss, 0));
  3. write the proxy's time-averaged domain weights to <out>/doremi_weights.json.
With mixing.doremi.rounds > 1 the next round's reference is trained on those weights,
until they change by less than mixing.doremi.tol (L1). Model, data and step budget come
from the config (train.* applies to every run). Runs go to <out>/round_<k>/reference and
<out>/round_<k>/proxy; rerunning the same command skips finished runs and resumes an
interrupted one. Prints the weights and the command that trains the target with them.
"""

EPILOG = """\
example:
  mixlab doremi --config configs/doremi.yaml --set data.store=shards --out runs/doremi
  mixlab train --config configs/doremi.yaml --set data.store=shards mixing.name=fixed \\
      mixing.weights_file=runs/doremi/doremi_weights.json --out runs/doremi-target

knobs (mixing.doremi.*, all listed by `mixlab train --help-config`):
  eta, smoothing              Group-DRO step size (1.0) and uniform mix-in c (1e-3)
  reference_mixture           natural | uniform: what the reference is trained on
  reference                   reuse a trained reference run instead of training one
  rounds, tol                 iterated DoReMi: round k+1's reference uses round k's weights
  reference_steps, proxy_steps  run lengths (0 = train.max_steps)
  loss_normalizer, alpha_timing, proxy_sampling, lambda_init   paper vs release variants
"""


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = add_command(sub, "doremi", SUMMARY, DESCRIPTION, EPILOG)
    p.add_argument("--config", "-c", help="YAML recipe, e.g. configs/doremi.yaml")
    add_set_option(p, "override config fields, e.g. --set data.store=shards mixing.doremi.rounds=3")
    p.add_argument("--out", "-o", required=True, help="folder for the runs and the weights")
    p.set_defaults(func=cmd_doremi)
    return p


def cmd_doremi(args: argparse.Namespace) -> int:

    from mixlab.config import RunConfig
    from mixlab.train.doremi import doremi_options, run_doremi

    # The pipeline trains mixing.name=doremi proxies whatever the recipe's name says.
    cfg = RunConfig.load(args.config, [*args.set, "mixing.name=doremi"])
    result = run_doremi(cfg, args.out)
    print("\nDoReMi domain weights (token shares; DoReMi = time-averaged proxy alpha):\n")
    print(result.format_table())
    last = result.rounds[-1]
    if result.converged:
        status = f"converged: L1 change {last.change:.4f} < mixing.doremi.tol"
    else:
        status = f"mixing.doremi.rounds={doremi_options(cfg).rounds} done"
    print(f"\n{len(result.rounds)} round(s), {status}; weights: {result.weights_path}")
    target = ["mixlab", "train"] + (["--config", args.config] if args.config else [])
    target += ["--set", *args.set, "mixing.name=fixed", "mixing.doremi=null"]
    target += [f"mixing.weights_file={result.weights_path}", "--out", "runs/doremi-target"]
    print("train the target with them:\n  " + shlex.join(target))
    return 0
