"""Mixing policies: feedback from training in, domain weights (token shares) out.

A policy is pure — it never touches the model, files, the sampler or ``torch.distributed``.
Once per optimiser step the training loop hands it a frozen :class:`Feedback` (per-domain loss
sums and token counts, already summed over ranks) and, every ``mixing.update_every`` steps,
passes ``policy.weights()`` to the sampler. Weights are finite, >= 0 and sum to 1 (checked by
:func:`validate_weights` at every boundary).

Policies are looked up by name (``mixing.name``) with :func:`build_policy`;
:func:`available_policies` lists the names. The static ones (``uniform``, ``natural``,
``temperature``, ``fixed``) live in :mod:`mixlab.mixing.static`; adaptive ones (ODM, AC-ODM,
DoReMi) each have their own module. A new policy is a factory ``(ctx, mixing_config) ->
policy`` decorated with :func:`register_policy`.
"""

from __future__ import annotations

from mixlab.mixing.base import (
    WEIGHT_SUM_TOLERANCE,
    Feedback,
    MixingPolicy,
    PolicyContext,
    PolicyFactory,
    available_policies,
    build_policy,
    register_policy,
    validate_weights,
    weights_from_mapping,
)

__all__ = [
    "WEIGHT_SUM_TOLERANCE",
    "Feedback",
    "MixingPolicy",
    "PolicyContext",
    "PolicyFactory",
    "available_policies",
    "build_policy",
    "register_policy",
    "validate_weights",
    "weights_from_mapping",
]
