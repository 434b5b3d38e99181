"""``mixlab doremi``: find static domain weights with DoReMi (arXiv 2305.10429), end to end.

One round (METHODS.md §3):

1. **Reference.** Train a small model on the reference mixture (``mixing.doremi.
   reference_mixture``: natural or uniform), or reuse ``mixing.doremi.reference``.
2. **Proxy.** Train a model of the same recipe on *uniform* domain sampling with Group DRO
   (policy ``doremi``, whose trainer objective is ``group_dro``). Each step it forwards the proxy
   and the frozen reference on the same micro-batches, takes the per-token excess
   ``max(l_proxy - l_ref, 0)``, turns its per-domain means into lambda_t, updates alpha_t
   (:class:`~mixlab.mixing.doremi.GroupDRO`) and then back-propagates
   ``sum_i alpha_t,i * mean loss of domain i`` (``alpha_timing=exact``; ``lagged`` weights
   by alpha_t-1 and back-propagates each micro-batch at once).
3. **Weights.** The time average of alpha over the proxy run is written as
   ``doremi_weights.json``; train the target with ``mixing.name=fixed
   mixing.weights_file=<out>/doremi_weights.json``.

With ``rounds > 1`` (iterated DoReMi) round k+1 trains a new reference on round k's weights,
until the L1 change between a round's weights and the mixture its reference was trained on
(from round 2 on: the previous round's weights) drops below ``tol``.

Layout of ``--out``::

    round_1/reference/   a normal run folder (checkpoint.pt, metrics.jsonl, eval.json)
    round_1/proxy/       run folder + alpha_trajectory.jsonl (alpha_t, avg alpha_t, lambda_t)
    round_1/doremi_weights.json
    round_2/...
    doremi_weights.json  the final weights: {"weights": {domain: avg alpha}, ...}

Every run is resumable: an interrupted ``mixlab doremi`` skips finished runs and continues
the unfinished one from its checkpoint. A run folder made with other settings is an error,
never silently overwritten.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mixlab.config import RunConfig
from mixlab.data.store import ShardStore
from mixlab.errors import ConfigError
from mixlab.files import write_json
from mixlab.mixing.base import MixingOptions
from mixlab.mixing.budget import natural_weights
from mixlab.mixing.doremi import DoremiOptions, DoremiProxyPolicy, DoremiSection
from mixlab.mixing.static import FixedOptions
from mixlab.tables import text_table
from mixlab.train.callbacks import Callback, JsonlSink
from mixlab.train.checkpoint import load_checkpoint
from mixlab.train.loop import Trainer
from mixlab.train.resume import train_in_folder
from mixlab.train.run_folder import RunFolder

log = logging.getLogger(__name__)

WEIGHTS_NAME = "doremi_weights.json"
_TRAJECTORY_KEYS = ("alpha", "avg_alpha", "lambda")  # per step, keyed by domain


def doremi_options(cfg: RunConfig) -> DoremiSection:
    """``mixing.doremi`` of a ``mixing.name=doremi`` config (ConfigError for another policy)."""
    if not isinstance(cfg.mixing, DoremiOptions):
        raise ConfigError(
            f"mixlab doremi runs mixing.name=doremi (got {cfg.mixing.name!r}); set "
            "mixing.name: doremi in the recipe (its mixing.doremi section holds the options)"
        )
    return cfg.mixing.doremi


def validate_doremi(cfg: RunConfig, store: ShardStore) -> None:
    """Check the pipeline's settings up front; errors name the field and what to do."""
    d = doremi_options(cfg)
    per_step = cfg.train.batch_size * cfg.train.grad_accum
    if d.proxy_sampling == "stratified":
        k = len(store.domains)
        if per_step < k:
            raise ConfigError(
                f"mixing.doremi.proxy_sampling=stratified: a step has {per_step} sequences "
                f"(train.batch_size x train.grad_accum) for {k} domains, so some domains would "
                "never be sampled; raise train.batch_size or use proxy_sampling=random"
            )


