"""Data parallelism through ``torchrun``: DDP or FSDP2, plus the few collectives mixing needs.

mixlab has no distributed layer of its own; it uses ``torch.distributed`` as it is meant to
be used. Launch any training command with torchrun and every process becomes one rank::

    torchrun --nproc-per-node 2 -m mixlab train --config configs/tiny_cpu.yaml --out runs/ddp

What each part does
    * :func:`init_distributed` reads torchrun's environment (``RANK``, ``WORLD_SIZE``,
      ``LOCAL_RANK``) and starts the process group: ``gloo`` on CPU, ``nccl`` on GPUs.
    * :func:`wrap_model`: ``train.distributed=ddp`` wraps the model in
      ``DistributedDataParallel``; ``fsdp`` shards every transformer block and then the root
      with FSDP2 (``torch.distributed.fsdp.fully_shard``).
    * The sampler is rank-aware (each rank reads its own windows of the same global step),
      so ranks need no data communication.
    * Per step, :func:`all_reduce_sum` adds up the feedback every policy reads (per-domain
      loss sums, token and micro-batch counts, DoReMi's excess sums, AC-ODM's per-domain
      gradient sums) in one collective per dtype. Rank 0 updates the policy and
      :func:`broadcast_weights` sends the K new weights to all ranks, so every rank samples
      the next step from bit-identical weights.
    * :func:`full_state_dicts` / :func:`load_full_state_dicts` gather the model and optimiser
      into ordinary (unsharded) state dicts, so a checkpoint has the same format for one
      process, DDP and FSDP, and rank 0 alone writes it.

The step's loss is normalised by the *global* number of target tokens (an all-reduced count
times the world size, undone by the gradient averaging), so a run on W ranks with
``grad_accum = g`` makes the same updates as one process with ``grad_accum = W g``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from mixlab.errors import ConfigError

log = logging.getLogger(__name__)

STRATEGIES = ("auto", "ddp", "fsdp")


@dataclass(frozen=True)
class DistContext:
    """Who this process is: rank, world size and the device it computes on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(preference: str, local_rank: int = 0) -> torch.device:
    """``train.device``: auto (CUDA when available, else CPU) | cpu | cuda."""
    if preference == "cpu":
        return torch.device("cpu")
    if preference == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda: no CUDA device is available here; use auto or cpu")
    if preference in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init_distributed(device_preference: str = "auto") -> DistContext:
    """The rank of this process; starts the process group when torchrun launched several."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_preference, local_rank)
    if world_size <= 1:
        return DistContext(device=device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
        log.info("rank %d of %d: process group up (%s)", dist.get_rank(), world_size, backend)
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, device)


def wrap_model(model: torch.nn.Module, ctx: DistContext, strategy: str) -> torch.nn.Module:
    """DDP-wrap or FSDP2-shard ``model`` (already on ``ctx.device``); unchanged on one rank."""
    if not ctx.enabled:
        return model
    if strategy in ("auto", "ddp"):
        from torch.nn.parallel import DistributedDataParallel

        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from mixlab.model.layers import decoder_blocks

    mesh = init_device_mesh(ctx.device.type, (ctx.world_size,))
    for block in decoder_blocks(model):
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module itself (DDP's ``.module``); FSDP2 shards in place, so it is returned as is."""
    return getattr(model, "module", model) if _is_ddp(model) else model


def _is_ddp(model: torch.nn.Module) -> bool:
    return isinstance(model, torch.nn.parallel.DistributedDataParallel)


def set_gradient_sync(model: torch.nn.Module, enabled: bool) -> None:
    """Skip the gradient all-reduce on all but the last micro-batch of a step."""
    if _is_ddp(model):
        model.require_backward_grad_sync = enabled  # type: ignore[assignment]  # = no_sync()
    elif hasattr(model, "set_requires_gradient_sync"):  # an FSDP2 module
        model.set_requires_gradient_sync(enabled)  # type: ignore[operator]


def all_reduce_sum(ctx: DistContext, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Sum same-named arrays over ranks: one collective per dtype group (float64 / float32)."""
    out = {k: np.asarray(v) for k, v in arrays.items()}
    if not ctx.enabled:
        return out
    for dtype in (np.float64, np.float32):
        keys = [k for k, v in out.items() if (v.dtype == np.float32) == (dtype == np.float32)]
        if not keys:
            continue
        flat = np.concatenate([out[k].astype(dtype, copy=False).ravel() for k in keys])
        buf = torch.from_numpy(flat).to(ctx.device)
        dist.all_reduce(buf, op=dist.ReduceOp.SUM)
        values, start = buf.cpu().numpy(), 0
        for k in keys:
            n = out[k].size
            out[k] = values[start : start + n].reshape(out[k].shape).astype(out[k].dtype)
            start += n
    return out


def broadcast_weights(ctx: DistContext, weights: np.ndarray) -> np.ndarray:
    """Rank 0's weights on every rank (float64, bit-identical)."""
    if not ctx.enabled:
        return weights
    buf = torch.as_tensor(np.asarray(weights, dtype=np.float64)).to(ctx.device)
    dist.broadcast(buf, src=0)
    return buf.cpu().numpy()


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def full_state_dicts(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, strategy: str, ctx: DistContext
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Unsharded model and optimiser state dicts (complete on rank 0; FSDP: collective)."""
    if ctx.enabled and strategy == "fsdp":
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
        )

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return (
            get_model_state_dict(model, options=opts),
            get_optimizer_state_dict(model, optimizer, options=opts),
        )
    return unwrap(model).state_dict(), optimizer.state_dict()


def load_full_state_dicts(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    model_state: dict[str, Any],
    optimizer_state: dict[str, Any],
    strategy: str,
    ctx: DistContext,
) -> None:
    """Load unsharded state dicts on every rank (FSDP reshards them locally)."""
    if ctx.enabled and strategy == "fsdp":
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        opts = StateDictOptions(full_state_dict=True)
        set_model_state_dict(model, model_state, options=opts)
        set_optimizer_state_dict(model, optimizer, optimizer_state, options=opts)
        return
    unwrap(model).load_state_dict(model_state)
    optimizer.load_state_dict(optimizer_state)


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """A sharded (DTensor) parameter gathered whole; a plain tensor as is. FSDP: collective."""
    gather = getattr(t, "full_tensor", None)
    return gather() if callable(gather) else t
