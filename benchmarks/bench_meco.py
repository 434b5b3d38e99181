"""MeCo vs a baseline at the same budget on the demo corpus: tokens to the baseline's loss.

Runs (same seed, model, batch 16 x 128, steps, LR schedule, natural mixture):

* ``baseline`` — packed windows of the token stream, no metadata (``meco.enabled=false``);
* ``meco``     — each document packed with its ``"URL: {host}\\n\\n"`` prefix (masked from the
  loss) for the first 90% of steps, then plain documents (``meco.enabled=true``, defaults);
* ``control``  — with ``--control``: MeCo's document packing without any prefix
  (``meco.cooldown_fraction=1``), to separate the prefix from the packing.

The metric m is ``eval_uncond/natural_loss``: the token-weighted loss on the same validation
*document* tokens, without prefix, for every run (:mod:`mixlab.eval.conditional`), evaluated
every ``--eval-every`` steps. Steps to target (METHODS.md §5, no interpolation): m* is the
baseline's best value (first reached at eval step S_b); s* is a run's first eval step with
m <= m*. Tokens are training tokens consumed up to that step, both *context* tokens (non-padding
positions fed to the model, metadata included) and *loss* tokens (targets): the baseline feeds
S·L context and S·(L−1) loss tokens per step; MeCo's counts come from its logged totals.
"% fewer" = 100·(1 − tokens(s*) / tokens(S_b)). At the end, each run's final model is scored
``uncond`` vs ``cond_true`` (each document's own prefix) on ``--final-eval-tokens`` per domain.
One seed: a mechanism check, not a claim with a confidence interval.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch
from _common import workdir

from mixlab.config import RunConfig
from mixlab.train.loop import Trainer


class _DocEvalTrainer(Trainer):
    """Scores only the cheap per-document ``uncond`` eval between steps; the full one at T."""

    def run_eval(self) -> Any:
        if self.step < self.cfg.train.max_steps:
            model = self.model
            self._emit({"step": self.step, **self.evaluator.document_modes(model)})
            return self.last_eval
        return super().run_eval()


def run_config(store: Path, args: argparse.Namespace, meco: dict[str, Any] | None) -> RunConfig:
    from mixlab.demo import demo_config

    raw = demo_config(
        store, steps=args.steps, preset=args.preset, method="natural", seed=args.seed
    ).to_dict()
    raw["train"].update(
        precision=args.precision,
        threads=args.threads,
        progress=False,
        eval_every=args.eval_every,
        log_every=args.eval_every,
        checkpoint_every=args.steps,
    )
    raw["eval"].update(max_tokens_per_domain=args.eval_tokens, document_modes=["uncond"])
    raw["meco"] = {"enabled": meco is not None, **(meco or {})}
    cfg = RunConfig.from_dict(raw)
    cfg.validate()
    return cfg


def train_run(name: str, cfg: RunConfig, root: Path) -> tuple[Trainer, float]:
    import shutil

    run_dir = root / "runs" / name
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    cfg.save(run_dir / "config.yaml")
    print(f"[{name}] training {cfg.model.preset} for {cfg.train.max_steps} steps -> {run_dir}")
    start = time.perf_counter()
    trainer = _DocEvalTrainer(cfg, run_dir)
    trainer.fit()
    return trainer, time.perf_counter() - start


def curve(run_dir: Path) -> tuple[list[int], list[float], dict[int, dict[str, Any]]]:
    from mixlab.train.callbacks import read_metrics

    records = read_metrics(run_dir)
    evals = [r for r in records if "eval_uncond/natural_loss" in r]
    train = {r["step"]: r for r in records if "train/loss" in r}
    return [r["step"] for r in evals], [r["eval_uncond/natural_loss"] for r in evals], train


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--steps", type=int, default=300, help="training steps of every run")
    ap.add_argument("--preset", default="llama-1m")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-every", type=int, default=0, help="default: 2%% of --steps")
    ap.add_argument("--eval-tokens", type=int, default=4096, help="val tokens/domain, curve")
    ap.add_argument("--final-eval-tokens", type=int, default=16384, help="val tokens/domain, end")
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "auto"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--control", action="store_true", help="also run the no-prefix packing run")
    ap.add_argument("--workdir")
    args = ap.parse_args()
    args.eval_every = args.eval_every or max(1, args.steps // 50)
    torch.set_num_threads(args.threads)

    from mixlab.demo import prepare_demo_store
    from mixlab.eval.conditional import DocumentEvaluator
    from mixlab.eval.metrics import baseline_target, steps_to_target

    root = workdir(args.workdir) / "meco"
    store_path = prepare_demo_store(root)
    runs: dict[str, dict[str, Any] | None] = {"baseline": None, "meco": {}}
    if args.control:
        runs["control"] = {"cooldown_fraction": 1.0}

    results: dict[str, dict[str, Any]] = {}
    for name, meco in runs.items():
        cfg = run_config(store_path, args, meco)
        trainer, seconds = train_run(name, cfg, root)
        evaluator = DocumentEvaluator(
            trainer.store,
            seq_len=cfg.data.seq_len,
            meco=cfg.meco,
            max_tokens_per_domain=args.final_eval_tokens,
            batch_size=cfg.eval.batch_size,
        )
        final = evaluator.evaluate_modes(trainer.model, ["uncond", "cond_true"])
        steps, values, train = curve(trainer.run_dir)
        s, L = trainer.sampler.sequences_per_step, cfg.data.seq_len
        if meco is None:
            tokens = {t: (t * s * L, t * s * (L - 1)) for t in steps}
        else:
            tokens = {
                t: (train[t]["train/context_tokens_total"], train[t]["train/loss_tokens_total"])
                for t in steps
            }
        assert trainer.last_eval is not None
        results[name] = {
            "seconds": seconds,
            "steps": steps,
            "values": values,
            "tokens": tokens,
            "uncond": final["uncond"].aggregates()["natural_loss"],
            "cond_true": final["cond_true"].aggregates()["natural_loss"],
            "window": trainer.last_eval.aggregates()["natural_loss"],
        }

    s_b, target = baseline_target(results["baseline"]["steps"], results["baseline"]["values"])
    base_ctx, base_loss = results["baseline"]["tokens"][s_b]
    print(
        f"\n{args.preset}, {args.steps} steps of 16 x 128, seed {args.seed}, {args.precision}; "
        f"curve: eval_uncond/natural_loss every {args.eval_every} steps on "
        f"{args.eval_tokens} val tokens/domain; final evals on {args.final_eval_tokens}\n"
    )
    header = (
        f"{'run':<9} {'s/step*':>7} {'final m':>8} {'windows':>8} {'uncond':>8} "
        f"{'cond_true':>9} {'cond-unc':>9}  steps/context/loss tokens to m*"
    )
    print(header)
    summary = []
    for name, r in results.items():
        s_star = steps_to_target(r["steps"], r["values"], target)
        if s_star is None:
            reach = "not reached"
        else:
            ctx, loss = r["tokens"][s_star]
            reach = (
                f"{s_star} / {ctx:,} / {loss:,} "
                f"({100 * (1 - ctx / base_ctx):+.1f}% ctx, {100 * (1 - loss / base_loss):+.1f}% "
                "loss tokens fewer)"
            )
            if name != "baseline":
                summary.append(f"{name} {100 * (1 - loss / base_loss):.1f}% fewer loss tokens")
        print(
            f"{name:<9} {r['seconds'] / args.steps:>7.3f} {r['values'][-1]:>8.4f} "
            f"{r['window']:>8.4f} {r['uncond']:>8.4f} {r['cond_true']:>9.4f} "
            f"{r['cond_true'] - r['uncond']:>+9.4f}  {reach}"
        )
    print(
        f"\nm* = {target:.4f} (baseline's best eval_uncond/natural_loss, first at step {s_b}: "
        f"{base_ctx:,} context / {base_loss:,} loss tokens). *wall clock incl. evals. "
        "'windows' = the standard eval "
        "(natural loss on stream windows); uncond / cond_true = per-document natural loss "
        "without / with each document's own prefix."
    )
    meco = results["meco"]
    print(
        f"RESULT vs baseline: {'; '.join(summary) or 'm* not reached'}; meco "
        f"cond_true - uncond = {meco['cond_true'] - meco['uncond']:+.4f} "
        "nats/token"
    )


if __name__ == "__main__":
    main()
