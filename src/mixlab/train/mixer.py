"""The mixing step, written once: this rank's per-domain sums in, the next mixture out.

Every training front end closes the same loop after each optimiser step — mixlab's
:class:`~mixlab.train.loop.Trainer`, the plain-PyTorch / HF ``Trainer`` / Lightning adapters
(:class:`~mixlab.integrations.controller.MixingController`) — and they all do it here::

    sums     = all_reduce_sum(this rank's per-domain sums)     # feedback is global
    feedback = Feedback(step, sums ...)
    rank 0:    policy.update(feedback)                         # the mixture learns
    every update_every steps:
               sampler.set_weights(broadcast(capped(policy.weights())))  # same on every rank

``capped`` applies the run's epoch caps (``mixing.max_epochs``, METHODS.md §7): every weight is
clipped to ``w_d <= E_d N_d / B`` and the surplus handed to the other domains
(:func:`~mixlab.mixing.budget.clip_to_caps`), so no policy can repeat a domain more than its cap
over the run.

The policy update runs with numpy's BLAS (OpenBLAS) held to one thread
(``threadpoolctl``): a policy's small matrix products (AC-ODM's Gram matrix, its held-out
projection) would otherwise wake OpenBLAS's worker threads, which keep spinning after the call
and steal the cores torch trains on (measured: +27% step time for AC-ODM with the held-out
reward on 2 cores, 398 -> 324 ms per step with ``OPENBLAS_NUM_THREADS=1``).

Rank 0 owns the policy: only it updates, and it alone writes checkpoints, so other ranks' policy
objects may lag (they only ever use the broadcast weights). Keys summed over ranks are those in
:data:`REDUCED`; anything else (weight norms, the same on every rank) passes through.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
from threadpoolctl import ThreadpoolController

from mixlab.mixing.base import Feedback, MixingPolicy
from mixlab.mixing.budget import clip_to_caps
from mixlab.train.distributed import DistContext, all_reduce_sum, broadcast_weights

# Feedback arrays that are per-rank sums and must be added up before the policy sees them.
REDUCED = (
    "loss_sum",
    "token_count",
    "microbatch_count",
    "excess_sum",
    "ref_loss_sum",
    "clipped_count",
    "grad_sum",
    "grad_count",
)
# Feedback fields besides losses and counts; the rest of a step's arrays go into ``extras``.
_FIELDS = ("excess_sum", "ref_loss_sum", "grad_sum", "param_norms")
_EXTRAS = (
    "grad_count",
    "param_diff_norms",
    "clipped_count",
    # AC-ODM's held-out batch: the same on every rank, so passed through, not summed
    "heldout_grad_sum",
    "heldout_grad_count",
    "heldout_loss",
)


_BLAS: ThreadpoolController | None = None  # made on first use (it scans the loaded libraries)


def _one_blas_thread() -> Any:
    """A context that holds numpy's BLAS to one thread (see the module docstring)."""
    global _BLAS
    if _BLAS is None:
        _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=1, user_api="blas")


class WeightsSink(Protocol):
    """Where the mixture goes: a sampler or a dataset (``set_weights``)."""

    def set_weights(self, weights: np.ndarray) -> None: ...


class Mixer:
    """Feeds one policy from per-step sums and moves the sampler to its weights.

    Args:
        policy: the mixing policy (rank 0's is the one that counts).
        sink: what draws the data (``MixtureSampler``, ``MixtureDataset``).
        dist: this process among the ranks (a default ``DistContext()`` is one process).
        update_every: steps between reading new weights from the policy.
        total_steps: planned optimiser steps T (``Feedback.total_steps``).
        caps: (K,) upper bounds on the weights from epoch caps (None = no caps).
    """

    def __init__(
        self,
        policy: MixingPolicy,
        sink: WeightsSink,
        *,
        dist: DistContext,
        update_every: int,
        total_steps: int,
        caps: np.ndarray | None = None,
    ) -> None:
        self.policy = policy
        self.sink = sink
        self.caps = caps
        self.dist = dist
        self.update_every = update_every
        self.total_steps = total_steps
        self.seconds = 0.0  # time in the last step's policy update and broadcast
        self.sums: dict[str, np.ndarray] = {}  # the last step's sums over ranks
        self.weights = self.capped(policy.weights())  # what the sink draws from
        sink.set_weights(self.weights)

    def capped(self, weights: np.ndarray) -> np.ndarray:
        """``weights`` within the epoch caps (unchanged without caps)."""
        return weights if self.caps is None else clip_to_caps(weights, self.caps)

    def reduce(self, sums: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """The :data:`REDUCED` arrays among ``sums``, summed over ranks."""
        return all_reduce_sum(self.dist, {k: sums[k] for k in REDUCED if k in sums})

    def step(self, step: int, sums: Mapping[str, Any], *, update: bool = True) -> Feedback:
        """End of optimiser step ``step``: reduce, update the policy, maybe move the weights.

        ``update=False`` (a step skipped for a non-finite loss) reduces and returns the
        feedback but keeps it from the policy. ``sums`` must hold ``loss_sum``, ``token_count``
        and ``microbatch_count`` (K,) and may hold the other :data:`REDUCED` arrays,
        ``param_norms`` and ``param_diff_norms``.
        """
        self.sums = self.reduce(sums)
        reduced = {**sums, **self.sums}
        feedback = Feedback(
            step=step,
            total_steps=self.total_steps,
            loss_sum=reduced["loss_sum"],
            token_count=reduced["token_count"],
            microbatch_count=reduced["microbatch_count"],
            **{k: reduced.get(k) for k in _FIELDS},
            extras={k: reduced[k] for k in _EXTRAS if k in reduced},
        )
        start = time.perf_counter()
        if self.dist.is_main and update:
            with _one_blas_thread():
                self.policy.update(feedback)  # <- the mixture learns from this step
        if step % self.update_every == 0:
            self.weights = broadcast_weights(self.dist, self.capped(self.policy.weights()))
            self.sink.set_weights(self.weights)
        self.seconds = time.perf_counter() - start
        return feedback
