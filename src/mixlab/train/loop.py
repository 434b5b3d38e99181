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
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mixlab import __version__
from mixlab.config import RunConfig
from mixlab.data.store import ShardStore
from mixlab.errors import ConfigError, DataError, ResumeError
from mixlab.eval.perplexity import EvalResult, evaluate
from mixlab.mixing.base import Feedback, MixingPolicy, PolicyContext, build_policy
from mixlab.model.factory import build_model, count_parameters
from mixlab.model.losses import per_domain_sums, target_mask, token_losses
from mixlab.sampling.sampler import MixtureSampler
from mixlab.train.callbacks import Callback, JsonlSink, TensorBoardSink
from mixlab.train.checkpoint import (
    CHECKPOINT_NAME,
    capture_rng,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from mixlab.train.probes import ModelProbes

log = logging.getLogger(__name__)

CONFIG_NAME = "config.yaml"
EVAL_NAME = "eval.json"
POLICY_FILE_NAME = "policy.acodm.pt"


def resolve_precision(precision: str) -> torch.dtype | None:
    """The autocast dtype for ``train.precision`` (None means plain fp32)."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    # auto: bf16 only with native hardware support. On CPUs without AVX512-BF16/AMX, oneDNN
    # emulates bf16 and autocast is ~10x *slower* than fp32 (measured on an AVX2 machine).
    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else None


def lr_factor(step: int, warmup_steps: int, max_steps: int, min_ratio: float) -> float:
    """Multiplier of the peak LR for the update that follows ``step`` scheduler calls."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, max_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_optimizer(model: torch.nn.Module, cfg: RunConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (biases, norms and 1-D params are exempt)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    t = cfg.train
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": t.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=t.lr,
        betas=(t.beta1, t.beta2),
    )


def model_from_config(cfg: RunConfig, store: ShardStore) -> torch.nn.Module:
    """The run's model: preset / config file / local folder, vocabulary from the store."""
    return build_model(
        preset=cfg.model.preset,
        config_path=cfg.model.config_path,
        pretrained_path=cfg.model.pretrained_path,
        vocab_size=store.vocab_size,
        eos_id=store.eos_id,
        bos_id=store.bos_id,
        max_seq_len=cfg.data.seq_len,
        seed=cfg.train.seed,
        overrides=cfg.model.overrides,
    )


class ReferenceScorer:
    """A frozen reference LM that scores the trainer's micro-batches (DoReMi, METHODS.md §3).

    Per token j of a micro-batch the excess loss is clipped *per token*,
    ``max(l_theta,j - l_ref,j, 0)``, then summed per domain: the sums cannot be rebuilt from
    per-domain means. The reference runs under ``no_grad`` in eval mode, its parameters have
    ``requires_grad=False`` and it is never handed to the optimiser.
    """

    def __init__(self, path: str | Path, store: ShardStore, seq_len: int) -> None:
        state = load_checkpoint(path)
        if not state.get("finished"):
            log.warning("reference %s is unfinished (step %d); using it as is", path, state["step"])
        if state["store_fingerprint"] != store.fingerprint:
            ref_store_path = RunConfig.from_dict(state["config"]).data.store
            try:
                ref_store = ShardStore(ref_store_path)
            except DataError as exc:
                raise ConfigError(
                    f"mixing.doremi.reference={path}: the reference was trained on another "
                    f"store, whose tokenizer cannot be checked ({exc})"
                ) from exc
            if ref_store.tokenizer_hash != store.tokenizer_hash:
                raise ConfigError(
                    f"mixing.doremi.reference={path}: the reference was trained with another "
                    f"tokenizer (store {ref_store.path}); train it on a store made with the "
                    "same tokenizer as data.store"
                )
        self.model = model_from_config(RunConfig.from_dict(state["config"]), store)
        self.model.load_state_dict(state["model"])
        self.model.requires_grad_(False)
        self.model.eval()
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if limit is not None and limit < seq_len:
            raise ConfigError(
                f"mixing.doremi.reference={path}: the reference handles {limit} positions but "
                f"data.seq_len is {seq_len}; lower data.seq_len or use a longer reference"
            )

    def score(
        self,
        batch: dict[str, torch.Tensor],
        tok_loss: torch.Tensor,
        num_domains: int,
        autocast: contextlib.AbstractContextManager[Any],
    ) -> dict[str, torch.Tensor]:
        """Per-domain (K,) ``excess_sum``, ``ref_loss_sum`` and ``clipped_count`` (float64)."""
        with torch.no_grad(), autocast:
            ref_logits = self.model(input_ids=batch["input_ids"]).logits
        ref_loss = token_losses(ref_logits, batch["labels"])
        return clipped_excess_sums(tok_loss.detach(), ref_loss, batch, num_domains)


