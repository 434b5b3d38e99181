"""Forward hooks that hand every training micro-batch's logits to a :class:`MixingController`.

Trainers own their forward pass, so the HF and Lightning adapters watch the model instead of
changing its loss: a forward *pre*-hook takes the batch's ``domain_id`` (removing it from the
keyword arguments, so the model never sees an unknown input), and a forward hook reads the
output ``logits`` and calls ``controller.observe(logits, labels, domain_id)``. The targets are
the ``labels`` passed to the model, else ``input_ids`` (a :class:`MixtureDataset` always yields
``labels == input_ids``; a trainer's ``compute_loss_func`` takes ``labels`` away first).

Only forwards in training mode with gradients enabled are observed, so evaluation passes never
reach the policy. Cost: one extra fp32 cross-entropy over the logits per micro-batch, without
gradient (the trainer's own loss is left untouched).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch.utils.hooks import RemovableHandle

from mixlab.errors import ConfigError
from mixlab.integrations.controller import MixingController


class LossCapture:
    """Hooks on ``model`` that observe each training forward.

    Args:
        controller: receives the per-domain sums.
        model: the causal LM whose forward returns ``logits``.
        require_domain_id: raise when a training forward carries no ``domain_id`` keyword and
            none was announced with :meth:`expect` (HF Trainer); otherwise such forwards are
            not observed (Lightning: forwards outside ``training_step``).
    """

    def __init__(
        self, controller: MixingController, model: torch.nn.Module, *, require_domain_id: bool
    ) -> None:
        self.controller = controller
        self.require_domain_id = require_domain_id
        self._expected: Mapping[str, Any] | None = None
        self._pending: tuple[torch.Tensor, torch.Tensor | None] | None = None
        self._handles: list[RemovableHandle] = [
            model.register_forward_pre_hook(self._before, with_kwargs=True),
            model.register_forward_hook(self._after, with_kwargs=True),
        ]

    def expect(self, batch: Mapping[str, Any]) -> None:
        """Announce the batch of the next training forward (its ``domain_id`` and ``labels``)."""
        self._expected = batch

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _before(
        self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        domain_id = kwargs.pop("domain_id", None)
        labels = kwargs.get("labels")
        if domain_id is None and self._expected is not None:
            domain_id = self._expected.get("domain_id")
            labels = labels if labels is not None else self._expected.get("labels")
        self._expected = None
        if not (module.training and torch.is_grad_enabled()):
            return args, kwargs
        if domain_id is None:
            if self.require_domain_id:
                raise ConfigError(
                    "a training batch has no 'domain_id': train on a mixlab MixtureDataset and "
                    "keep its domain_id field through the data collator"
                )
            return args, kwargs
        if labels is None:
            labels = kwargs.get("input_ids", args[0] if args else None)
        if not isinstance(labels, torch.Tensor):
            raise ConfigError(
                "cannot tell the targets of a training forward: pass input_ids (and labels) "
                "to the model as tensors"
            )
        self._pending = (domain_id, labels)
        return args, kwargs

    def _after(
        self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
    ) -> None:
        if self._pending is None:
            return
        domain_id, labels = self._pending
        self._pending = None
        logits = getattr(output, "logits", None)
        if logits is None and isinstance(output, Mapping):
            logits = output.get("logits")
        if not isinstance(logits, torch.Tensor):
            raise ConfigError(
                f"{type(module).__name__} returned no logits; the mixing adapters need a causal "
                "LM whose output has .logits (B, L, V)"
            )
        assert labels is not None
        self.controller.observe(logits, labels, domain_id)
