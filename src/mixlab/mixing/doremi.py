"""DoReMi's Group-DRO weight update (arXiv 2305.10429): policies ``doremi`` and ``doremi-online``.

DoReMi finds domain weights by training a small *proxy* model with Group DRO against a frozen
*reference* model. The mixture follows the domains where the proxy is furthest behind the
reference (largest *excess loss*), not the ones with the highest loss: a pure-noise domain has
high loss but no excess, so it is downweighted (ODM, which chases loss, upweights it).

The update at step t (METHODS.md §3), given per-domain sums from the training loop:

    lambda_t,i  = excess_sum_i / n_i           excess_sum_i = sum over domain-i tokens of
                                               max(l_theta - l_ref, 0)  (clipped PER TOKEN, in
                                               the loop); n_i = domain-i target tokens.
                  lambda_t,i = lambda_t-1,i    if n_i = 0 (absent: the stale score is reused)
    log alpha'  = log alpha_t-1 + eta * lambda_t;   alpha' = softmax(log alpha')
    alpha_t     = (1 - c) * alpha' + c * u      (u uniform; every alpha_i >= c/K)
    avg_t       = (t * avg_t-1 + alpha_t) / (t + 1),   avg_0 = alpha_0 = u

The output of DoReMi is the running average ``avg_T``, not the last ``alpha_T``.

Knobs (``mixing.doremi.*``): ``eta`` (step size, 1.0; use 0.1 if alpha collapses to one
domain), ``smoothing`` c (1e-3), ``lambda_init`` (``zero``: lambda_0 = 0; ``log_vocab``: the
release's lambda_0 = ln V, which lets a domain missing at step 1 grab almost all the weight).

:class:`GroupDRO` is the pure update (numpy, float64). :class:`DoremiProxyPolicy`
(``mixing.name=doremi``) is DoReMi's proxy: it samples uniformly and the trainer's ``group_dro``
objective drives the update from the proxy's training step and reweights the loss by alpha_t;
the offline pipeline (:mod:`mixlab.train.doremi`, ``mixlab doremi``) trains the reference and
this proxy and writes the averaged alpha. :class:`DoremiOnlinePolicy`
(``mixing.name=doremi-online``, a mixlab extension, not in the paper) drives it from the
target run's own batches, scored by a frozen reference run (``mixing.doremi.reference``), and
uses alpha_t as the *sampling* distribution of the next
step, with no loss reweighting. Caveat: once the target beats the reference on a domain its
clipped excess is 0 and its weight decays toward the floor c/K; a small or under-trained
reference makes that happen early.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from mixlab.errors import ConfigError, ResumeError
from mixlab.mixing.base import (
    Feedback,
    MixingOptions,
    PolicyBase,
    PolicyContext,
    PolicyNeeds,
    register_policy,
    validate_weights,
)
from mixlab.schema import Float, Int, Section, Str

logger = logging.getLogger(__name__)

LAMBDA_INITS = ("zero", "log_vocab")


class GroupDRO:
    """DoReMi's exponentiated-gradient update of the domain weights alpha (pure, float64).

    ``update(excess_sum, token_count)`` performs one step and returns alpha_t; ``alpha``,
    ``avg_alpha`` and ``lam`` are the current alpha_t, running average and lambda_t.
    """

    def __init__(
        self,
        domains: Sequence[str],
        *,
        eta: float = 1.0,
        smoothing: float = 1e-3,
        lambda_init: float = 0.0,
    ) -> None:
        self.domains: tuple[str, ...] = tuple(domains)
        k = len(self.domains)
        assert k > 0 and eta >= 0 and 0 <= smoothing <= 1, (k, eta, smoothing)
        self.eta, self.smoothing = float(eta), float(smoothing)
        self.uniform = np.full(k, 1.0 / k)
        self.alpha = self.uniform.copy()  # alpha_0 = u
        self.avg_alpha = self.uniform.copy()  # avg_0 = alpha_0 (the release includes it)
        self.lam = np.full(k, float(lambda_init))  # lambda_0
        self.step = 0  # updates done
        self.skipped_nonfinite = 0

    def update(self, excess_sum: np.ndarray, token_count: np.ndarray) -> np.ndarray:
        """One Group-DRO step from (K,) clipped excess sums and target-token counts."""
        excess = np.asarray(excess_sum, dtype=np.float64)
        counts = np.asarray(token_count, dtype=np.float64)
        k = len(self.domains)
        if excess.shape != (k,) or counts.shape != (k,):
            raise ValueError(
                f"GroupDRO.update: expected ({k},) excess sums and token counts, "
                f"got {excess.shape} and {counts.shape}"
            )
        present = counts > 0
        lam = self.lam.copy()
        lam[present] = excess[present] / counts[present]
        bad = present & ~np.isfinite(lam)
        if bad.any():  # an inf/NaN loss would poison alpha for the rest of the run
            names = ", ".join(d for d, b in zip(self.domains, bad, strict=True) if b)
            logger.warning(
                "doremi: non-finite excess loss at update %d for %s; previous lambda kept",
                self.step + 1,
                names,
            )
            lam[bad] = self.lam[bad]
            self.skipped_nonfinite += int(bad.sum())
        with np.errstate(divide="ignore"):  # smoothing = 0 may leave alpha_i = 0: log = -inf
            logits = np.log(self.alpha) + self.eta * lam
        m = float(logits.max())
        log_alpha = logits - (m + math.log(float(np.exp(logits - m).sum())))  # log-softmax
        alpha = (1.0 - self.smoothing) * np.exp(log_alpha) + self.smoothing * self.uniform
        t = self.step + 1
        self.alpha = alpha / alpha.sum()  # remove float drift; the sum is 1 up to rounding
        self.avg_alpha = (t * self.avg_alpha + self.alpha) / (t + 1)
        self.lam = lam
        self.step = t
        return self.alpha.copy()

    def log_values(self, prefix: str = "doremi") -> dict[str, float]:
        """alpha_t, avg alpha, lambda_t per domain, plus entropy and max of alpha_t."""
        a = self.alpha
        out = {
            f"{prefix}/alpha_entropy": float(-(a[a > 0] * np.log(a[a > 0])).sum()),
            f"{prefix}/alpha_max": float(a.max()),
            f"{prefix}/updates": float(self.step),
        }
        for i, d in enumerate(self.domains):
            out[f"{prefix}/alpha/{d}"] = float(self.alpha[i])
            out[f"{prefix}/avg_alpha/{d}"] = float(self.avg_alpha[i])
            out[f"{prefix}/lambda/{d}"] = float(self.lam[i])
        return out

    def state_dict(self) -> dict[str, Any]:
        # Python floats round-trip float64 exactly; per-domain values are keyed by name.
        def named(values: np.ndarray) -> dict[str, float]:
            return dict(zip(self.domains, values.tolist(), strict=True))

        return {
            "alpha": named(self.alpha),
            "avg_alpha": named(self.avg_alpha),
            "lambda": named(self.lam),
            "step": self.step,
            "eta": self.eta,
            "smoothing": self.smoothing,
            "skipped_nonfinite": self.skipped_nonfinite,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = set(state["alpha"])
        if saved != set(self.domains):
            raise ResumeError(
                f"doremi state: saved domains {sorted(saved)} differ from the store's "
                f"{list(self.domains)}; resume with the same store"
            )
        if (state["eta"], state["smoothing"]) != (self.eta, self.smoothing):
            raise ResumeError(
                f"doremi state: saved eta={state['eta']}, smoothing={state['smoothing']} differ "
                f"from the config's eta={self.eta}, smoothing={self.smoothing}; resume with the "
                "same mixing.doremi settings"
            )
        self.alpha = np.array([float(state["alpha"][d]) for d in self.domains])
        self.avg_alpha = np.array([float(state["avg_alpha"][d]) for d in self.domains])
        self.lam = np.array([float(state["lambda"][d]) for d in self.domains])
        self.step = int(state["step"])
        self.skipped_nonfinite = int(state.get("skipped_nonfinite", 0))


class _GroupDroPolicy(PolicyBase):
    """A policy whose state is one :class:`GroupDRO` (``self.dro``)."""

    dro: GroupDRO

    def state_dict(self) -> dict[str, Any]:
        return {"group_dro": self.dro.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.dro.load_state_dict(state["group_dro"])

    def log_values(self) -> dict[str, float]:
        return self.dro.log_values()


class DoremiOnlinePolicy(_GroupDroPolicy):
    """``doremi-online``: sample the next step from alpha_t, updated on the target's batches.

    Its ``needs.reference`` makes the trainer score every micro-batch with the frozen
    reference model at ``reference_path``; the clipped per-token excess arrives here as
    ``Feedback.excess_sum``.
    """

    def __init__(self, domains: Sequence[str], dro: GroupDRO, reference_path: str) -> None:
        self.domains: tuple[str, ...] = tuple(domains)
        self.dro = dro
        self.reference_path = reference_path

    @property
    def needs(self) -> PolicyNeeds:
        return PolicyNeeds(reference=self.reference_path)

    def weights(self) -> np.ndarray:
        return validate_weights(self.dro.alpha, self.domains, where="doremi-online weights")

    def update(self, feedback: Feedback) -> None:
        if feedback.excess_sum is None:
            raise ConfigError(
                "doremi-online: the step's feedback has no excess loss; this policy needs the "
                "training loop to score batches with mixing.doremi.reference (use mixlab's "
                "Trainer, or fill Feedback.excess_sum in your own loop)"
            )
        self.dro.update(feedback.excess_sum, feedback.token_count)


class DoremiOnlineSection(Section):
    """``mixing.doremi.*`` of ``doremi-online``."""

    where: ClassVar[str] = "mixing.doremi"

    eta: Float = Field(
        1.0,
        ge=0,
        description="Group-DRO step size: log alpha += eta * excess loss (0.1 if alpha collapses).",
    )
    smoothing: Float = Field(
        1e-3,
        ge=0,
        le=1,
        description="Mix c of the uniform distribution into alpha each step; every alpha_i >= c/K.",
    )
    reference: Str | None = Field(
        None,
        description="Run folder or checkpoint of a trained reference model (same tokenizer). "
        "Required by doremi-online and by a doremi proxy run; for `mixlab doremi` it is "
        "reused instead of training round 1's reference.",
    )


class DoremiSection(DoremiOnlineSection):
    """``mixing.doremi.*`` of ``doremi``: the proxy run and the `mixlab doremi` pipeline."""

    reference_mixture: Literal["natural", "uniform"] = Field(
        "natural", description="Mixture the reference model is trained on: natural | uniform."
    )
    rounds: Int = Field(
        1,
        ge=1,
        description="Max DoReMi rounds; round k+1 trains its reference on round k's weights.",
    )
    tol: Float = Field(
        0.01,
        ge=0,
        description="Stop iterating when the L1 change of the averaged weights between "
        "rounds < tol.",
    )
    loss_normalizer: Literal["per_domain", "token_weighted"] = Field(
        "per_domain",
        description="Proxy loss: per_domain (sum_i alpha_i * domain-mean loss; paper) | "
        "token_weighted (sum_i alpha_i loss_sum_i / sum_i alpha_i n_i; release).",
    )
    alpha_timing: Literal["exact", "lagged"] = Field(
        "exact",
        description="exact (forward all micro-batches, update alpha, then backward) | lagged "
        "(weight by the previous alpha; backward per micro-batch; release behaviour, less memory).",
    )
    proxy_sampling: Literal["stratified", "random"] = Field(
        "stratified",
        description="Proxy batches: stratified (B/K sequences per domain per step) | random "
        "(i.i.d. uniform; release).",
    )
    lambda_init: Literal["zero", "log_vocab"] = Field(
        "zero", description="lambda_0 of absent domains: zero | log_vocab (release)."
    )
    reference_steps: Int = Field(
        0, ge=0, description="Optimiser steps of each reference run; 0 = train.max_steps."
    )
    proxy_steps: Int = Field(
        0, ge=0, description="Optimiser steps of each proxy run; 0 = train.max_steps."
    )


class DoremiOnlineOptions(MixingOptions):
    doremi: DoremiOnlineSection = Field(default_factory=DoremiOnlineSection)


class DoremiOptions(MixingOptions):
    doremi: DoremiSection = Field(default_factory=DoremiSection)


class DoremiProxyPolicy(_GroupDroPolicy):
    """``doremi``: DoReMi's proxy. Samples uniformly; Group DRO reweights its *loss*.

    The trainer scores every micro-batch with the reference (``needs.reference``) and its
    ``group_dro`` objective (:class:`~mixlab.train.objective.GroupDroObjective`) updates
    ``dro`` inside the step, from the step's excess, before the backward pass. The result of a
    proxy run is ``dro.avg_alpha`` (``mixlab doremi`` writes it as ``doremi_weights.json``).
    """

    def __init__(
        self,
        domains: Sequence[str],
        dro: GroupDRO,
        reference_path: str,
        *,
        loss_normalizer: str = "per_domain",
        alpha_timing: str = "exact",
    ) -> None:
        self.domains: tuple[str, ...] = tuple(domains)
        self.dro = dro
        self.reference_path = reference_path
        self.loss_normalizer = loss_normalizer
        self.alpha_timing = alpha_timing
        self._sampling = np.full(len(self.domains), 1.0 / len(self.domains))

    @property
    def needs(self) -> PolicyNeeds:
        return PolicyNeeds(reference=self.reference_path, objective="group_dro")

    def weights(self) -> np.ndarray:
        return self._sampling.copy()

    def update(self, feedback: Feedback) -> None:
        """alpha was already updated from this step's excess by the group_dro objective."""


