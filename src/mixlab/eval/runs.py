"""Evaluate saved runs: rebuild the model from a run folder and score its validation split.

``evaluate_run`` reads ``config.yaml``'s twin stored inside ``checkpoint.pt`` (so a checkpoint
file alone is enough), rebuilds the model for the run's shard store, loads the weights and
computes per-domain validation loss/perplexity with :func:`mixlab.eval.perplexity.evaluate`.
``load_run`` (the model rebuilt and loaded, with its config and store) is shared with
:mod:`mixlab.model.export` and :mod:`mixlab.eval.harness`. ``compare_table`` lays several runs
side by side (rows = domains and aggregates). ``evaluate_run_modes`` scores a run's
validation *documents* under the MeCo eval modes (``uncond`` / ``cond_true`` / ``cond_fixed``,
:mod:`mixlab.eval.conditional`) and writes ``eval_modes.json``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from mixlab.config import RunConfig
from mixlab.data.store import ShardStore
from mixlab.errors import ResumeError
from mixlab.eval.conditional import DocumentEvaluator
from mixlab.eval.perplexity import EvalResult, evaluate
from mixlab.files import write_json
from mixlab.tables import text_table
from mixlab.train.build import model_from_config, resolve_precision
from mixlab.train.checkpoint import load_checkpoint, resolve_checkpoint
from mixlab.train.loop import eval_record
from mixlab.train.run_folder import RunFolder

if TYPE_CHECKING:
    from transformers import PreTrainedModel


@dataclass(frozen=True, eq=False)
class SavedRun:
    """A run's trained model rebuilt from its checkpoint, with the config and store it used."""

    checkpoint: Path
    state: dict[str, Any]
    cfg: RunConfig
    store: ShardStore
    model: PreTrainedModel


def load_run(run: str | Path) -> SavedRun:
    """Rebuild the model of a run folder or checkpoint file and load its weights.

    ResumeError when the run's store changed since training (other fingerprint).
    """
    ckpt_path = resolve_checkpoint(run)
    state = load_checkpoint(ckpt_path)
    cfg = RunConfig.from_dict(state["config"])
    store = ShardStore(cfg.data.store)
    if store.fingerprint != state["store_fingerprint"]:
        raise ResumeError(
            f"{ckpt_path}: trained on a store with fingerprint {state['store_fingerprint']}, but "
            f"{cfg.data.store} now has {store.fingerprint}; evaluate against the original store"
        )
    model = cast("PreTrainedModel", model_from_config(cfg, store))
    model.load_state_dict(state["model"])
    model.eval()
    return SavedRun(ckpt_path, state, cfg, store, model)


def evaluate_run(
    run: str | Path, *, max_tokens_per_domain: int | None = None, write: bool = True
) -> EvalResult:
    """Score a run folder or checkpoint file; writes ``eval.json`` next to the checkpoint."""
    saved = load_run(run)
    cfg, state, ckpt_path = saved.cfg, saved.state, saved.checkpoint
    result = evaluate(
        saved.model,
        saved.store,
        seq_len=cfg.data.seq_len,
        batch_size=cfg.eval.batch_size,
        max_tokens_per_domain=max_tokens_per_domain or cfg.eval.max_tokens_per_domain,
        autocast_dtype=resolve_precision(cfg.train.precision, saved.model),
    )
    if write:
        record = eval_record(result, int(state["step"]))
        write_json(RunFolder(ckpt_path.parent).eval, record, nonfinite_key="nonfinite")
    return result


def evaluate_run_modes(
    run: str | Path,
    modes: Sequence[str],
    *,
    prefix: str | None = None,
    max_tokens_per_domain: int | None = None,
    write: bool = True,
) -> dict[str, EvalResult]:
    """Score a run's validation documents under each MeCo mode; writes ``eval_modes.json``.

    ``prefix`` is the ``cond_fixed`` prefix text (default: the run's ``eval.fixed_prefix``).
    The prefix settings of ``cond_true`` (variant, template, missing metadata) are the run's
    ``meco`` section, also for a run trained without MeCo.
    """
    saved = load_run(run)
    cfg, ckpt_path = saved.cfg, saved.checkpoint
    fixed = prefix if prefix is not None else cfg.eval.fixed_prefix
    evaluator = DocumentEvaluator(
        saved.store,
        seq_len=cfg.data.seq_len,
        meco=cfg.meco,
        max_tokens_per_domain=max_tokens_per_domain or cfg.eval.max_tokens_per_domain,
        batch_size=cfg.eval.batch_size,
    )
    results = evaluator.evaluate_modes(
        saved.model,
        modes,
        fixed_prefix=fixed,
        autocast_dtype=resolve_precision(cfg.train.precision, saved.model),
    )
    if write:
        record = {
            "step": int(saved.state["step"]),
            "fixed_prefix": fixed if "cond_fixed" in modes else None,
            "modes": {mode: r.to_dict() for mode, r in results.items()},
        }
        folder = RunFolder(ckpt_path.parent)
        if ckpt_path.name == folder.CHECKPOINT:
            write_json(folder.eval_modes, record)
        else:  # another checkpoint file of the folder: its own modes file
            write_json(folder.path / f"{ckpt_path.stem}.modes.json", record)
    return results


def compare_table(results: Mapping[str, EvalResult]) -> str:
    """Per-domain perplexity of several runs side by side, plus the aggregate rows."""
    names = [Path(r).name or str(r) for r in results]
    first = next(iter(results.values()))
    per_run = [dict(zip(r.domains, r.losses(), strict=True)) for r in results.values()]
    rows = [
        [d, *(f"{math.exp(p[d]):.3f}" if d in p else "-" for p in per_run)] for d in first.domains
    ]
    aggs = [r.aggregates() for r in results.values()]
    footer = [
        [key, *(f"{a[key]:.3f}" for a in aggs)]
        for key in ("mean_ppl", "geo_ppl", "worst_ppl", "natural_ppl")
    ]
    return text_table(
        ["domain (val ppl)", *names],
        rows,
        sep=" ",
        min_widths=(8, *(12 for _ in names)),
        rule=None,
        footer=footer,
    )
