"""Run torchtitan 0.3.0 with mixlab's MixingTrainer on a CPU-only torch (2 gloo ranks in tests).

Used by tests/integrations/test_torchtitan.py as the torchrun script::

    python -m torch.distributed.run --standalone --nproc-per-node=2 \\
        tests/integrations/titan_worker.py --module tests.integrations.titan_worker \\
        --config mixlab_tiny --mixing.store <store> --dump_folder <dir>

The CPU workarounds live here, in test code, not in mixlab. torchtitan 0.3.0 picks its device
when imported (``_get_available_device_type() or "cuda"``), so torch must report "cpu" BEFORE
torchtitan is imported; torch.cpu gets inert CUDA-style memory functions for torchtitan's
memory monitor and a ``current_device`` that barriers accept. ``torch.distributed.set_timeout``
(called by torchtitan after step 1, absent from torch 2.13) is the torchtitan/torch mismatch
that hits GPU runs too (README: "Online mixing inside torchtitan"). :func:`mixlab_tiny` swaps
FlexAttention (no backward on CPU) for causal SDPA, uses the ``partial_dtensor`` SPMD backend
(FSDP under ``spmd_types`` demands DTensor parameters) and makes FSDP reduce with plain sums
(gloo has no PREMUL_SUM).
"""

from __future__ import annotations

import dataclasses
import runpy
import types
from typing import Any

import torch
import torch._utils

torch._utils._get_available_device_type = lambda: "cpu"  # type: ignore[assignment]
_cpu: Any = torch.cpu
_cpu.get_device_name = lambda *a, **k: "cpu"
_cpu.get_device_properties = lambda *a, **k: types.SimpleNamespace(total_memory=2**34, name="cpu")
_cpu.memory_stats = lambda *a, **k: {}
_cpu.reset_peak_memory_stats = lambda *a, **k: None
_cpu.empty_cache = lambda *a, **k: None
_cpu.current_device = lambda: 0
if not hasattr(torch.distributed, "set_timeout"):
    from torch.distributed.distributed_c10d import _set_pg_timeout

    torch.distributed.set_timeout = _set_pg_timeout  # type: ignore[attr-defined]


def _sum_only_fsdp(parallelize_fn: Any) -> Any:
    def wrapped(model: Any, **kwargs: Any) -> Any:
        from torch.distributed.fsdp import FSDPModule

        model = parallelize_fn(model, **kwargs)
        for module in model.modules():
            if isinstance(module, FSDPModule):
                module.set_force_sum_reduction_for_comms(True)
        return model

    return wrapped


def mixlab_tiny() -> Any:
    """llama3_debugmodel (vocab 2048 >= the tiny store's 512) on CPU, 6 steps, DDP-style."""
    from torchtitan.components.checkpoint import CheckpointManager
    from torchtitan.models.common.attention import FlexAttention, ScaledDotProductAttention
    from torchtitan.models.llama3.config_registry import llama3_debugmodel

    from mixlab.integrations.torchtitan import mixing_config

    base = llama3_debugmodel()
    assert base.model_spec is not None
    base.model_spec = dataclasses.replace(
        base.model_spec, parallelize_fn=_sum_only_fsdp(base.model_spec.parallelize_fn)
    )
    for _fqn, _cfg, parent, attr in base.model_spec.model.traverse(FlexAttention.Config):
        setattr(parent, attr, ScaledDotProductAttention.Config())
    cfg = mixing_config(base, policy="odm", sampling="homogeneous")
    cfg.parallelism.spmd_backend = "partial_dtensor"
    cfg.parallelism.data_parallel_replicate_degree = 2
    cfg.parallelism.data_parallel_shard_degree = 1
    cfg.training.disable_cuda_graphs = True
    cfg.training.seq_len = 32
    cfg.training.local_batch_size = 2
    cfg.training.global_batch_size = 8  # 2 micro-batches per rank and step
    cfg.training.steps = 6
    cfg.validator.enable = False
    cfg.metrics.log_freq = 1
    cfg.debug.seed = 1234
    cfg.debug.deterministic = True
    cfg.checkpoint = CheckpointManager.Config(
        enable=True, interval=3, last_save_model_only=False, keep_latest_k=0
    )
    return cfg


if __name__ == "__main__":
    runpy.run_module("torchtitan.train", run_name="__main__", alter_sys=True)
