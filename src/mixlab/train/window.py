"""The train record of a log step: statistics accumulated over the steps since the last one.

Every ``train.log_every`` steps the loop writes one record averaged over the window: loss, LR,
gradient norm, throughput, time in the mixing policy (and in AC-ODM's gradient capture and
held-out pass, and DoReMi's reference forward), the mixture (``mix/weight/<d>``,
``mix/p_eff/<d>`` with a per-domain floor, ``mix/entropy``), the sampler's token accounting
(tokens, epochs, achieved vs requested shares), the weights after the epoch caps
(``mix/capped/<d>``) and each domain's train loss; with a reference model also the reference
loss, the clipped and unclipped excess per domain and the share of clipped tokens.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mixlab.mixing.base import MixingPolicy
from mixlab.sampling.sampler import MixtureSampler


class TrainWindow:
    """Accumulates train statistics between two log lines."""

    def __init__(self, domains: tuple[str, ...]) -> None:
        self.domains = domains
        self.loss = 0.0
        self.steps = 0
        self.finite_steps = 0
        self.tokens = 0
        self.seconds = 0.0
        self.policy_seconds = 0.0
        self.capture_seconds = 0.0
        self.heldout_seconds = 0.0
        self.reference_seconds = 0.0
        self.grad_norm = 0.0
        self.loss_sum = np.zeros(len(domains))
        self.token_count = np.zeros(len(domains))
        self.ref_sums: dict[str, np.ndarray] = {}  # DoReMi: excess, reference loss, clipped

    def add(self, out: dict[str, Any]) -> None:
        """Add one step's ``Trainer.run_step`` output."""
        if out.get("finite", True):  # a skipped (non-finite) step is counted, not averaged
            self.loss += out["loss"]
            self.grad_norm += out["grad_norm"]
            self.loss_sum += out["loss_sum"]
            self.token_count += out["token_count"]
            self.finite_steps += 1
        for key in ("excess_sum", "ref_loss_sum", "clipped_count"):
            if key in out:
                self.ref_sums[key] = self.ref_sums.get(key, 0) + out[key]
        self.capture_seconds += out.get("capture_seconds", 0.0)
        self.heldout_seconds += out.get("heldout_seconds", 0.0)
        self.reference_seconds += out.get("reference_seconds", 0.0)
        self.steps += 1
        self.tokens += out["tokens"]
        self.seconds += out["seconds"]
        self.policy_seconds += out["policy_seconds"]

    def record(
        self,
        step: int,
        lr: float,
        sampler: MixtureSampler,
        policy: MixingPolicy,
        capped: np.ndarray | None = None,
    ) -> dict[str, Any]:
        """The record; ``capped``: the weights after the epoch caps (``mix/capped/<d>``)."""
        n = max(1, self.steps)
        finite = self.finite_steps
        rec: dict[str, Any] = {
            "step": step,
            "train/loss": self.loss / finite if finite else float("nan"),
            "train/lr": lr,
            "train/grad_norm": self.grad_norm / finite if finite else float("nan"),
            "train/tokens_per_s": self.tokens / max(self.seconds, 1e-9),
            "train/step_seconds": self.seconds / n,
            "mix/policy_seconds": self.policy_seconds / n,
        }
        if self.capture_seconds:
            rec["mix/capture_seconds"] = self.capture_seconds / n
        if self.heldout_seconds:
            rec["mix/heldout_seconds"] = self.heldout_seconds / n
        if self.reference_seconds:
            rec["mix/reference_seconds"] = self.reference_seconds / n
        w = policy.weights()
        rec["mix/entropy"] = float(-(w[w > 0] * np.log(w[w > 0])).sum())
        rec.update(sampler.stats())  # tokens, epochs, achieved and requested shares per domain
        p_eff = sampler.effective_weights() if sampler.floor_per_domain else None
        for i, d in enumerate(self.domains):
            rec[f"mix/weight/{d}"] = float(w[i])
            if capped is not None:
                rec[f"mix/capped/{d}"] = float(capped[i])
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
