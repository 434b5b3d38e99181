"""Measurements inside the model that some mixing policies need in their Feedback (AC-ODM).

Most policies learn from per-domain losses alone. A policy may also ask, through attributes
the loop reads once at start-up (see :mod:`mixlab.mixing.base`, "optional capabilities"):

* ``requires_gradients`` with ``reward_layers`` and ``reward_role``: per-domain gradient sums of
  those blocks' weight matrices, captured in the ordinary backward pass of the mixed batch
  (:class:`~mixlab.model.grad_capture.DomainGradCapture`). Feedback gets ``grad_sum`` (K, P),
  the sum of per-token gradients, and ``extras["grad_count"]`` = the domain's target tokens,
  so ``grad_sum[i] / grad_count[i]`` is domain i's mean gradient.
* ``depth_points`` with ``weight_tracker``: Frobenius norms of the MLP down-projections at
  those relative depths, measured after the optimiser step, and their change against the
  tracker's reference (Feedback ``param_norms`` and ``extras["param_diff_norms"]``).

Blocks and matrices are found by role (:mod:`mixlab.model.layers`), so GPT-NeoX and Llama
models (and most other HF decoders) work alike. :meth:`ModelProbes.for_policy` returns None
when a policy needs none of this, and the loop then does no extra work at all.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mixlab.mixing.acodm.reward import select_reward_blocks
from mixlab.mixing.acodm.state import select_depth_blocks
from mixlab.model.grad_capture import DomainGradCapture
from mixlab.model.layers import decoder_blocks, role_modules


class ModelProbes:
    """Gradient capture and weight-norm tracking for one (policy, model) pair."""

    def __init__(self, policy: Any, model: torch.nn.Module, num_domains: int) -> None:
        n_layers = len(decoder_blocks(model))
        self.capture: DomainGradCapture | None = None
        if getattr(policy, "requires_gradients", False):
            blocks = select_reward_blocks(n_layers, policy.reward_layers)
            modules = role_modules(model, getattr(policy, "reward_role", "mlp_down"), blocks)
            self.capture = DomainGradCapture(modules, num_domains)
        self.tracked: list[torch.Tensor] = []
        self.tracker = getattr(policy, "weight_tracker", None)
        points = getattr(policy, "depth_points", None)
        if points and self.tracker is not None:
            blocks = select_depth_blocks(n_layers, points)
            self.tracked = [m.weight for m in role_modules(model, "mlp_down", blocks)]

    @classmethod
    def for_policy(
        cls, policy: Any, model: torch.nn.Module, num_domains: int
    ) -> ModelProbes | None:
        wants = getattr(policy, "requires_gradients", False) or getattr(
            policy, "depth_points", None
        )
        return cls(policy, model, num_domains) if wants else None

    @property
    def capture_seconds(self) -> float:
        """Seconds spent in the gradient hooks since the last :meth:`feedback_fields`."""
        return 0.0 if self.capture is None else self.capture.seconds

    def begin(self, batch: dict[str, torch.Tensor]) -> None:
        """Call before each micro-batch's forward pass."""
        if self.capture is not None:
            self.capture.begin(batch["domain_id"])

    def feedback_fields(self, step_tokens: int, token_count: np.ndarray) -> dict[str, Any]:
        """Feedback keyword arguments of this step; call after ``optimizer.step()``.

        ``step_tokens`` is the divisor of the step's loss (its target tokens), so scaling the
        captured sums by it gives sums of per-token gradients.
        """
        fields: dict[str, Any] = {}
        extras: dict[str, Any] = {}
        if self.capture is not None:
            fields["grad_sum"] = self.capture.collect(scale=float(step_tokens))
            extras["grad_count"] = np.asarray(token_count, dtype=np.float64).copy()
        if self.tracked and self.tracker is not None:
            norms, diffs = self.tracker.measure(self.tracked)
            fields["param_norms"] = norms
            extras["param_diff_norms"] = diffs
        if extras:
            fields["extras"] = extras
        return fields

    def close(self) -> None:
        if self.capture is not None:
            self.capture.close()
