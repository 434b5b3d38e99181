"""Measurements inside the model that some mixing policies need in their Feedback (AC-ODM).

Most policies learn from per-domain losses alone. A policy that needs more says so in its
:class:`~mixlab.mixing.base.PolicyNeeds` (``policy.needs``), and :class:`ModelProbes` does it:

* ``needs.gradients`` (blocks, role): per-domain gradient sums of those blocks' weight matrices,
  captured in the ordinary backward pass of the mixed batch
  (:class:`~mixlab.model.grad_capture.DomainGradCapture`). Feedback gets ``grad_sum`` (K, P),
  the sum of per-token gradients, and ``extras["grad_count"]`` = the domain's target tokens,
  so ``grad_sum[i] / grad_count[i]`` is domain i's mean gradient.
* ``needs.weight_norms`` (depth points): Frobenius norms of the MLP down-projections at those
  relative depths, measured after the optimiser step, and their change against a reference
  copy (:class:`WeightNormTracker`; Feedback ``param_norms`` and
  ``extras["param_diff_norms"]``). The reference copies are model state, so they live here and
  in the trainer's checkpoint (``probes``), never in a policy.

Blocks and matrices are found by role (:mod:`mixlab.model.layers`), so GPT-NeoX and Llama
models (and most other HF decoders) work alike. :meth:`ModelProbes.for_needs` returns None
when a policy needs none of this, and the loop then does no extra work at all.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from mixlab.mixing.acodm.reward import select_reward_blocks
from mixlab.mixing.acodm.state import select_depth_blocks
from mixlab.mixing.base import PolicyNeeds
from mixlab.model.grad_capture import DomainGradCapture
from mixlab.model.layers import decoder_blocks, role_modules
from mixlab.train.distributed import full_tensor


class ModelProbes:
    """Gradient capture and weight-norm tracking for one (policy needs, model) pair."""

    def __init__(self, needs: PolicyNeeds, model: torch.nn.Module, num_domains: int) -> None:
        n_layers = len(decoder_blocks(model))
        self.capture: DomainGradCapture | None = None
        if needs.gradients is not None:
            blocks = select_reward_blocks(n_layers, needs.gradients.blocks)
            modules = role_modules(model, needs.gradients.role, blocks)
            self.capture = DomainGradCapture(modules, num_domains)
        self.tracked: list[torch.nn.Linear] = []  # modules, not weights: FSDP swaps params
        self.tracker: WeightNormTracker | None = None
        if needs.weight_norms is not None:
            points = needs.weight_norms.depth_points
            self.tracked = role_modules(model, "mlp_down", select_depth_blocks(n_layers, points))
            self.tracker = WeightNormTracker(needs.weight_norms.delta_reference)

    @classmethod
    def for_needs(
        cls, needs: PolicyNeeds, model: torch.nn.Module, num_domains: int
    ) -> ModelProbes | None:
        return cls(needs, model, num_domains) if needs.looks_inside_model else None

    @property
    def capture_seconds(self) -> float:
        """Seconds spent in the gradient hooks since the last :meth:`measure`."""
        return 0.0 if self.capture is None else self.capture.seconds

    def begin(self, batch: dict[str, torch.Tensor]) -> None:
        """Call before each micro-batch's forward pass."""
        if self.capture is not None:
            self.capture.begin(batch["domain_id"])

    def measure(self, loss_scale_inverse: float, token_count: np.ndarray) -> dict[str, np.ndarray]:
        """This step's ``grad_sum``, ``grad_count``, ``param_norms``, ``param_diff_norms``.

        Call after ``optimizer.step()``. ``loss_scale_inverse`` undoes the loss normalisation
        of the backward pass (the step's target tokens for a token-mean loss), so the captured
        sums become sums of per-token gradients. The first two are this rank's and must be
        summed over ranks; the norms are the same on every rank (gathered under FSDP, so
        every rank must call this).
        """
        fields: dict[str, np.ndarray] = {}
        if self.capture is not None:
            fields["grad_sum"] = self.capture.collect(scale=loss_scale_inverse)
            fields["grad_count"] = np.asarray(token_count, dtype=np.float64).copy()
        if self.tracker is not None:
            matrices = [full_tensor(m.weight) for m in self.tracked]
            fields["param_norms"], fields["param_diff_norms"] = self.tracker.measure(matrices)
        return fields

    def state_dict(self) -> dict[str, Any]:
        """The weight-norm references (for an exact resume); empty without tracking."""
        return {} if self.tracker is None else {"weight_tracker": self.tracker.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.tracker is not None and state.get("weight_tracker") is not None:
            self.tracker.load_state_dict(state["weight_tracker"])

    def close(self) -> None:
        """Remove the gradient hooks from the model."""
        if self.capture is not None:
            self.capture.close()


class WeightNormTracker:
    """Measures ||W_b||_F and ||W_b - W_b,ref||_F of the D tracked matrices, keeping the refs.

    Call :meth:`measure` once per step after the optimiser update, with the matrices in
    depth-point order. The first call stores the references and reports zero change; later
    calls refresh them every step (``previous``) or never (``first``). Its state (the reference
    copies) belongs in the checkpoint for an exact resume.
    """

    def __init__(self, delta_reference: str = "previous") -> None:
        assert delta_reference in ("previous", "first"), delta_reference
        self.delta_reference = delta_reference
        self._ref: list[torch.Tensor] | None = None

    @torch.no_grad()
    def measure(self, matrices: Sequence[torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
        """(norms (D,), diff_norms (D,)) as float64."""
        current = [m.detach().to(device="cpu", dtype=torch.float64) for m in matrices]
        norms = np.array([float(torch.linalg.vector_norm(m)) for m in current])
        if self._ref is None:
            diffs = np.zeros(len(current))
            self._ref = [m.clone() for m in current]
        else:
            if len(self._ref) != len(current):
                raise ValueError(
                    f"WeightNormTracker: got {len(current)} matrices, the reference has "
                    f"{len(self._ref)}"
                )
            pairs = zip(current, self._ref, strict=True)
            diffs = np.array([float(torch.linalg.vector_norm(m - r)) for m, r in pairs])
            if self.delta_reference == "previous":
                self._ref = [m.clone() for m in current]
        return norms, diffs

    def state_dict(self) -> dict[str, Any]:
        return {
            "delta_reference": self.delta_reference,
            "reference": None if self._ref is None else copy.deepcopy(self._ref),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        ref = state["reference"]
        self._ref = None if ref is None else [t.clone() for t in ref]
