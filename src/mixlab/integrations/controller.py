"""Close the mixing loop outside mixlab's trainer: per-domain losses in, new weights out.

:class:`MixingController` is what every adapter (plain PyTorch loop, HF ``Trainer``,
Lightning) uses. Per optimiser step it closes the loop the way :mod:`mixlab.train.loop` does,
through the same :class:`~mixlab.train.mixer.Mixer`::

    controller.observe(logits, labels, domain_id)   # each micro-batch: per-domain sums
    controller.step()                               # after optimizer.step(): Mixer.step
        -> Feedback(step, loss_sum, token_count, microbatch_count), summed over ranks
        -> policy.update(feedback) on rank 0        # the mixture learns from this step
        -> dataset.set_weights(broadcast weights)   # every update_every steps

``observe`` computes the per-token cross-entropy in fp32 (:func:`token_losses`, no gradient)
and sums it per domain with :func:`per_domain_sums`; pass the token losses you already have to
:meth:`observe_losses` to skip that pass. ``microbatch_count`` counts sequences per domain
(``mixed`` / ``stratified``) or micro-batches per domain (``homogeneous``), as the loop does.
Under ``torch.distributed`` the step's sums are all-reduced before the policy sees them, rank 0
updates the policy and its new weights are broadcast, so every rank samples from
bit-identical weights (save the controller's state from rank 0).

Policies: any registered name whose feedback is losses and counts (``uniform``, ``natural``,
``temperature``, ``fixed``, ``odm``, ``odm-smoothed``, ``acodm`` with ``reward: loss`` and the
mixlab state, on a ``MixtureDataset(floor_per_domain=1)``) or a policy object.
``doremi-online`` (needs a reference model) and ``acodm`` with a gradient reward or the paper
state (per-domain gradients, weight norms) are refused with a ConfigError: train them with
``mixlab train`` or inside torchtitan. ``options`` are the keys of a
recipe's ``mixing:`` section, e.g. ``{"odm": {"warmup_steps": 0}, "update_every": 2}``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch

from mixlab.config import RunConfig
from mixlab.errors import ConfigError, ResumeError
from mixlab.integrations.torch_dataset import MixtureDataset
from mixlab.mixing.base import Feedback, MixingPolicy, PolicyContext, build_policy
from mixlab.mixing.budget import run_caps
from mixlab.model.losses import per_domain_sums, target_mask, token_losses
from mixlab.sampling.sampler import TokenSource
from mixlab.train.checkpoint import load_checkpoint, save_checkpoint
from mixlab.train.distributed import DistContext
from mixlab.train.mixer import Mixer

logger = logging.getLogger(__name__)

STATE_VERSION = 1


def check_saved_state(
    state: Mapping[str, Any], what: str, version: int, policy_name: str | None = None
) -> None:
    """ResumeError unless a saved adapter state has format ``version`` (and, given
    ``policy_name``, was written by that policy): the check every adapter's resume starts with."""
    if state.get("version") != version:
        raise ResumeError(
            f"{what} has version {state.get('version')!r}, which is not supported "
            f"(this mixlab reads version {version})"
        )
    if policy_name is not None and state.get("policy_name") != policy_name:
        raise ResumeError(
            f"{what} is for policy {state.get('policy_name')!r}, this run uses "
            f"{policy_name!r}; resume with the same policy"
        )


class PolicyData(Protocol):
    """What a policy is built over: a :class:`MixtureDataset` or the torchtitan data loader."""

    @property
    def store(self) -> TokenSource: ...

    @property
    def domains(self) -> tuple[str, ...]: ...

    @property
    def mode(self) -> str: ...

    @property
    def seed(self) -> int: ...


class AdapterPolicy(NamedTuple):
    """A policy built for an adapter, with the recipe keys the adapter applies around it."""

    policy: MixingPolicy
    update_every: int
    caps: np.ndarray | None
    """(K,) weight caps from ``max_epochs`` (None without caps)."""


def build_adapter_policy(
    name: str,
    dataset: PolicyData,
    *,
    total_steps: int,
    options: Mapping[str, Any] | None = None,
    tokens_per_step: int = 0,
) -> AdapterPolicy:
    """Build policy ``name`` for ``dataset`` with its ``update_every`` and epoch caps.

    ``options`` are validated like a recipe's ``mixing:`` section (unknown keys and bad
    values raise ConfigError naming the field). ``tokens_per_step`` (over all ranks) gives the
    run's budget ``total_steps x tokens_per_step``, which ``max_epochs`` caps and budget-aware
    policies (``unimax``) need; without it they raise a ConfigError saying so.
    """
    raw = {"name": name, "sampling": dataset.mode, **dict(options or {})}
    cfg = RunConfig.from_dict({"mixing": raw, "train": {"max_steps": total_steps}})
    cfg.validate()
    ctx = PolicyContext(
        domains=dataset.domains,
        train_tokens=np.array([dataset.store.num_tokens(d) for d in dataset.domains]),
        seed=dataset.seed,
        total_steps=total_steps,
        tokens_per_step=tokens_per_step,
    )
    caps = None
    if cfg.mixing.max_epochs is not None:
        if tokens_per_step <= 0:
            raise ConfigError(
                "mixing max_epochs: the caps bound repetition over the run's token budget; "
                "give the adapter tokens_per_step (tokens of one optimiser step over all ranks)"
            )
        caps = run_caps(cfg.mixing.max_epochs, ctx.domains, ctx.budget_tokens, ctx.train_tokens)
    return AdapterPolicy(build_policy(ctx, cfg.mixing), cfg.mixing.update_every, caps)