def clipped_excess_sums(
    tok_loss: torch.Tensor,
    ref_loss: torch.Tensor,
    batch: dict[str, torch.Tensor],
    num_domains: int,
) -> dict[str, torch.Tensor]:
    """Sum max(tok_loss - ref_loss, 0), ref_loss and [tok_loss < ref_loss] per domain."""
    mask = target_mask(batch["labels"])
    diff = tok_loss - ref_loss
    sums = {
        "excess_sum": diff.clamp(min=0),
        "ref_loss_sum": ref_loss,
        "clipped_count": (diff < 0).to(tok_loss.dtype),
    }
    return {
        key: per_domain_sums(value, mask, batch["domain_id"], num_domains)[0].double()
        for key, value in sums.items()
    }


class Trainer:
    """Owns one run: store, model, policy, sampler, optimizer; ``fit()`` runs the loop."""

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
        self.store = ShardStore(cfg.data.store)
        self.domains = self.store.domains
        self.autocast_dtype = resolve_precision(t.precision)
        self.model = model_from_config(cfg, self.store)
        self.model.train()
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
            self.reference = ReferenceScorer(path, self.store, cfg.data.seq_len)
        self.probes = ModelProbes.for_policy(self.policy, self.model, len(self.domains))
        self.policy_file = self._policy_file_path()
        self.sampler = MixtureSampler(
            self.store,
            seq_len=cfg.data.seq_len,
            batch_size=t.batch_size,
            grad_accum=t.grad_accum,
            weights=self.policy.weights(),
            mode=cfg.mixing.sampling,
            seed=t.seed,
            floor_per_domain=int(getattr(self.policy, "floor_per_domain", 0)),
        )
        self.optimizer = build_optimizer(self.model, cfg)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda s: lr_factor(s, t.warmup_steps, t.max_steps, t.min_lr_ratio),
        )
        self.step = 0
        self.elapsed = 0.0
        self.callbacks: list[Callback] = [JsonlSink(self.run_dir), *callbacks]
        if t.tensorboard:
            self.callbacks.append(TensorBoardSink(self.run_dir))
        self.last_eval: EvalResult | None = None

    # ------------------------------------------------------------------ state
    def state_dict(self, finished: bool = False) -> dict[str, Any]:
        return {
            "mixlab_version": __version__,
            "step": self.step,
            "finished": finished,
            "config": self.cfg.to_dict(),
            "store_fingerprint": self.store.fingerprint,
            "domains": list(self.domains),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
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
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.sampler.load_state_dict(state["sampler"])
        self.policy.load_state_dict(state["policy"])
        restore_rng(state["rng"])
        self.step = int(state["step"])
        self.elapsed = float(state.get("elapsed_seconds", 0.0))

    def save(self, finished: bool = False) -> Path:
        if self.policy_file is not None:
            self.policy.save_policy_file(  # type: ignore[attr-defined]
                self.policy_file,
                {"model_params": count_parameters(self.model), "seed": self.cfg.train.seed},
            )
        return save_checkpoint(self.run_dir / CHECKPOINT_NAME, self.state_dict(finished))

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
        return torch.autocast(device_type="cpu", dtype=self.autocast_dtype)

    def train_step(self, batches: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
        """Forward/backward every micro-batch, then one optimiser update."""
        K = len(self.domains)
        masks = [b["labels"][:, 1:] != -100 for b in batches]
        step_tokens = max(1, int(sum(int(m.sum()) for m in masks)))
        loss_sum = torch.zeros(K, dtype=torch.float64)
        token_count = torch.zeros(K, dtype=torch.float64)
        ref_sums: dict[str, torch.Tensor] = {}
        for batch, mask in zip(batches, masks, strict=True):
            if self.probes is not None:
                self.probes.begin(batch)  # per-domain gradient hooks see this micro-batch
            with self.autocast():
                logits = self.model(input_ids=batch["input_ids"]).logits
            tok_loss = token_losses(logits, batch["labels"])  # (B, L-1) fp32, 0 where masked
            (tok_loss.sum() / step_tokens).backward()
            sums, counts = per_domain_sums(tok_loss.detach(), mask, batch["domain_id"], K)
            loss_sum += sums.double()
            token_count += counts.double()
            if self.reference is not None:  # DoReMi excess over the frozen reference
                for key, value in self.reference.score(batch, tok_loss, K, self.autocast()).items():
                    ref_sums[key] = ref_sums.get(key, 0) + value
        grad_norm = (
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)
            if self.cfg.train.grad_clip > 0
            else torch.tensor(float("nan"))
        )
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        out = {
            "loss": float(loss_sum.sum() / step_tokens),
            "loss_sum": loss_sum.numpy(),
            "token_count": token_count.numpy(),
            "grad_norm": float(grad_norm),
            **{key: value.numpy() for key, value in ref_sums.items()},
        }
        if self.probes is not None:  # AC-ODM: gradients of this step, weight norms after it
            out["capture_seconds"] = self.probes.capture_seconds
            out["probe_fields"] = self.probes.feedback_fields(step_tokens, token_count.numpy())
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
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for cb in self.callbacks:
            cb.on_train_start(self.step)
        log.info(
            "training %s (%s params) on %d domains for %d steps, precision %s",
            cfg.model.preset or cfg.model.config_path or cfg.model.pretrained_path,
            f"{count_parameters(self.model):,}",
            len(self.domains),
            t.max_steps,
            "bf16" if self.autocast_dtype else "fp32",
        )
        window = _Window(self.domains)
        try:
            for _ in self._progress():
                start = time.perf_counter()
                batches = self.sampler.next_step()
                out = self.train_step(batches)
                self.step += 1
                feedback = Feedback(
                    step=self.step,
                    total_steps=t.max_steps,
                    loss_sum=out["loss_sum"],
                    token_count=out["token_count"],
                    microbatch_count=self.microbatch_counts(batches),
                    excess_sum=out.get("excess_sum"),
                    ref_loss_sum=out.get("ref_loss_sum"),
                    **out.get("probe_fields", {}),
                )
                policy_start = time.perf_counter()
                self.policy.update(feedback)  # <- the mixture learns from this step
                if self.step % cfg.mixing.update_every == 0:
                    self.sampler.set_weights(self.policy.weights())
                policy_seconds = time.perf_counter() - policy_start
                seconds = time.perf_counter() - start
                self.elapsed += seconds
                window.add(
                    out,
                    sum(b["input_ids"].numel() for b in batches),
                    seconds,
                    policy_seconds,
                )
                if self.step % t.log_every == 0 or self.step == t.max_steps:
                    self._emit(
                        window.record(
                            self.step,
                            float(self.scheduler.get_last_lr()[0]),
                            self.sampler,
                            self.policy,
                        )
                    )
                    window = _Window(self.domains)
                if t.eval_every and self.step % t.eval_every == 0 and self.step < t.max_steps:
                    self.run_eval()
                if t.checkpoint_every and self.step % t.checkpoint_every == 0:
                    self.save()
        except KeyboardInterrupt:
            log.warning(
                "interrupted at step %d; saving a checkpoint (resume with --resume)", self.step
            )
            self.save()
            raise
        result = self.run_eval()
        self.save(finished=True)
        for cb in self.callbacks:
            cb.on_train_end(self.step)
        return result

    def run_eval(self) -> EvalResult:
        result = evaluate(
            self.model,
            self.store,
            seq_len=self.cfg.data.seq_len,
            batch_size=self.cfg.eval.batch_size,
            max_tokens_per_domain=self.cfg.eval.max_tokens_per_domain,
            autocast_dtype=self.autocast_dtype,
        )
        record = eval_record(result, self.step)
        extra = getattr(self.policy, "eval_log_values", None)
        if extra is not None:
            record.update({f"mix/{key}": value for key, value in extra().items()})
        self._emit(record)
        self.last_eval = result
        return result

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
            disable=not self.cfg.train.progress,
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
        self.grad_norm = 0.0
        self.loss_sum = np.zeros(len(domains))
        self.token_count = np.zeros(len(domains))
        self.ref_sums: dict[str, np.ndarray] = {}  # DoReMi: excess, reference loss, clipped

    def add(
        self,
        out: dict[str, Any],
        tokens: int,
        seconds: float,
        policy_seconds: float,
    ) -> None:
        self.loss += out["loss"]
        self.grad_norm += out["grad_norm"]
        self.loss_sum += out["loss_sum"]
        self.token_count += out["token_count"]
        for key in ("excess_sum", "ref_loss_sum", "clipped_count"):
            if key in out:
                self.ref_sums[key] = self.ref_sums.get(key, 0) + out[key]
        self.capture_seconds += out.get("capture_seconds", 0.0)
        self.steps += 1
        self.tokens += tokens
        self.seconds += seconds
        self.policy_seconds += policy_seconds

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
    """Train a run into ``run_dir`` (new, or continued with ``resume=True``)."""
    run_dir = Path(run_dir)
    ckpt = run_dir / CHECKPOINT_NAME
    if resume:
        state = load_checkpoint(ckpt)
        saved = RunConfig.from_dict(state["config"])
        if saved.to_dict() != cfg.to_dict():
            log.warning("resuming with the config saved in %s (command-line config ignored)", ckpt)
        cfg = saved
    elif ckpt.exists():
        raise ConfigError(
            f"{run_dir} already holds a run; continue it with --resume or choose a new --out"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(run_dir / "config.yaml")
    trainer = Trainer(cfg, run_dir, callbacks)
    if resume:
        trainer.load_state_dict(state)
        if state.get("finished"):
            log.info("%s already finished at step %d", run_dir, trainer.step)
    trainer.fit()
    (run_dir / EVAL_NAME).write_text(
        _json(eval_record(trainer.last_eval, trainer.step)) if trainer.last_eval else "{}",
        encoding="utf-8",
    )
    return trainer


def _json(obj: Any) -> str:
    import json

    return json.dumps(obj, indent=2)