def group_dro(
    domains: Sequence[str], doremi: DoremiOnlineSection, vocab_size: int | None = None
) -> GroupDRO:
    """The Group-DRO update of ``mixing.doremi`` (``lambda_init`` of the proxy's section)."""
    lambda_0 = 0.0
    if isinstance(doremi, DoremiSection) and doremi.lambda_init == "log_vocab":
        if vocab_size is None:
            raise ConfigError("mixing.doremi.lambda_init=log_vocab needs the vocabulary size")
        lambda_0 = math.log(vocab_size)
    return GroupDRO(domains, eta=doremi.eta, smoothing=doremi.smoothing, lambda_init=lambda_0)


def _reference(cfg: DoremiOnlineSection, name: str) -> str:
    if not cfg.reference:
        raise ConfigError(
            f"mixing.name={name} needs mixing.doremi.reference: the run folder (or "
            "checkpoint.pt) of a reference model trained on the same store, e.g. "
            "--set mixing.doremi.reference=runs/doremi/round_1/reference"
        )
    return str(cfg.reference)


@register_policy("doremi-online", DoremiOnlineOptions)
def build_doremi_online(ctx: PolicyContext, cfg: DoremiOnlineOptions) -> DoremiOnlinePolicy:
    """Online DoReMi: sample from alpha_t, scored by a frozen reference (mixlab extension)."""
    reference = _reference(cfg.doremi, "doremi-online")
    return DoremiOnlinePolicy(ctx.domains, group_dro(ctx.domains, cfg.doremi), reference)


@register_policy("doremi", DoremiOptions)
def build_doremi(ctx: PolicyContext, cfg: DoremiOptions) -> DoremiProxyPolicy:
    """DoReMi's Group-DRO proxy (arXiv 2305.10429); `mixlab doremi` runs the whole pipeline."""
    reference = _reference(cfg.doremi, "doremi")
    return DoremiProxyPolicy(
        ctx.domains,
        group_dro(ctx.domains, cfg.doremi, ctx.vocab_size),
        reference,
        loss_normalizer=cfg.doremi.loss_normalizer,
        alpha_timing=cfg.doremi.alpha_timing,
    )