class AlphaTrajectory(Callback):
    """``alpha_trajectory.jsonl``: alpha_t, avg alpha_t and lambda_t of every proxy step."""

    def __init__(self, run_dir: str | Path) -> None:
        self.sink = JsonlSink(RunFolder(run_dir).alpha_trajectory)

    def on_train_start(self, trainer: Trainer) -> None:
        self.sink.open(trainer.step)

    def on_step_end(self, trainer: Trainer) -> None:
        assert isinstance(trainer.policy, DoremiProxyPolicy)
        state = trainer.policy.dro.state_dict()
        self.sink.write({"step": state["step"], **{k: state[k] for k in _TRAJECTORY_KEYS}})

    def on_close(self, trainer: Trainer) -> None:
        self.sink.close()


def proxy_trainer(
    cfg: RunConfig, run_dir: str | Path, callbacks: Sequence[Callback] = ()
) -> Trainer:
    """A :class:`Trainer` of the ``doremi`` proxy policy that also writes its alpha trajectory.

    ``cfg.mixing.doremi.reference`` is the frozen reference run.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(
            "mixlab doremi trains its small reference and proxy in one process; run it "
            "without torchrun (the target run may use torchrun)"
        )
    return Trainer(cfg, run_dir, [AlphaTrajectory(run_dir), *callbacks])


# ------------------------------------------------------------------------------ pipeline
@dataclass
class DoremiRound:
    """One round's result: its reference mixture (None if unknown) and the proxy's weights."""

    round: int
    reference_run: Path
    proxy_run: Path
    reference_mixture: np.ndarray | None
    weights: np.ndarray  # avg alpha_T
    last_alpha: np.ndarray  # alpha_T (not the output; logged for diagnosis)
    change: float | None  # L1 distance to reference_mixture


@dataclass
class DoremiResult:
    domains: tuple[str, ...]
    natural: np.ndarray
    weights_path: Path
    rounds: list[DoremiRound] = field(default_factory=list)
    converged: bool = False

    @property
    def weights(self) -> np.ndarray:
        return self.rounds[-1].weights

    def format_table(self) -> str:
        """Domain | natural | reference mixture (round 1) | weights of each round."""
        heads = ["natural", "reference"] + (
            [f"round {r.round}" for r in self.rounds] if len(self.rounds) > 1 else []
        )
        heads.append("DoReMi")
        ref = self.rounds[0].reference_mixture
        cols: list[np.ndarray | None] = [self.natural, ref]
        if len(self.rounds) > 1:
            cols += [r.weights for r in self.rounds]
        cols.append(self.weights)
        rows = [
            [d, *("?" if c is None else f"{c[i]:.4f}" for c in cols)]
            for i, d in enumerate(self.domains)
        ]
        return text_table(
            ["domain", *heads], rows, sep=" ", min_widths=(6, *(10 for _ in heads)), rule=None
        )


def run_doremi(
    cfg: RunConfig, out_dir: str | Path, callbacks: Sequence[Callback] = ()
) -> DoremiResult:
    """Reference -> proxy -> weights (-> further rounds) into ``out_dir``; resumable.

    ``cfg.mixing`` is ``mixing.name=doremi`` (a plain uniform/natural config is taken as one
    with default DoReMi options).
    """
    if not cfg.data.store:
        raise ConfigError("data.store: path of a prepared store is required (mixlab prepare)")
    store = ShardStore(cfg.data.store)
    if type(cfg.mixing) is MixingOptions:  # uniform/natural have no options to lose
        cfg = cfg.model_copy(deep=True)
        cfg.mixing = DoremiOptions(**{**cfg.mixing.model_dump(), "name": "doremi"})
    validate_doremi(cfg, store)
    d = doremi_options(cfg)
    out = Path(out_dir).resolve()
    domains = store.domains
    natural = natural_weights(store.train_tokens_per_domain())
    result = DoremiResult(domains, natural, out / WEIGHTS_NAME)
    uniform = np.full(len(domains), 1.0 / len(domains))
    ref_mix: np.ndarray | None = natural if d.reference_mixture == "natural" else uniform
    for k in range(1, d.rounds + 1):
        rdir = out / f"round_{k}"
        if k == 1 and d.reference:
            ref_dir = Path(d.reference).resolve()
            ref_mix = _static_weights(ref_dir, domains)
            log.info("round 1: reusing the reference run %s", ref_dir)
        else:
            assert ref_mix is not None
            ref_dir = rdir / "reference"
            reference = _reference_config(cfg, ref_mix, domains)
            train_in_folder(reference, ref_dir, Trainer, existing="reuse", callbacks=callbacks)
        proxy_dir = rdir / "proxy"
        proxy = _proxy_config(cfg, ref_dir)
        train_in_folder(proxy, proxy_dir, proxy_trainer, existing="reuse", callbacks=callbacks)
        dro_state = load_checkpoint(proxy_dir)["policy"]["group_dro"]
        avg = np.array([dro_state["avg_alpha"][x] for x in domains])
        avg = avg / avg.sum()
        last = np.array([dro_state["alpha"][x] for x in domains])
        change = None if ref_mix is None else float(np.abs(avg - ref_mix).sum())
        rnd = DoremiRound(k, ref_dir, proxy_dir, ref_mix, avg, last, change)
        result.rounds.append(rnd)
        _write_weights(rdir / WEIGHTS_NAME, rnd, domains, cfg)
        log.info("round %d: weights %s (L1 change %s)", k, _fmt(avg, domains), change)
        if change is not None and change < d.tol:
            result.converged = True
            break
        ref_mix = avg
    _write_weights(out / WEIGHTS_NAME, result.rounds[-1], domains, cfg, result.converged)
    return result


# A run's saved config keeps only the DoReMi settings that shape that run, so raising
# ``rounds`` or changing ``eta`` later still reuses the runs those settings do not touch.
_PROXY_FIELDS = (
    "eta",
    "smoothing",
    "loss_normalizer",
    "alpha_timing",
    "proxy_sampling",
    "lambda_init",
)


def _reference_config(cfg: RunConfig, mixture: np.ndarray, domains: Sequence[str]) -> RunConfig:
    ref = cfg.model_copy(deep=True)
    ref.mixing = FixedOptions(
        name="fixed",
        update_every=cfg.mixing.update_every,
        sampling=cfg.mixing.sampling,
        weights=dict(zip(domains, mixture.tolist(), strict=True)),  # inline: no path to go stale
    )
    ref.train.max_steps = doremi_options(cfg).reference_steps or cfg.train.max_steps
    ref.validate()
    return ref


def _proxy_config(cfg: RunConfig, reference: Path) -> RunConfig:
    proxy = cfg.model_copy(deep=True)
    d = doremi_options(cfg)
    proxy.mixing = DoremiOptions(
        name="doremi",
        update_every=cfg.mixing.update_every,
        sampling="stratified" if d.proxy_sampling == "stratified" else "mixed",
        doremi=DoremiSection(
            reference=str(reference), **{name: getattr(d, name) for name in _PROXY_FIELDS}
        ),
    )
    proxy.train.max_steps = d.proxy_steps or cfg.train.max_steps
    proxy.validate()
    return proxy


def _static_weights(run_dir: Path, domains: Sequence[str]) -> np.ndarray | None:
    """The mixture a reused reference was trained on, if it was a static one."""
    saved = load_checkpoint(run_dir)["policy"].get("weights")
    if not isinstance(saved, dict) or set(saved) != set(domains):
        return None
    return np.array([float(saved[x]) for x in domains])


def _named(values: np.ndarray | None, domains: Sequence[str]) -> dict[str, float] | None:
    return None if values is None else dict(zip(domains, values.tolist(), strict=True))


def _fmt(values: np.ndarray, domains: Sequence[str]) -> str:
    return ", ".join(f"{x}={v:.4f}" for x, v in zip(domains, values, strict=True))


def _write_weights(
    path: Path,
    rnd: DoremiRound,
    domains: Sequence[str],
    cfg: RunConfig,
    converged: bool | None = None,
) -> None:
    """``{"weights": {domain: avg alpha_T}, ...}``: the format ``mixing.weights_file`` reads."""
    d = doremi_options(cfg)
    record: dict[str, Any] = {
        "weights": _named(rnd.weights, domains),
        "round": rnd.round,
        "last_alpha": _named(rnd.last_alpha, domains),
        "reference_mixture": _named(rnd.reference_mixture, domains),
        "l1_change": rnd.change,
        "reference_run": str(rnd.reference_run),
        "proxy_run": str(rnd.proxy_run),
        "alpha_trajectory": str(RunFolder(rnd.proxy_run).alpha_trajectory),
        "eta": d.eta,
        "smoothing": d.smoothing,
        "loss_normalizer": d.loss_normalizer,
    }
    if converged is not None:
        record["converged"] = converged
    write_json(path, record)
