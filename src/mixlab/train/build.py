"""The parts of a training run, built from its config: model, precision, optimizer, schedule.

* :func:`model_from_config` — the run's Hugging Face model (preset / config file / local
  folder) with the vocabulary and special tokens of the shard store;
* :func:`resolve_precision` — the autocast dtype for ``train.precision``;
* :func:`build_optimizer` — AdamW, weight decay on matrices only;
* :func:`lr_factor` — linear warm-up, then cosine to ``min_lr_ratio * lr``.
"""

from __future__ import annotations

import math

import torch

from mixlab.config import RunConfig
from mixlab.data.store import ShardStore
from mixlab.model.factory import build_model

# Below this width bf16 autocast on CPU costs more in casts than it saves in matmuls. Measured
# with benchmarks/bench_trainer.py on an AVX512-BF16 CPU (16x128 tokens, 2 threads): bf16 ran
# at 0.70x the fp32 speed at hidden 64 (llama-1m) and at 1.25x at hidden 192 (llama-5m).
CPU_BF16_MIN_HIDDEN = 192


def resolve_precision(precision: str, model: torch.nn.Module | None = None) -> torch.dtype | None:
    """The autocast dtype for ``train.precision`` (None means plain fp32).

    ``auto`` picks bf16 on GPUs that support it, and on CPUs with native bf16 (AVX512-BF16 /
    AMX) only for models at least :data:`CPU_BF16_MIN_HIDDEN` wide (``model.config.
    hidden_size``; unknown width counts as wide). Without native support oneDNN emulates
    bf16 and autocast is ~8x *slower* than fp32 (measured on an AVX2 machine).
    """
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return None
    hidden = getattr(getattr(model, "config", None), "hidden_size", None)
    return None if hidden is not None and hidden < CPU_BF16_MIN_HIDDEN else torch.bfloat16


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
