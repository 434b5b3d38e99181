"""The mixing-policy seam: what the training loop tells a policy, and what it gets back.

A mixing policy maps training feedback to domain weights. It is *pure*: it never touches the
model, files, the sampler or ``torch.distributed``. Once per optimiser step the loop builds a
frozen :class:`Feedback` record (already summed over ranks) and calls ``policy.update``; every
``update_every`` steps it reads ``policy.weights()`` and hands them to the sampler.

Weights are token shares over the domains in canonical (sorted) order. They are checked at the
boundary by :func:`validate_weights`: finite, >= 0, summing to 1 within 1e-6.

Policies are built by name from a small registry (:func:`register_policy`,
:func:`build_policy`); an unknown name raises :class:`~mixlab.errors.ConfigError` listing the
valid ones.

What a policy needs besides losses. Every policy declares it in one typed record,
:class:`PolicyNeeds` (``policy.needs``); the trainer reads it once when it builds the run and
sets up exactly that, nothing more:

==========================  =============================================================
``needs.``                  the trainer then
==========================  =============================================================
``reference``               scores every micro-batch with the frozen reference model at that
                            path; fills ``excess_sum`` / ``ref_loss_sum``
``gradients``               captures per-domain gradients of the named blocks' matrices in
                            the same backward pass; fills ``grad_sum`` and
                            ``extras["grad_count"]``
``weight_norms``            measures the MLP down-projections at those relative depths after
                            each update (the trainer keeps the reference copies, a policy
                            never holds model weights); fills ``param_norms`` and
                            ``extras["param_diff_norms"]``
``floor_per_domain``        gives every domain that many sequences (micro-batches when
                            sampling is ``homogeneous``) in every step
``exports_policy_file``     calls ``save_policy_file(path, provenance)`` with every
                            checkpoint (``mixing.policy_out``)
==========================  =============================================================

Besides the five methods of :class:`MixingPolicy`, ``eval_log_values()`` adds scalars to every
evaluation record. :class:`PolicyBase` gives every optional part a default (needs nothing,
logs nothing, exports nothing); the built-in policies derive from it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from mixlab.errors import ConfigError
from mixlab.mixing.budget import natural_weights

WEIGHT_SUM_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Feedback:
    """What one optimiser step tells the policy (METHODS.md §0, feedback contract).

    All arrays are indexed by domain in canonical order and already all-reduced over ranks.

    Attributes:
        step: global optimiser step t (1-based) that produced this feedback.
        total_steps: planned number of steps T of the run.
        loss_sum: (K,) sum of per-token cross-entropy over domain-i target tokens, computed in
            this step's forward pass (before the parameter update).
        token_count: (K,) number of loss-bearing target tokens of domain i in the step.
        microbatch_count: (K,) micro-batches (homogeneous sampling) or sequences (mixed
            sampling) of domain i in the step.
        excess_sum: optional (K,) DoReMi excess-loss sums, clipped per token in the loop.
        ref_loss_sum: optional (K,) reference-model loss sums on the same tokens.
        grad_sum: optional (K, P) per-domain gradient sums of selected parameters (AC-ODM).
        param_norms: optional (D,) norms of tracked weight matrices (AC-ODM).
        extras: anything else a policy needs; keys are documented by the policy that reads them.
    """

    step: int
    total_steps: int
    loss_sum: np.ndarray
    token_count: np.ndarray
    microbatch_count: np.ndarray
    excess_sum: np.ndarray | None = None
    ref_loss_sum: np.ndarray | None = None
    grad_sum: np.ndarray | None = None
    param_norms: np.ndarray | None = None
    extras: Mapping[str, Any] = field(default_factory=dict)

    def mean_loss(self) -> np.ndarray:
        """(K,) token-mean loss per domain; NaN where the domain had no tokens this step."""
        counts = np.asarray(self.token_count, dtype=np.float64)
        sums = np.asarray(self.loss_sum, dtype=np.float64)
        out = np.full(counts.shape, np.nan)
        present = counts > 0
        out[present] = sums[present] / counts[present]
        return out

    @property
    def present(self) -> np.ndarray:
        """(K,) boolean mask of domains with at least one loss token this step."""
        return np.asarray(self.token_count) > 0


@dataclass(frozen=True)
class GradientNeeds:
    """Per-domain gradients of some weight matrices, from the ordinary backward pass.

    Attributes:
        blocks: decoder block indices (negative = from the last block; out of range dropped).
        role: which matrix of each block (:mod:`mixlab.model.layers` roles, e.g. ``mlp_down``).
    """

    blocks: tuple[int, ...]
    role: str = "mlp_down"


@dataclass(frozen=True)
class WeightNormNeeds:
    """Norms of the MLP down-projections at relative depths, and their change per step.

    Attributes:
        depth_points: relative depths q in [0, 1]; block floor(q (L - 1) + 0.5) each.
        delta_reference: ``previous`` (change since the last step) or ``first`` (since the
            run's first step).
    """

    depth_points: tuple[float, ...]
    delta_reference: str = "previous"


@dataclass(frozen=True)
class PolicyNeeds:
    """What the trainer must measure or arrange for a policy (the default: nothing)."""

    reference: str | None = None
    gradients: GradientNeeds | None = None
    weight_norms: WeightNormNeeds | None = None
    floor_per_domain: int = 0
    exports_policy_file: bool = False

    @property
    def looks_inside_model(self) -> bool:
        """True when feedback needs more than the loss: gradients or weight norms."""
        return self.gradients is not None or self.weight_norms is not None


@runtime_checkable
class MixingPolicy(Protocol):
    """Feedback in, weights out. Implementations must be deterministic given their seed."""

    domains: tuple[str, ...]

    def weights(self) -> np.ndarray:
        """(K,) current token shares: finite, >= 0, sum to 1."""
        ...

    def update(self, feedback: Feedback) -> None:
        """Consume one step's feedback (may be a no-op for static policies)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything needed so that a fresh instance continues bit-identically."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def log_values(self) -> dict[str, float]:
        """Extra scalars for ``metrics.jsonl`` (keys without the ``mix/`` prefix)."""
        ...

    @property
    def needs(self) -> PolicyNeeds:
        """What the trainer must measure or arrange for this policy."""
        ...

    def eval_log_values(self) -> dict[str, float]:
        """Extra scalars for every evaluation record (keys without the ``mix/`` prefix)."""
        ...

    def save_policy_file(self, path: str | Path, provenance: dict[str, Any]) -> Path:
        """Write the learned policy to ``path`` (only if ``needs.exports_policy_file``)."""
        ...


class PolicyBase:
    """Defaults for the optional parts of :class:`MixingPolicy`: needs nothing, logs nothing.

    Subclasses set ``domains`` and implement ``weights``, ``update``, ``state_dict`` and
    ``load_state_dict``; they override the ``needs`` property when they need more than
    losses.
    """

    domains: tuple[str, ...]

    @property
    def needs(self) -> PolicyNeeds:
        return PolicyNeeds()

    def log_values(self) -> dict[str, float]:
        return {}

    def eval_log_values(self) -> dict[str, float]:
        return {}

    def save_policy_file(self, path: str | Path, provenance: dict[str, Any]) -> Path:
        raise ConfigError(
            f"mixing.policy_out: policy {type(self).__name__} has nothing to export; only "
            "acodm writes a policy file"
        )


@dataclass(frozen=True)
class PolicyContext:
    """What a policy factory may know about the run when the policy is built.

    Attributes:
        domains: domain names in canonical (sorted) order.
        train_tokens: (K,) training tokens per domain, for natural weights.
        seed: run seed; policies with randomness derive their own generator from it.
        total_steps: planned number of optimiser steps T.
    """

    domains: tuple[str, ...]
    train_tokens: np.ndarray
    seed: int = 0
    total_steps: int = 1

    @property
    def natural_weights(self) -> np.ndarray:
        return natural_weights(self.train_tokens)


PolicyFactory = Callable[[PolicyContext, Any], MixingPolicy]
_REGISTRY: dict[str, PolicyFactory] = {}


def register_policy(name: str) -> Callable[[PolicyFactory], PolicyFactory]:
    """Decorator: make ``factory(ctx, mixing_config)`` buildable as ``mixing.name=<name>``."""

    def deco(factory: PolicyFactory) -> PolicyFactory:
        if name in _REGISTRY:
            raise ValueError(f"mixing policy {name!r} registered twice")
        _REGISTRY[name] = factory
        return factory

    return deco


def available_policies() -> tuple[str, ...]:
    """Names accepted by ``mixing.name``."""
    _import_builtin_policies()
    return tuple(sorted(_REGISTRY))


def build_policy(name: str, ctx: PolicyContext, config: Any) -> MixingPolicy:
    """Build the policy registered as ``name``; ``config`` is the run's ``MixingConfig``."""
    _import_builtin_policies()
    if name not in _REGISTRY:
        raise ConfigError(
            f"mixing.name: unknown policy {name!r}; choose one of {', '.join(available_policies())}"
        )
    policy = _REGISTRY[name](ctx, config)
    validate_weights(policy.weights(), ctx.domains, where=f"initial weights of policy {name!r}")
    return policy


def _import_builtin_policies() -> None:
    # Importing the modules runs their @register_policy decorators.
    from mixlab.mixing import (
        doremi,  # noqa: F401
        odm,  # noqa: F401
        static,  # noqa: F401
    )
    from mixlab.mixing.acodm import policy  # noqa: F401


def validate_weights(
    weights: Sequence[float] | np.ndarray, domains: Sequence[str], where: str = "weights"
) -> np.ndarray:
    """Check a weight vector at a boundary; return it as float64.

    Raises ConfigError naming the domain and value for NaN/inf, negative entries, a wrong
    length, or a sum that is not 1 within 1e-6.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (len(domains),):
        raise ConfigError(f"{where}: expected {len(domains)} weights, got shape {w.shape}")
    for name, value in zip(domains, w, strict=True):
        if not np.isfinite(value):
            raise ConfigError(f"{where}: weight of domain {name!r} is {value}, not a finite number")
        if value < 0:
            raise ConfigError(f"{where}: weight of domain {name!r} is negative ({value})")
    total = float(w.sum())
    if abs(total - 1.0) > WEIGHT_SUM_TOLERANCE:
        raise ConfigError(f"{where}: weights sum to {total:.8g}, not 1 (tolerance 1e-6)")
    return w


def weights_from_mapping(
    mapping: Mapping[str, float], domains: Sequence[str], where: str = "weights"
) -> np.ndarray:
    """Order a name->weight mapping by ``domains``; unknown or missing names are errors."""
    unknown = sorted(set(mapping) - set(domains))
    if unknown:
        raise ConfigError(
            f"{where}: unknown domain(s) {', '.join(map(repr, unknown))}; "
            f"the store has {', '.join(domains)}"
        )
    missing = [d for d in domains if d not in mapping]
    if missing:
        raise ConfigError(
            f"{where}: no weight for domain(s) {', '.join(map(repr, missing))} "
            "(give every domain a weight; use 0 to exclude one)"
        )
    values = []
    for d in domains:
        try:
            values.append(float(mapping[d]))
        except (TypeError, ValueError):
            raise ConfigError(
                f"{where}: weight of domain {d!r} is {mapping[d]!r}, not a number"
            ) from None
    return validate_weights(values, domains, where=where)
