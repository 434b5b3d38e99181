"""The training loop: one readable pass from sampled tokens to a new mixture.

Per optimiser step::

    batches  = sampler.next_step()                 # grad_accum micro-batches drawn ~ weights
    forward/backward each micro-batch              # one mixed batch; per-token losses kept
    loss_sum, token_count per domain               # from the same forward, no extra pass
    clip, optimizer.step(), scheduler.step()
    policy.update(Feedback(step, loss_sum, ...))   # the mixing policy sees the step
    sampler.set_weights(policy.weights())          # every mixing.update_every steps
    log -> metrics.jsonl; eval; checkpoint

The loss of a step is the mean over all its target tokens (micro-batch losses are summed and
divided by the step's token count), so gradient accumulation is exactly a bigger batch.
Precision: bf16 autocast on CPU when asked or when ``auto`` finds the CPU fast at it; the
per-token losses are always computed in fp32. The schedule is linear warm-up then cosine to
``min_lr_ratio * lr``. Resume restores every state (see :mod:`mixlab.train.checkpoint`), so the
rest of a resumed run's loss curve equals the uninterrupted run's.

A policy that declares ``requires_reference`` (DoReMi) also gets a frozen reference model that
scores the same micro-batches (:class:`ReferenceScorer`): per-domain sums of the per-token
clipped excess loss and of the reference loss go into its Feedback. A policy that looks inside
the model (AC-ODM: ``requires_gradients``, ``depth_points``) gets per-domain gradients from
hooks in the same backward pass and weight norms after the update (:mod:`mixlab.train.probes`);
one that declares ``floor_per_domain`` gets that many sequences (micro-batches) of every domain
in every step; one that ``writes_policy_file`` saves it next to every checkpoint.

With ``meco.enabled`` the sampler packs whole documents with their metadata prefix
(:class:`~mixlab.sampling.documents.DocumentSampler`) until s_c, then plain documents; the
model gets the batch's extra inputs through :func:`~mixlab.model.meco.model_inputs`, a copy of
the checkpoint is kept at s_c (``checkpoint_condition_end.pt``) and the MeCo statistics are
logged (:class:`~mixlab.model.meco.MecoLog`). ``eval.document_modes`` adds per-document evals
with and without prefixes (:mod:`mixlab.eval.conditional`).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mixlab import __version__
from mixlab.config import RunConfig
from mixlab.data.store import ShardStore
from mixlab.errors import ConfigError, ResumeError
from mixlab.eval.perplexity import EvalResult, evaluate
from mixlab.files import copy_file, write_json
from mixlab.mixing.base import Feedback, MixingPolicy, PolicyContext, build_policy
from mixlab.model.factory import count_parameters
from mixlab.model.losses import per_domain_sums, token_losses
from mixlab.model.meco import MecoLog, model_inputs
from mixlab.sampling.documents import DocumentSampler
from mixlab.sampling.sampler import MixtureSampler
from mixlab.train import distributed as dist
from mixlab.train.build import build_optimizer, lr_factor, model_from_config, resolve_precision
from mixlab.train.callbacks import Callback, JsonlSink, TensorBoardSink
from mixlab.train.checkpoint import (
    CHECKPOINT_NAME,
    capture_rng,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from mixlab.train.probes import ModelProbes
from mixlab.train.reference import ReferenceScorer, clipped_excess_sums

log = logging.getLogger(__name__)

CONFIG_NAME = "config.yaml"
EVAL_NAME = "eval.json"
CONDITION_END_NAME = "checkpoint_condition_end.pt"  # MeCo: the model at s_c, kept
POLICY_FILE_NAME = "policy.acodm.pt"
# Re-exported: the run's building blocks are part of the loop's public surface.
__all__ = [
    "Trainer",
    "build_optimizer",
    "clipped_excess_sums",
    "eval_record",
    "lr_factor",
    "model_from_config",
    "resolve_precision",
    "train",
]
# Feedback arrays summed over ranks before the policy sees them.
_REDUCED = (
    "loss_sum",
    "token_count",
    "microbatch_count",
    "excess_sum",
    "ref_loss_sum",
    "clipped_count",
    "grad_sum",
    "grad_count",
)


class Trainer:
    """Owns one run: store, model, policy, sampler, optimizer; ``fit()`` runs the loop.

    Under torchrun every rank builds its own Trainer; ``self.dist`` says which rank it is.
    ``self.model`` is what trains (DDP-wrapped or FSDP-sharded), ``self.raw_model`` the
    Hugging Face module itself.
    """

    def __init__(
        self, cfg: RunConfig, run_dir: str | Path, callbacks: Sequence[Callback] = ()
    ) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        t = cfg.train
        if t.threads > 0:
            torch.set_num_threads(t.threads)
        if not cfg.data.store:
            raise ConfigError("data.store: path of a prepared store is required (mixlab prepare)")
        self.dist = dist.init_distributed(t.device)
        self.store = ShardStore(cfg.data.store)
        self.domains = self.store.domains
        self.raw_model = model_from_config(cfg, self.store).to(self.dist.device)
        self.autocast_dtype = resolve_precision(t.precision, self.raw_model)
        self.raw_model.train()
        ctx = PolicyContext(
            domains=self.domains,
            train_tokens=self.store.train_tokens_per_domain(),
            seed=t.seed,
            total_steps=t.max_steps,
        )
        self.policy: MixingPolicy = build_policy(cfg.mixing.name, ctx, cfg.mixing)
        self.reference: ReferenceScorer | None = None
        if getattr(self.policy, "requires_reference", False):
            path = str(getattr(self.policy, "reference_path", ""))
            self.reference = ReferenceScorer(path, self.store, cfg.data.seq_len, self.dist.device)
        # Hooks go on the module itself, before DDP/FSDP wrap it (they see local values).
        self.probes = ModelProbes.for_policy(self.policy, self.raw_model, len(self.domains))
        self.model = dist.wrap_model(self.raw_model, self.dist, t.distributed)
        self.policy_file = self._policy_file_path()
        sampling: dict[str, Any] = dict(
            seq_len=cfg.data.seq_len,
            batch_size=t.batch_size,
            grad_accum=t.grad_accum,
            weights=self.policy.weights(),
            mode=cfg.mixing.sampling,
            seed=t.seed,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            floor_per_domain=int(getattr(self.policy, "floor_per_domain", 0)),
        )
        self.sampler: MixtureSampler = (
            DocumentSampler.from_config(cfg, self.store, self.raw_model, **sampling)
            if cfg.meco.enabled
            else MixtureSampler(self.store, **sampling)
        )
        self.optimizer = build_optimizer(self.model, cfg)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda s: lr_factor(s, t.warmup_steps, t.max_steps, t.min_lr_ratio),
        )
        self.step = 0
        self.elapsed = 0.0
        self.callbacks: list[Callback] = []
        if self.dist.is_main:  # one writer of metrics per run
            self.callbacks = [JsonlSink(self.run_dir), *callbacks]
            if t.tensorboard:
                self.callbacks.append(TensorBoardSink(self.run_dir))
        self.last_eval: EvalResult | None = None
        self._document_eval: Any = None  # mixlab.eval.conditional.DocumentEvaluator, lazily

    # ------------------------------------------------------------------ state
    def state_dict(self, finished: bool = False) -> dict[str, Any]:
        """The checkpoint content; collective under FSDP (every rank must call it)."""
        model_state, optimizer_state = dist.full_state_dicts(
            self.model, self.optimizer, self.cfg.train.distributed, self.dist
        )
        return {
            "mixlab_version": __version__,
            "step": self.step,
            "finished": finished,
            "config": self.cfg.to_dict(),
            "store_fingerprint": self.store.fingerprint,
            "domains": list(self.domains),
            "world_size": self.dist.world_size,
            "model": model_state,
            "optimizer": optimizer_state,
            "scheduler": self.scheduler.state_dict(),
            "sampler": self.sampler.state_dict(),
            "policy": self.policy.state_dict(),
            "rng": capture_rng(),
            "elapsed_seconds": self.elapsed,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["store_fingerprint"] != self.store.fingerprint:
            raise ResumeError(
                f"the checkpoint was made with another shard store (fingerprint "
                f"{state['store_fingerprint']}, this store {self.store.fingerprint}); "
                "resume with the same data.store"
            )
        dist.load_full_state_dicts(
            self.model,
            self.optimizer,
            state["model"],
            state["optimizer"],
            self.cfg.train.distributed,
            self.dist,
        )
        self.scheduler.load_state_dict(state["scheduler"])
        self.sampler.load_state_dict(state["sampler"])
        self.policy.load_state_dict(state["policy"])
        restore_rng(state["rng"])
        self.step = int(state["step"])
        self.elapsed = float(state.get("elapsed_seconds", 0.0))

    def save(self, finished: bool = False) -> Path:
        """Write the checkpoint (rank 0; the others only take part in gathering the state)."""
        path = self.run_dir / CHECKPOINT_NAME
        state = self.state_dict(finished)
        if self.dist.is_main:
            if self.policy_file is not None:
                provenance = {
                    "model_params": count_parameters(self.raw_model),
                    "seed": self.cfg.train.seed,
                }
                self.policy.save_policy_file(self.policy_file, provenance)  # type: ignore[attr-defined]
            save_checkpoint(path, state)
        dist.barrier(self.dist)
        return path

    def _policy_file_path(self) -> Path | None:
        """Where the policy is exported (mixing.policy_out, or the run folder's default)."""
        out = self.cfg.mixing.policy_out
        if not (out or getattr(self.policy, "writes_policy_file", False)):
            return None
        if not hasattr(self.policy, "save_policy_file"):
            raise ConfigError(
                f"mixing.policy_out: policy {self.cfg.mixing.name!r} has nothing to export; "
                "only acodm writes a policy file"
            )
        return Path(out) if out else self.run_dir / POLICY_FILE_NAME

    # ------------------------------------------------------------------ one step
    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.dist.device.type, dtype=self.autocast_dtype)

    def train_step(self, batches: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
        """Forward/backward every micro-batch, then one optimiser update.

        Returns this rank's per-domain sums (``run_step`` adds them up over ranks).
        """
        K = len(self.domains)
        device = self.dist.device
        batches = [{k: v.to(device, non_blocking=True) for k, v in b.items()} for b in batches]
        masks = [b["labels"][:, 1:] != -100 for b in batches]
        local_tokens = int(sum(int(m.sum()) for m in masks))
        # Normalise by the global token count (x world size: the gradient average divides it
        # back), so the update equals one process's with a W-times-bigger batch.
        tokens = dist.all_reduce_sum(self.dist, {"n": np.array([local_tokens], np.float64)})
        step_tokens = max(1, int(tokens["n"][0]))
        scale = self.dist.world_size / step_tokens
        loss_sum = torch.zeros(K, dtype=torch.float64, device=device)
        token_count = torch.zeros(K, dtype=torch.float64, device=device)
        ref_sums: dict[str, torch.Tensor] = {}
        reference_seconds = 0.0
        for i, (batch, mask) in enumerate(zip(batches, masks, strict=True)):
            dist.set_gradient_sync(self.model, i == len(batches) - 1)
            if self.probes is not None:
                self.probes.begin(batch)  # per-domain gradient hooks see this micro-batch
            with self.autocast():
                logits = self.model(**model_inputs(batch)).logits
            tok_loss = token_losses(logits, batch["labels"])  # (B, L-1) fp32, 0 where masked
            (tok_loss.sum() * scale).backward()
            sums, counts = per_domain_sums(tok_loss.detach(), mask, batch["domain_id"], K)
            loss_sum += sums.double()
            token_count += counts.double()
            if self.reference is not None:  # DoReMi excess over the frozen reference
                ref_start = time.perf_counter()
                for key, value in self.reference.score(batch, tok_loss, K, self.autocast()).items():
                    ref_sums[key] = ref_sums.get(key, 0) + value
                reference_seconds += time.perf_counter() - ref_start
        grad_norm = (
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)
            if self.cfg.train.grad_clip > 0
            else torch.tensor(float("nan"))
        )
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        out: dict[str, Any] = {
            "loss": float(loss_sum.sum()) / max(1, local_tokens),
            "loss_sum": loss_sum.cpu().numpy(),
            "token_count": token_count.cpu().numpy(),
            "grad_norm": float(grad_norm),
            **{key: value.cpu().numpy() for key, value in ref_sums.items()},
        }
        if self.reference is not None:
            out["reference_seconds"] = reference_seconds
        if self.probes is not None:  # AC-ODM: gradients of this step, weight norms after it
            out["capture_seconds"] = self.probes.capture_seconds
            out.update(self.probes.measure(1.0 / scale, out["token_count"]))
        return out

    def run_step(self) -> dict[str, Any]:
        """One optimiser step end to end: sample, train, then let the policy see it."""
        start = time.perf_counter()
        batches = self.sampler.next_step()
        out = self.train_step(batches)
        out["microbatch_count"] = self.microbatch_counts(batches)
        # Feedback is global: per-domain sums of all ranks (a no-op on one process).
        out.update(dist.all_reduce_sum(self.dist, {k: out[k] for k in _REDUCED if k in out}))
        out["loss"] = float(out["loss_sum"].sum() / max(1.0, float(out["token_count"].sum())))
        self.step += 1
        feedback = Feedback(
            step=self.step,
            total_steps=self.cfg.train.max_steps,
            loss_sum=out["loss_sum"],
            token_count=out["token_count"],
            microbatch_count=out["microbatch_count"],
            excess_sum=out.get("excess_sum"),
            ref_loss_sum=out.get("ref_loss_sum"),
            grad_sum=out.get("grad_sum"),
            param_norms=out.get("param_norms"),
            extras={k: out[k] for k in ("grad_count", "param_diff_norms") if k in out},
        )
        policy_start = time.perf_counter()
        if self.dist.is_main:  # rank 0 owns the policy and sends its weights to the others
            self.policy.update(feedback)  # <- the mixture learns from this step
        if self.step % self.cfg.mixing.update_every == 0:
            self.sampler.set_weights(dist.broadcast_weights(self.dist, self.policy.weights()))
        out["policy_seconds"] = time.perf_counter() - policy_start
        out["seconds"] = time.perf_counter() - start
        out["tokens"] = sum(b["input_ids"].numel() for b in batches) * self.dist.world_size
        return out

    def microbatch_counts(self, batches: list[dict[str, torch.Tensor]]) -> np.ndarray:
        """Sequences per domain (mixed sampling) or micro-batches per domain (homogeneous)."""
        counts = np.zeros(len(self.domains), dtype=np.int64)
        for b in batches:
            ids = b["domain_id"].numpy()
            if self.cfg.mixing.sampling == "homogeneous":
                counts[int(ids[0])] += 1
            else:
                np.add.at(counts, ids, 1)
        return counts

    # ------------------------------------------------------------------ the loop
    def fit(self) -> EvalResult:
        cfg, t = self.cfg, self.cfg.train
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        for cb in self.callbacks:
            cb.on_train_start(self.step)
        log.info(
            "training %s (%s params) on %d domains for %d steps, precision %s%s",
            cfg.model.preset or cfg.model.config_path or cfg.model.pretrained_path,
            f"{count_parameters(self.raw_model):,}",
            len(self.domains),
            t.max_steps,
            "bf16" if self.autocast_dtype else "fp32",
            f", {self.dist.world_size} ranks" if self.dist.enabled else "",
        )
        window = _Window(self.domains)
        meco = None
        if isinstance(self.sampler, DocumentSampler):
            meco = MecoLog(self.sampler, self.step)
        try:
            for _ in self._progress():
                out = self.run_step()
                self.elapsed += out["seconds"]
                window.add(out)
                if self.step % t.log_every == 0 or self.step == t.max_steps:
                    record = window.record(
                        self.step,
                        float(self.scheduler.get_last_lr()[0]),
                        self.sampler,
                        self.policy,
                    )
                    self._emit({**record, **(meco.record(self.step) if meco else {})})
                    window = _Window(self.domains)
                if t.eval_every and self.step % t.eval_every == 0 and self.step < t.max_steps:
                    self.run_eval()
                if t.checkpoint_every and self.step % t.checkpoint_every == 0:
                    self.save()
                if meco and self.step == meco.sampler.condition_steps:
                    self.save_condition_end()
        except KeyboardInterrupt:
            log.warning(
                "interrupted at step %d; saving a checkpoint (resume with --resume)", self.step
            )
            if meco and self.step == meco.sampler.condition_steps:
                self.save_condition_end()  # interrupted before the s_c copy was made
            else:
                self.save()
            raise
        result = self.run_eval()
        self.save(finished=True)
        for cb in self.callbacks:
            cb.on_train_end(self.step)
        return result

    def run_eval(self) -> EvalResult:
        """Validation on every rank (FSDP's forward is collective); rank 0 logs it."""
        result = evaluate(
            dist.unwrap(self.model),
            self.store,
            seq_len=self.cfg.data.seq_len,
            batch_size=self.cfg.eval.batch_size,
            max_tokens_per_domain=self.cfg.eval.max_tokens_per_domain,
            autocast_dtype=self.autocast_dtype,
        )
        record = {**eval_record(result, self.step), **self._document_eval_metrics()}
        extra = getattr(self.policy, "eval_log_values", None)
        if extra is not None:
            record.update({f"mix/{key}": value for key, value in extra().items()})
        self._emit(record)
        self.last_eval = result
        return result

    def save_condition_end(self) -> None:
        """MeCo: checkpoint at s_c (resumable) and keep a copy of the conditioned model."""
        self.save()
        if self.dist.is_main:
            copy_file(self.run_dir / CHECKPOINT_NAME, self.run_dir / CONDITION_END_NAME)
            log.info("meco: conditioning ends at step %d; kept %s", self.step, CONDITION_END_NAME)
        dist.barrier(self.dist)

    def _document_eval_metrics(self) -> dict[str, float]:
        """``eval_<mode>/...`` metrics of the ``eval.document_modes`` (MeCo eval modes)."""
        ev = self.cfg.eval
        if not ev.document_modes:
            return {}
        from mixlab.eval.conditional import DocumentEvaluator

        if self._document_eval is None:
            self._document_eval = DocumentEvaluator(
                self.store,
                seq_len=self.cfg.data.seq_len,
                meco=self.cfg.meco,
                max_tokens_per_domain=ev.max_tokens_per_domain,
                batch_size=ev.batch_size,
            )
        results = self._document_eval.evaluate_modes(
            dist.unwrap(self.model),
            ev.document_modes,
            fixed_prefix=ev.fixed_prefix,
            autocast_dtype=self.autocast_dtype,
        )
        out: dict[str, float] = {}
        for mode, res in results.items():
            out.update(res.to_metrics(prefix=f"eval_{mode}"))
        return out

    def _emit(self, record: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_log(record)

    def _progress(self) -> Iterator[int]:
        from tqdm.auto import tqdm

        bar = tqdm(
            range(self.step, self.cfg.train.max_steps),
            initial=self.step,
            total=self.cfg.train.max_steps,
            desc="train",
            unit="step",
            disable=not (self.cfg.train.progress and self.dist.is_main),
            dynamic_ncols=True,
        )
        yield from bar


def eval_record(result: EvalResult, step: int) -> dict[str, Any]:
    """Flat ``eval/...`` metrics of one validation pass (METHODS.md §5 aggregates)."""
    return {"step": step, **result.to_metrics()}


class _Window:
    """Accumulates train statistics between two log lines."""

    def __init__(self, domains: tuple[str, ...]) -> None:
        self.domains = domains
        self.loss = 0.0
        self.steps = 0
        self.tokens = 0
        self.seconds = 0.0
        self.policy_seconds = 0.0
        self.capture_seconds = 0.0
        self.reference_seconds = 0.0
        self.grad_norm = 0.0
        self.loss_sum = np.zeros(len(domains))
        self.token_count = np.zeros(len(domains))
        self.ref_sums: dict[str, np.ndarray] = {}  # DoReMi: excess, reference loss, clipped

    def add(self, out: dict[str, Any]) -> None:
        """Add one step's ``Trainer.run_step`` output."""
        self.loss += out["loss"]
        self.grad_norm += out["grad_norm"]
        self.loss_sum += out["loss_sum"]
        self.token_count += out["token_count"]
        for key in ("excess_sum", "ref_loss_sum", "clipped_count"):
            if key in out:
                self.ref_sums[key] = self.ref_sums.get(key, 0) + out[key]
        self.capture_seconds += out.get("capture_seconds", 0.0)
        self.reference_seconds += out.get("reference_seconds", 0.0)
        self.steps += 1
        self.tokens += out["tokens"]
        self.seconds += out["seconds"]
        self.policy_seconds += out["policy_seconds"]

    def record(
        self, step: int, lr: float, sampler: MixtureSampler, policy: MixingPolicy
    ) -> dict[str, Any]:
        n = max(1, self.steps)
        rec: dict[str, Any] = {
            "step": step,
            "train/loss": self.loss / n,
            "train/lr": lr,
            "train/grad_norm": self.grad_norm / n,
            "train/tokens_per_s": self.tokens / max(self.seconds, 1e-9),
            "train/step_seconds": self.seconds / n,
            "mix/policy_seconds": self.policy_seconds / n,
        }
        if self.capture_seconds:
            rec["mix/capture_seconds"] = self.capture_seconds / n
        if self.reference_seconds:
            rec["mix/reference_seconds"] = self.reference_seconds / n
        w = policy.weights()
        rec["mix/entropy"] = float(-(w[w > 0] * np.log(w[w > 0])).sum())
        rec.update(sampler.stats())  # tokens, epochs, achieved and requested shares per domain
        p_eff = sampler.effective_weights() if sampler.floor_per_domain else None
        for i, d in enumerate(self.domains):
            rec[f"mix/weight/{d}"] = float(w[i])
            if p_eff is not None:
                rec[f"mix/p_eff/{d}"] = float(p_eff[i])
            if self.token_count[i] > 0:
                rec[f"domain/{d}/train_loss"] = float(self.loss_sum[i] / self.token_count[i])
        if self.ref_sums:
            rec.update(self._reference_record())
        for key, value in policy.log_values().items():
            rec[f"mix/{key}"] = value
        return rec

    def _reference_record(self) -> dict[str, Any]:
        """Reference loss, clipped and unclipped excess per domain; share of clipped tokens."""
        n = self.token_count
        clipped = float(self.ref_sums["clipped_count"].sum())
        rec = {"train/excess_clipped_fraction": clipped / max(float(n.sum()), 1.0)}
        for i, d in enumerate(self.domains):
            if n[i] > 0:
                ref = float(self.ref_sums["ref_loss_sum"][i] / n[i])
                rec[f"domain/{d}/ref_loss"] = ref
                rec[f"domain/{d}/excess"] = float(self.ref_sums["excess_sum"][i] / n[i])
                rec[f"domain/{d}/excess_unclipped"] = float(self.loss_sum[i] / n[i]) - ref
        return rec


def train(
    cfg: RunConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
) -> Trainer:
    """Train a run into ``run_dir`` (new, or continued with ``resume=True``).

    Under torchrun every rank calls this; rank 0 writes the run folder.
    """
    run_dir = Path(run_dir)
    ckpt = run_dir / CHECKPOINT_NAME
    if resume:
        state = load_checkpoint(ckpt)
        saved = RunConfig.from_dict(state["config"])
        if saved.to_dict() != cfg.to_dict():
            log.warning("resuming with the config saved in %s (command-line config ignored)", ckpt)
        cfg = _fit_world_size(saved, int(state.get("world_size", 1)))
    elif ckpt.exists():
        raise ConfigError(
            f"{run_dir} already holds a run; continue it with --resume or choose a new --out"
        )
    trainer = Trainer(cfg, run_dir, callbacks)
    if trainer.dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg.save(run_dir / CONFIG_NAME)
    if resume:
        trainer.load_state_dict(state)
        if state.get("finished"):
            log.info("%s already finished at step %d", run_dir, trainer.step)
    trainer.fit()
    if trainer.dist.is_main:
        write_json(
            run_dir / EVAL_NAME,
            eval_record(trainer.last_eval, trainer.step) if trainer.last_eval else {},
            nonfinite_key="nonfinite",
        )
    return trainer


def _fit_world_size(cfg: RunConfig, saved_world_size: int) -> RunConfig:
    """Keep the global batch when resuming on another number of ranks (grad_accum absorbs it).

    The sampler's step is defined by the global number of micro-batches M = world_size x
    grad_accum, so any world size that divides M continues the same data order exactly.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == saved_world_size:
        return cfg
    total = saved_world_size * cfg.train.grad_accum
    if total % world_size:
        raise ResumeError(
            f"the checkpoint was trained on {saved_world_size} rank(s) x train.grad_accum="
            f"{cfg.train.grad_accum} = {total} micro-batches per step; {world_size} ranks "
            f"cannot split that evenly. Resume with a number of ranks that divides {total}"
        )
    cfg = copy.deepcopy(cfg)
    cfg.train.grad_accum = total // world_size
    log.warning(
        "resuming a %d-rank run on %d ranks: train.grad_accum %d -> %d keeps the global batch",
        saved_world_size,
        world_size,
        total // saved_world_size,
        cfg.train.grad_accum,
    )
    return cfg
