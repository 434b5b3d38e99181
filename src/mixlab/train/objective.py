"""What the backward pass of a training step minimises, given each micro-batch's token losses.

The loop forwards every micro-batch, computes its per-token losses (fp32, 0 where masked) and
hands them to the run's objective, which decides when and what to back-propagate:

* :class:`Objective` itself (every ordinary run): the mean loss over all target tokens of the step,
  back-propagated micro-batch by micro-batch, so gradient accumulation is exactly a bigger batch:
  ``backward(sum of token losses * world_size / global target tokens)``.
* :class:`~mixlab.train.doremi.GroupDroObjective` (DoReMi's proxy, METHODS.md §3): the
  alpha-weighted sum of per-domain mean losses, with alpha updated from the step's excess loss
  over a frozen reference.

An objective that needs a frozen reference model names it in ``reference``; the loop then
scores every micro-batch with it and passes the step's per-domain sums to :meth:`end_step`.
Objectives with state (alpha) checkpoint it through ``state_dict`` (key ``objective``).
"""

from __future__ import annotations

from typing import Any

import torch


class Objective:
    """The token-mean language-modelling loss; the base class of every objective."""

    #: Run folder or checkpoint of a frozen reference model to score every micro-batch with.
    reference: str | None = None

    def begin_step(self, batches: list[dict[str, torch.Tensor]], num_domains: int) -> None:
        """Called before the step's first forward pass, with all its micro-batches."""

    def micro_batch(
        self, tok_loss: torch.Tensor, batch: dict[str, torch.Tensor], scale: float
    ) -> None:
        """One micro-batch's (B, L-1) token losses (with graph): back-propagate the mean.

        ``scale`` = world size / the step's global target tokens.
        """
        (tok_loss.sum() * scale).backward()

    def end_step(self, reference_sums: dict[str, torch.Tensor]) -> None:
        """After the last micro-batch (``reference_sums``: the reference's per-domain sums)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def log_values(self) -> dict[str, float]:
        """Extra scalars for the train records (keys without the ``mix/`` prefix)."""
        return {}

