"""``train.branch_from``: start a run from a trunk run's state at step b, with its own mixture.

Why
    At mixlab's scale a run sometimes lags from its first steps (it leaves a loss plateau later
    than its seed-mates) and stays behind: the report's onset note finds the seed-to-seed part
    of the paired differences largely in place by 10-40% of a run. Arms that *share* the first b
    steps cannot lag apart there: one trunk per seed, trained once at a common mixture, and
    every arm continuing from its state. Measured (demo corpus, llama-1m, 300 steps, `natural`
    vs `uniform`, 5 seeds, trunk: `uniform` to step 30): unbranched +6.3 / +7.3 / +9.5 / +29.1
    / +3.0% geo_ppl (seed 3's `natural` run lagged), branched +0.9 / +4.7 / +7.2 / +3.7 /
    +3.8%. The lagging seed is gone (std 2.2 against 10.4), the ordinary spread is not (2.6
    against 2.7 over the other four seeds), and the measured effect is the mixture's after b
    only (over those four seeds +4.2% against +6.5%: part of `natural`'s cost is paid in the
    first 10% of steps). A trunk to step 90 (30%) halves the ordinary spread too (+4.5 / +5.3 /
    +2.2 / +4.1 / +2.2%, std 1.4) and measures less of the mixture (+3.7%). Use it when an
    outlier seed would swamp the comparison, choose b for that trade, and say that the arms
    shared a trunk.

How
    The trunk is an ordinary run with ``train.max_steps = b`` and ``train.schedule_steps = T``,
    so its learning rate at every step is the T-step run's. A run with ``train.branch_from:
    <trunk folder>`` and ``train.max_steps = T`` starts from the trunk's final checkpoint:
    model, optimiser, LR scheduler, the sampler's data position (each domain's epoch and offset
    in its stream, tokens served so far) and the random state; its own mixing policy starts
    fresh at step b and sets the mixture from step b + 1 on (its sampling mode and per-domain
    floor apply from there). The trunk's metric rows (steps 1..b, evals included) are copied
    into the new run's ``metrics.jsonl``, so its curves start at step 0. A branch that keeps
    the trunk's mixture *is* the T-step run, bit for bit (tested), so a suite's ``uniform``
    arm may branch too and stays the uniform run.

    In a suite ``branch: {at: 0.3}`` (or ``mixlab compare --branch-at 0.3``) does it for every
    run. Written out, the trunk is a ``shared`` stage (``mixlab.comparison.suite``): it runs
    once per seed in ``<out>/_shared/seed<k>/trunk/`` and every arm that lists it branches
    from it::

        - name: headroom
          stages:
            - {name: trunk, shared: true, set: {mixing.name: uniform, train.max_steps: 30,
                                                train.schedule_steps: 300}}
          set: {mixing.name: ..., train.branch_from: "{stage:trunk}"}

    The suite counts the trunk's tokens once, as the stage's, and the branch's as the T - b
    steps it trains itself.

What is checked (ConfigError naming the field)
    The trunk is finished, made on the same store, its model and data settings are this run's,
    its train settings that shape the trajectory (lr, schedule, optimiser, batch geometry,
    seed, precision) are this run's, its schedule horizon is this run's ``max_steps`` and it
    stopped before it. Resuming a branched run continues its own checkpoint (the trunk is read
    only when the run starts).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mixlab.config import RunConfig, saved_config
from mixlab.errors import ConfigError
from mixlab.train.callbacks import read_metrics, write_metrics
from mixlab.train.checkpoint import load_checkpoint
from mixlab.train.run_folder import RunFolder

if TYPE_CHECKING:
    from mixlab.train.loop import Trainer

log = logging.getLogger(__name__)

# train.* fields that shape the trajectory up to b: a trunk must share them with its branches
SHARED_TRAIN_FIELDS = (
    "lr",
    "min_lr_ratio",
    "warmup_steps",
    "weight_decay",
    "beta1",
    "beta2",
    "grad_clip",
    "batch_size",
    "grad_accum",
    "seed",
    "precision",
)
SHARED_DATA_FIELDS = ("seq_len", "subsample", "subsample_seed")


def trunk_checkpoint(path: str | Path) -> Path:
    """The trunk's checkpoint file: ``path`` itself, or the one in the run folder ``path``."""
    path = Path(path)
    ckpt = RunFolder(path).checkpoint if path.is_dir() else path
    if not ckpt.is_file():
        raise ConfigError(
            f"train.branch_from: {path} holds no checkpoint ({ckpt} not found); train the "
            "trunk first (train.max_steps=b, train.schedule_steps=T)"
        )
    return ckpt


def load_trunk(cfg: RunConfig, store_fingerprint: str) -> tuple[Path, dict[str, Any]]:
    """(the trunk's checkpoint file, its state), checked against ``cfg`` (ConfigError on any
    mismatch)."""
    assert cfg.train.branch_from is not None
    ckpt = trunk_checkpoint(cfg.train.branch_from)
    state = load_checkpoint(ckpt)
    where = f"train.branch_from: the trunk {ckpt}"
    if not state.get("finished"):
        raise ConfigError(
            f"{where} is not finished (step {state['step']}); let it end before branching"
        )
    if state["store_fingerprint"] != store_fingerprint:
        raise ConfigError(f"{where} was trained on another store; use this run's data.store")
    trunk = saved_config(state["config"])
    mismatches = [
        f"train.{name}: trunk {getattr(trunk.train, name)!r}, this run {getattr(cfg.train, name)!r}"
        for name in SHARED_TRAIN_FIELDS
        if getattr(trunk.train, name) != getattr(cfg.train, name)
    ]
    mismatches += [
        f"data.{name}: trunk {getattr(trunk.data, name)!r}, this run {getattr(cfg.data, name)!r}"
        for name in SHARED_DATA_FIELDS
        if getattr(trunk.data, name) != getattr(cfg.data, name)
    ]
    theirs, ours = trunk.model.model_dump(), cfg.model.model_dump()
    if theirs != ours:
        mismatches.append(f"model: trunk {theirs}, this run {ours}")
    if trunk.train.schedule_horizon != cfg.train.schedule_horizon:
        mismatches.append(
            f"the LR schedule's horizon: trunk {trunk.train.schedule_horizon} steps, this run "
            f"{cfg.train.schedule_horizon} (give the trunk "
            f"train.schedule_steps={cfg.train.max_steps})"
        )
    if mismatches:
        raise ConfigError(f"{where} differs from this run: " + "; ".join(mismatches))
    if int(state["step"]) >= cfg.train.max_steps:
        raise ConfigError(
            f"{where} ends at step {state['step']}, not before this run's train.max_steps "
            f"{cfg.train.max_steps}; branch from a shorter trunk"
        )
    return ckpt, state


def start_branch(trainer: Trainer) -> None:
    """Put ``trainer`` (a new run with ``train.branch_from``) at its trunk's step with its own
    policy's mixture, and copy the trunk's metric rows into the run's metrics.jsonl (rank 0)."""
    ckpt, state = load_trunk(trainer.cfg, trainer.store.fingerprint)
    trainer.load_state_dict(state, branch=True)
    if trainer.dist.is_main:
        trunk_dir = ckpt.parent
        rows = [r for r in read_metrics(trunk_dir) if int(r.get("step", 0)) <= trainer.step]
        trainer.folder.path.mkdir(parents=True, exist_ok=True)
        write_metrics(trainer.folder.metrics, rows)
        log.info(
            "branched from %s at step %d (its %d metric rows copied)",
            trunk_dir,
            trainer.step,
            len(rows),
        )
