"""The training loop: one readable pass from sampled tokens to a new mixture.

Per optimiser step::

    batches  = sampler.next_step()                 # grad_accum micro-batches drawn ~ weights
    forward each micro-batch -> token losses       # one mixed batch; per-token losses kept
    objective: backward                            # token mean (DoReMi's proxy: Group DRO)
    loss_sum, token_count per domain               # from the same forward, no extra pass
    clip, optimizer.step(), scheduler.step()
    mixer.step(step, sums)                         # reduce over ranks, policy.update(feedback),
                                                   # sampler.set_weights every update_every
    callbacks: log -> metrics.jsonl; eval; checkpoint

The loss of a step is the mean over all its target tokens (micro-batch losses are summed and
divided by the step's token count), so gradient accumulation is exactly a bigger batch.
Precision: bf16 autocast on CPU when asked or when ``auto`` finds the CPU fast at it; the
per-token losses are always computed in fp32. The schedule is linear warm-up then cosine to
``min_lr_ratio * lr``. Resume restores every state (see :mod:`mixlab.train.checkpoint`), so the
rest of a resumed run's loss curve equals the uninterrupted run's.

What a policy needs besides losses it declares in ``policy.needs``
(:class:`~mixlab.mixing.base.PolicyNeeds`), read once here: a ``reference`` model (DoReMi) scores
the same micro-batches (:class:`ReferenceScorer`) and per-domain sums of the per-token clipped
excess loss and of the reference loss go into its Feedback; ``gradients`` / ``weight_norms``
(AC-ODM) are measured by hooks in the same backward pass and after the update, and
``heldout_gradients`` by one small extra pass on validation windows every k steps
(:mod:`mixlab.train.probes`); ``floor_per_domain`` gives every domain that many sequences
(micro-batches) in every step; ``exports_policy_file`` saves the policy next to every checkpoint.

With ``data.subsample < 1`` the sampler and the policy's token counts see a seeded subset of
every domain's training documents (:mod:`mixlab.data.subsample`, repetition-matched proxies);
evaluation always reads the whole validation split.

With ``meco.enabled`` the sampler packs whole documents with their metadata prefix
(:class:`~mixlab.sampling.documents.DocumentSampler`) until s_c, then plain documents; the
model gets the batch's extra inputs through :func:`~mixlab.model.meco.model_inputs`, and
:class:`~mixlab.train.meco.MecoCallback` logs the MeCo statistics and keeps the checkpoint of
s_c. ``eval.document_modes`` adds per-document evals with and without prefixes
(:mod:`mixlab.train.evaluation`). Everything else around the loop is a callback
(:mod:`mixlab.train.callbacks`): metric sinks, the policy-file export, your own hooks.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mixlab import __version__
from mixlab.config import RunConfig
from mixlab.data.store import ShardStore
from mixlab.data.subsample import SubsampledStore, subsample_store
from mixlab.errors import ConfigError, DivergenceError, ResumeError
from mixlab.eval.perplexity import EvalResult
from mixlab.interrupt import GracefulStop
from mixlab.mixing.base import MixingPolicy, PolicyContext, PolicyNeeds, build_policy
from mixlab.mixing.budget import run_caps
from mixlab.model.factory import count_parameters
from mixlab.model.losses import per_domain_sums, token_losses
from mixlab.model.meco import model_inputs
from mixlab.sampling.documents import DocumentSampler
from mixlab.sampling.sampler import MixtureSampler
from mixlab.train import distributed as dist
from mixlab.train.allocator import tune_cpu_allocator
from mixlab.train.build import build_optimizer, lr_factor, model_from_config, resolve_precision
from mixlab.train.callbacks import Callback, JsonlSink, PolicyFileExport, TensorBoardSink
from mixlab.train.checkpoint import capture_rng, restore_rng, save_checkpoint
from mixlab.train.evaluation import RunEvaluator, eval_record
from mixlab.train.meco import MecoCallback
from mixlab.train.mixer import Mixer
from mixlab.train.objective import build_objective
from mixlab.train.probes import ModelProbes
from mixlab.train.reference import ReferenceScorer, clipped_excess_sums
from mixlab.train.resume import Existing, train_in_folder
from mixlab.train.run_folder import RunFolder
from mixlab.train.window import TrainWindow

log = logging.getLogger(__name__)

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


# The sampler settings a branched run keeps as its own (the rest continues the trunk's stream)
BRANCH_SAMPLING = ("mode", "floor_per_domain", "weights")


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
        self.folder = RunFolder(self.run_dir)
        t = cfg.train
        if t.threads > 0:
            torch.set_num_threads(t.threads)
        if not cfg.data.store:
            raise ConfigError("data.store: path of a prepared store is required (mixlab prepare)")
        self.dist = dist.init_distributed(t.device)
        if t.tune_malloc and self.dist.device.type == "cpu":
            tune_cpu_allocator()
        self.store = ShardStore(cfg.data.store)
        # What training samples from: the store, or a document subsample of it (data.subsample).
        self.train_data = subsample_store(self.store, cfg.data.subsample, cfg.data.subsample_seed)
        self.domains = self.store.domains
        self.raw_model = model_from_config(cfg, self.store).to(self.dist.device)
        self.autocast_dtype = resolve_precision(t.precision, self.raw_model)
        self.raw_model.train()
        tokens_per_step = t.batch_size * t.grad_accum * self.dist.world_size * cfg.data.seq_len
        ctx = PolicyContext(
            domains=self.domains,
            train_tokens=self.train_data.train_tokens_per_domain(),
            seed=t.seed,
            total_steps=t.max_steps,
            tokens_per_step=tokens_per_step,
            vocab_size=self.store.vocab_size,
        )
        self.policy: MixingPolicy = build_policy(ctx, cfg.mixing)
        needs = self.policy.needs
        self.objective = build_objective(needs.objective, self.policy)
        self.reference: ReferenceScorer | None = None
        if needs.reference is not None:
            self.reference = ReferenceScorer(
                needs.reference, self.store, cfg.data.seq_len, self.dist.device
            )
        # Hooks go on the module itself, before DDP/FSDP wrap it (they see local values).
        if needs.heldout_gradients is not None and self.dist.enabled and t.distributed == "fsdp":
            raise ConfigError(
                "the held-out probe (mixing.acodm.reward=heldout_alignment or "
                "progress_loss=heldout) does not run under train.distributed=fsdp; use ddp, "
                "or mixing.acodm.reward=alignment / progress_loss=train"
            )
        self.probes = ModelProbes.for_needs(
            needs,
            self.raw_model,
            len(self.domains),
            store=self.store,
            seq_len=cfg.data.seq_len,
            reserved_tokens=cfg.eval.max_tokens_per_domain,  # held-out windows avoid eval text
        )
        self.model = dist.wrap_model(self.raw_model, self.dist, t.distributed)
        sampling: dict[str, Any] = dict(
            seq_len=cfg.data.seq_len,
            batch_size=t.batch_size,
            grad_accum=t.grad_accum,
            weights=self.policy.weights(),
            mode=cfg.mixing.sampling,
            seed=t.seed,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            floor_per_domain=needs.floor_per_domain,
        )
        self.sampler: MixtureSampler = (
            DocumentSampler.from_config(cfg, self.train_data, self.raw_model, **sampling)
            if cfg.meco.enabled
            else MixtureSampler(self.train_data, **sampling)
        )
        if isinstance(self.train_data, SubsampledStore) and self.dist.is_main:
            budget = t.max_steps * self.sampler.tokens_per_step
            self.train_data.log_summary(self.policy.weights(), budget)
        caps = None
        if cfg.mixing.max_epochs is not None:  # epoch caps, whatever the policy
            caps = run_caps(
                cfg.mixing.max_epochs, self.domains, ctx.budget_tokens, ctx.train_tokens
            )
        self.mixer = Mixer(
            self.policy,
            self.sampler,
            dist=self.dist,
            update_every=cfg.mixing.update_every,
            total_steps=t.max_steps,
            caps=caps,
        )
        self.optimizer = build_optimizer(self.model, cfg)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda s: lr_factor(s, t.warmup_steps, t.schedule_horizon, t.min_lr_ratio),
        )
        self.evaluator = RunEvaluator(cfg, self.store, self.autocast_dtype)
        self.step = 0
        self.elapsed = 0.0
        self.last_eval: EvalResult | None = None
        self.nonfinite_steps = 0  # steps skipped for a non-finite loss or gradient
        self.nonfinite_run = 0  # ... of them in a row, up to the last step
        self.callbacks = self._callbacks(callbacks, needs)

    def _callbacks(self, extra: Sequence[Callback], needs: PolicyNeeds) -> list[Callback]:
        """Sinks (rank 0), the run's own hooks (MeCo, policy export), then the caller's."""
        out: list[Callback] = []
        if self.dist.is_main:  # one writer of metrics per run
            out.append(JsonlSink(self.folder.metrics))
            if self.cfg.train.tensorboard:
                out.append(TensorBoardSink(self.run_dir))
        if isinstance(self.sampler, DocumentSampler):
            out.append(MecoCallback(self.sampler))
        if needs.exports_policy_file:
            provenance = {
                "model_params": count_parameters(self.raw_model),
                "seed": self.cfg.train.seed,
            }
            path = Path(needs.policy_file or self.folder.policy_file)
            out.append(PolicyFileExport(path, provenance))
        return [*out, *extra]

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
            "probes": {} if self.probes is None else self.probes.state_dict(),
            "rng": capture_rng(),
            "elapsed_seconds": self.elapsed,
            "nonfinite": [self.nonfinite_steps, self.nonfinite_run],
        }

    def load_state_dict(self, state: dict[str, Any], *, branch: bool = False) -> None:
        """Continue from ``state``; with ``branch`` (train.branch_from) only the trunk's model,
        optimiser, schedule, data position and random state: this run keeps its own policy
        (and its sampling mode, floor and weights from the next step on)."""
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
        sampler_state = state["sampler"]
        if branch:
            ours = self.sampler.state_dict()
            sampler_state = {**sampler_state, **{k: ours[k] for k in BRANCH_SAMPLING}}
        self.sampler.load_state_dict(sampler_state)
        restore_rng(state["rng"])
        self.step = int(state["step"])
        if branch:
            return
        self.policy.load_state_dict(state["policy"])
        if self.probes is not None:  # before 0.2, AC-ODM's policy state held the references
            self.probes.load_state_dict(state.get("probes") or state["policy"])
        self.elapsed = float(state.get("elapsed_seconds", 0.0))
        self.nonfinite_steps, self.nonfinite_run = state.get("nonfinite", [0, 0])

    def save(self, finished: bool = False) -> Path:
        """Write the checkpoint (rank 0; the others only take part in gathering the state)."""
        path = self.folder.checkpoint
        state = self.state_dict(finished)
        if self.dist.is_main:
            save_checkpoint(path, state)
        dist.barrier(self.dist)
        for cb in self.callbacks:
            cb.on_checkpoint(self, path)
        return path

    # ------------------------------------------------------------------ one step
    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.dist.device.type, dtype=self.autocast_dtype)

    def train_step(self, batches: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
        """Forward/backward every micro-batch, then one optimiser update.

        Returns this rank's per-domain sums (the mixer adds them up over ranks).
        """
        K = len(self.domains)
        device = self.dist.device
        batches = [{k: v.to(device, non_blocking=True) for k, v in b.items()} for b in batches]
        masks = [b["labels"][:, 1:] != -100 for b in batches]
        local_tokens = int(sum(int(m.sum()) for m in masks))
        # Normalise by the global token count (x world size: the gradient average divides it
        # back), so the update equals one process's with a W-times-bigger batch.
        tokens = dist.all_reduce_sum(self.dist, {"n": np.array([local_tokens], np.float64)})
        scale = self.dist.world_size / max(1, int(tokens["n"][0]))
        loss_sum = torch.zeros(K, dtype=torch.float64, device=device)
        token_count = torch.zeros(K, dtype=torch.float64, device=device)
        ref_sums: dict[str, torch.Tensor] = {}
        reference_seconds = 0.0
        self.objective.begin_step(batches, K)
        for i, (batch, mask) in enumerate(zip(batches, masks, strict=True)):
            dist.set_gradient_sync(self.model, i == len(batches) - 1)
            if self.probes is not None:
                self.probes.begin(batch)  # per-domain gradient hooks see this micro-batch
            with self.autocast():
                logits = self.model(**model_inputs(batch)).logits
            tok_loss = token_losses(logits, batch["labels"])  # (B, L-1) fp32, 0 where masked
            self.objective.micro_batch(tok_loss, batch, scale)
            sums, counts = per_domain_sums(tok_loss.detach(), mask, batch["domain_id"], K)
            loss_sum += sums.double()
            token_count += counts.double()
            if self.reference is not None:  # excess over the frozen reference (DoReMi)
                ref_start = time.perf_counter()
                for key, value in self.reference.score(batch, tok_loss, K, self.autocast()).items():
                    ref_sums[key] = ref_sums.get(key, 0) + value
                reference_seconds += time.perf_counter() - ref_start
        self.objective.end_step(ref_sums)
        heldout = {}  # AC-ODM: gradients of a small held-out batch every k steps, same params
        if self.probes is not None:
            heldout = self.probes.measure_heldout(self.raw_model, self.step + 1, self.autocast())
        # The global gradient norm (the same on every rank) also tells a non-finite step: it
        # is skipped, never applied (max_norm inf leaves the gradients as they are).
        clip = self.cfg.train.grad_clip if self.cfg.train.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        finite = bool(torch.isfinite(grad_norm))
        if finite:
            self.optimizer.step()
        self.scheduler.step()  # the schedule follows the step count either way
        self.optimizer.zero_grad(set_to_none=True)
        out: dict[str, Any] = {
            "finite": finite,
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
            out.update(heldout)
        return out

    def run_step(self) -> dict[str, Any]:
        """One optimiser step end to end: sample, train, then let the policy see it."""
        start = time.perf_counter()
        batches = self.sampler.next_step()
        out = self.train_step(batches)
        out["microbatch_count"] = self.microbatch_counts(batches)
        self.step += 1
        self.mixer.step(self.step, out, update=out["finite"])  # <- the mixture learns
        out.update(self.mixer.sums)  # feedback is global: per-domain sums of all ranks
        out["loss"] = float(out["loss_sum"].sum() / max(1.0, float(out["token_count"].sum())))
        out["policy_seconds"] = self.mixer.seconds
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
        """Train to ``train.max_steps``, evaluate, checkpoint; return the final evaluation.

        Ctrl-C or SIGTERM stops after the current step with a checkpoint that resumes exactly
        (:class:`~mixlab.interrupt.GracefulStop`). Any other failure outside a step (an eval,
        a callback) also saves one first, so trained steps are never lost. A step whose loss
        or gradient is not finite is skipped; ``train.max_nonfinite_steps`` of them in a row
        stop the run (:class:`~mixlab.errors.DivergenceError`), keeping the last checkpoint.
        """
        t = self.cfg.train
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        stop, in_step = GracefulStop(), False
        try:
            with stop.installed():
                for cb in self.callbacks:
                    cb.on_train_start(self)
                self._log_start()
                window = TrainWindow(self.domains)
                for _ in self._progress():
                    in_step = True  # inside a step a torn state must not be saved
                    out = self.run_step()
                    in_step = False
                    self.elapsed += out["seconds"]
                    window.add(out)
                    self._count_nonfinite(out)
                    for cb in self.callbacks:
                        cb.on_step_end(self)
                    if self.step % t.log_every == 0 or self.step == t.max_steps:
                        self._emit(self._train_record(window))
                        window = TrainWindow(self.domains)
                    due = t.checkpoint_every and self.step % t.checkpoint_every == 0
                    if due and not self.nonfinite_run:  # keep the last good one in a bad run
                        self.save()
                    stop.check()
                    if t.eval_every and self.step % t.eval_every == 0 and self.step < t.max_steps:
                        self.run_eval()
                        stop.check()
                    self._check_divergence(t.max_nonfinite_steps)
                if not (t.checkpoint_every and self.step % t.checkpoint_every == 0):
                    self.save()  # the steps are safe before the final evaluation
                stop.check()
                result = self.run_eval()
                self.save(finished=True)
                return result
        except BaseException as exc:
            if in_step or isinstance(exc, DivergenceError):
                log.warning("stopped inside step %d: the last checkpoint is kept", self.step)
            else:
                what = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
                log.warning(
                    "%s at step %d; saving a checkpoint (resume with --resume)", what, self.step
                )
                self.save()
            for cb in self.callbacks:
                cb.on_error(self, exc)
            raise
        finally:
            for cb in self.callbacks:
                cb.on_close(self)
            if self.probes is not None:
                self.probes.close()

    def _count_nonfinite(self, out: dict[str, Any]) -> None:
        if out["finite"]:
            self.nonfinite_run = 0
            return
        self.nonfinite_run += 1
        self.nonfinite_steps += 1
        log.warning(
            "step %d: the loss or gradient is not finite; the step is skipped (%d in a row)",
            self.step,
            self.nonfinite_run,
        )

    def _check_divergence(self, limit: int) -> None:
        if self.nonfinite_run < max(1, limit):
            return
        self._emit(
            {"step": self.step, "train/diverged": 1, "train/nonfinite_steps": self.nonfinite_run}
        )
        raise DivergenceError(
            f"the run diverged: {self.nonfinite_run} steps in a row (up to step {self.step}) "
            f"had a non-finite loss or gradient (train.max_nonfinite_steps={limit}); the last "
            f"checkpoint in {self.run_dir} is kept. Lower train.lr (now {self.cfg.train.lr:g}) "
            "or raise train.warmup_steps, and start again"
        )

    def run_eval(self) -> EvalResult:
        """Validation on every rank (FSDP's forward is collective); rank 0 logs it."""
        result, record = self.evaluator(dist.unwrap(self.model), self.step)
        record.update({f"mix/{key}": v for key, v in self.policy.eval_log_values().items()})
        self._emit(record)
        self.last_eval = result
        for cb in self.callbacks:
            cb.on_eval_end(self, result)
        return result

    def _train_record(self, window: TrainWindow) -> dict[str, Any]:
        lr = float(self.scheduler.get_last_lr()[0])
        capped = None if self.mixer.caps is None else self.mixer.weights
        record = window.record(self.step, lr, self.sampler, self.policy, capped)
        if self.nonfinite_steps:
            record["train/nonfinite_steps"] = self.nonfinite_steps
        for cb in self.callbacks:
            record.update(cb.log_values(self))
        return record

    def _emit(self, record: dict[str, Any]) -> None:
        if self.dist.is_main:
            for cb in self.callbacks:
                cb.on_log(self, record)

    def _log_start(self) -> None:
        if not self.dist.is_main:  # one header per run, not one per rank
            return
        log.info(
            "training %s (%s params) on %d domains for %d steps, precision %s%s",
            self.cfg.model.preset or self.cfg.model.config_path or self.cfg.model.pretrained_path,
            f"{count_parameters(self.raw_model):,}",
            len(self.domains),
            self.cfg.train.max_steps,
            "bf16" if self.autocast_dtype else "fp32",
            f", {self.dist.world_size} ranks" if self.dist.enabled else "",
        )

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


def train(
    cfg: RunConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
) -> Trainer:
    """Train a run into ``run_dir`` (new, or continued with ``resume=True``).

    Under torchrun every rank calls this; rank 0 writes the run folder. A new run refuses a
    folder that holds one; see :func:`mixlab.train.resume.train_in_folder`.
    """
    existing: Existing = "resume" if resume else "refuse"
    trainer = train_in_folder(cfg, run_dir, Trainer, existing=existing, callbacks=callbacks)
    assert trainer is not None, "only existing='reuse' skips a run"
    return trainer