def check_adapter_support(
    policy: MixingPolicy, name: str, dataset: MixtureDataset | None = None
) -> None:
    """ConfigError for policies whose feedback needs more than per-domain losses, or (given
    ``dataset``) a per-domain floor the dataset does not draw."""
    needs = policy.needs
    if needs.reference is not None:
        raise ConfigError(
            f"mixing policy {name!r} scores every batch with a frozen reference model, which "
            "the adapters do not run; train it with `mixlab train` (or use odm-smoothed, odm "
            "or a static policy here)"
        )
    if needs.looks_inside_model:
        raise ConfigError(
            f"mixing policy {name!r} needs per-domain gradients and weight norms, which the "
            "adapters do not capture; train it with `mixlab train` or inside torchtitan (or "
            'use odm-smoothed, odm, acodm with options {"acodm": {"reward": "loss"}} or a '
            "static policy here)"
        )
    if dataset is not None and dataset.sampler.floor_per_domain != needs.floor_per_domain:
        raise ConfigError(
            f"mixing policy {name!r} expects floor_per_domain={needs.floor_per_domain} "
            f"sequences of every domain per step but the MixtureDataset draws "
            f"{dataset.sampler.floor_per_domain}; pass MixtureDataset(..., "
            f"floor_per_domain={needs.floor_per_domain})"
        )


class MixingController:
    """Drives a :class:`MixtureDataset`'s weights with a mixing policy.

    Args:
        dataset: the dataset the trainer iterates.
        policy: a registered policy name or a policy object over ``dataset.domains``.
        total_steps: planned optimiser steps T (ODM's warm-up and schedules use it).
        options: a recipe's ``mixing:`` keys (only with a policy name).
        update_every: steps between reading new weights (default: ``options`` or 1).

    ``max_epochs`` in ``options`` caps every weight at ``E_d N_d / B`` with the budget ``B =
    total_steps x`` the dataset's tokens per step (batch x accumulation x ranks x seq_len), as
    in ``mixlab train``.
    """

    def __init__(
        self,
        dataset: MixtureDataset,
        policy: str | MixingPolicy = "natural",
        *,
        total_steps: int,
        options: Mapping[str, Any] | None = None,
        update_every: int | None = None,
    ) -> None:
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
            raise ConfigError(f"total_steps: must be an integer >= 1, got {total_steps!r}")
        self.dataset = dataset
        self.domains = dataset.domains
        self.total_steps = total_steps
        if isinstance(policy, str):
            self.policy_name = policy
            self.policy, configured_every, caps = build_adapter_policy(
                policy,
                dataset,
                total_steps=total_steps,
                options=options,
                tokens_per_step=dataset.sampler.tokens_per_step,
            )
        else:
            if options:
                raise ConfigError("options: only used with a policy name, not a policy object")
            if tuple(policy.domains) != self.domains:
                raise ConfigError(
                    f"policy domains {tuple(policy.domains)} differ from the dataset's "
                    f"{self.domains}"
                )
            self.policy_name, self.policy, configured_every = type(policy).__name__, policy, 1
            caps = None
        check_adapter_support(self.policy, self.policy_name, dataset)
        self.update_every = configured_every if update_every is None else int(update_every)
        if self.update_every < 1:
            raise ConfigError(f"update_every: must be >= 1, got {self.update_every}")
        self.step_count = 0  # optimiser steps completed
        self.rows_observed = 0  # sequences seen by observe (== trained on)
        self.last_feedback: Feedback | None = None
        k = len(self.domains)
        self._loss_sum = torch.zeros(k, dtype=torch.float64)
        self._token_count = torch.zeros(k, dtype=torch.float64)
        self._microbatches = torch.zeros(k, dtype=torch.float64)
        self.dataset.set_weights(self.policy.weights())
        self.mixer = Mixer(
            self.policy,
            self.dataset,
            dist=DistContext(),
            update_every=self.update_every,
            total_steps=total_steps,
            caps=caps,
        )
        logger.info(
            "mixing with %s over %d domains: %s",
            self.policy_name,
            k,
            ", ".join(
                f"{d}={w:.3f}" for d, w in zip(self.domains, self.policy.weights(), strict=True)
            ),
        )

    # ------------------------------------------------------------------ per micro-batch
    def observe(self, logits: torch.Tensor, labels: torch.Tensor, domain_id: torch.Tensor) -> None:
        """Add one micro-batch's per-domain loss sums (from its (B, L, V) logits)."""
        with torch.no_grad():
            self.observe_losses(token_losses(logits.detach(), labels), labels, domain_id)

    def observe_losses(
        self, token_loss: torch.Tensor, labels: torch.Tensor, domain_id: torch.Tensor
    ) -> None:
        """Add one micro-batch given its per-token losses (B, L-1) from :func:`token_losses`."""
        k = len(self.domains)
        ids = domain_id.detach().to("cpu", torch.int64).reshape(-1)
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= k):
            raise ConfigError(
                f"domain_id values must be in [0, {k}) for domains {self.domains}; got "
                f"{ids.tolist()} — batches must come from the controller's MixtureDataset"
            )
        sums, counts = per_domain_sums(
            token_loss.detach(), target_mask(labels), ids.to(token_loss.device), k
        )
        self._loss_sum += sums.to("cpu", torch.float64)
        self._token_count += counts.to("cpu", torch.float64)
        if self.dataset.mode == "homogeneous":
            self._microbatches[int(ids[0])] += 1
        else:
            self._microbatches += torch.bincount(ids, minlength=k).double()
        self.rows_observed += int(ids.numel())

    # ------------------------------------------------------------------ per optimiser step
    def step(self) -> Feedback:
        """End of an optimiser step: feed the policy, maybe move the dataset's weights.

        Under torch.distributed the sums are all-reduced first and rank 0's new weights are
        broadcast, so every rank draws the next step from bit-identical weights.
        """
        self.mixer.dist = _dist_context(self.dataset.world_size)
        self.step_count += 1
        feedback = self.mixer.step(  # <- the mixture learns from this step
            self.step_count,
            {
                "loss_sum": self._loss_sum.numpy().copy(),
                "token_count": self._token_count.numpy().copy(),
                "microbatch_count": self._microbatches.numpy().astype(np.int64),
            },
        )
        if not feedback.token_count.any():
            logger.warning(
                "step %d: no micro-batch was observed; is the loss capture installed?",
                self.step_count,
            )
        for acc in (self._loss_sum, self._token_count, self._microbatches):
            acc.zero_()
        self.last_feedback = feedback
        return feedback

    def log_values(self) -> dict[str, float]:
        """``mix/weight/<d>``, ``mix/achieved/<d>``, ``domain/<d>/train_loss`` (last step)..."""
        out: dict[str, float] = {}
        weights = self.policy.weights()
        stats = self.dataset.stats()
        losses = self.last_feedback.mean_loss() if self.last_feedback is not None else None
        for i, d in enumerate(self.domains):
            out[f"mix/weight/{d}"] = float(weights[i])
            out[f"mix/achieved/{d}"] = stats[f"mix/achieved/{d}"]
            out[f"domain/{d}/epochs"] = stats[f"domain/{d}/epochs"]
            if losses is not None and np.isfinite(losses[i]):
                out[f"domain/{d}/train_loss"] = float(losses[i])
        for key, value in self.policy.log_values().items():
            out[f"mix/{key}"] = value
        return out

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Policy, dataset (at the last observed sequence) and counters; plain Python."""
        if any(float(acc.abs().sum()) for acc in (self._token_count, self._microbatches)):
            logger.warning("saving mixing state in the middle of an optimiser step")
        return {
            "version": STATE_VERSION,
            "policy_name": self.policy_name,
            "step": self.step_count,
            "rows_observed": self.rows_observed,
            "policy": self.policy.state_dict(),
            "dataset": self.dataset.state_dict(position=self.rows_observed),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        check_saved_state(
            state, "the saved mixing controller state", STATE_VERSION, self.policy_name
        )
        self.policy.load_state_dict(state["policy"])
        self.dataset.load_state_dict(state["dataset"])
        self.step_count = int(state["step"])
        self.rows_observed = int(state["rows_observed"])
        for acc in (self._loss_sum, self._token_count, self._microbatches):
            acc.zero_()

    def save(self, path: str | Path) -> Path:
        """Write :meth:`state_dict` atomically to ``path`` (a file)."""
        return save_checkpoint(path, self.state_dict())

    def load(self, path: str | Path) -> None:
        """Restore from a file written by :meth:`save`."""
        if not Path(path).is_file():
            raise ResumeError(f"no mixing state at {path}; it is written with each checkpoint")
        self.load_state_dict(load_checkpoint(path))


def _dist_context(world_size: int) -> DistContext:
    """This process among the torch.distributed ranks (one rank when none are running)."""
    running = torch.distributed.is_available() and torch.distributed.is_initialized()
    ranks = torch.distributed.get_world_size() if running else 1
    if ranks != world_size:
        raise ConfigError(
            f"the MixtureDataset has world_size={world_size} but {ranks} process(es) run "
            "torch.distributed; pass rank and world_size of this process to the dataset"
        )
    if not running:
        return DistContext()
    cuda = torch.distributed.get_backend() == "nccl"
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    return DistContext(torch.distributed.get_rank(), ranks, device=device)
