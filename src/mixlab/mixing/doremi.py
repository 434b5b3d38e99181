"""DoReMi's Group-DRO weight update (arXiv 2305.10429) and the ``doremi-online`` policy.

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

:class:`GroupDRO` is the pure update (numpy, float64). The offline pipeline
(:mod:`mixlab.train.doremi`) drives it from the proxy's training step and reweights the loss by
alpha_t. :class:`DoremiOnlinePolicy` (``mixing.name=doremi-online``, a mixlab extension, not in
the paper) drives it from the target run's own batches, scored by a frozen reference run
(``mixing.doremi.reference``), and uses alpha_t as the *sampling* distribution of the next
step, with no loss reweighting. Caveat: once the target beats the reference on a domain its
clipped excess is 0 and its weight decays toward the floor c/K; a small or under-trained
reference makes that happen early.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from mixlab.errors import ConfigError, ResumeError
from mixlab.mixing.base import (
    Feedback,
    PolicyBase,
    PolicyContext,
    PolicyNeeds,
    register_policy,
    validate_weights,
)

if TYPE_CHECKING:
    from mixlab.config import MixingConfig

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


class DoremiOnlinePolicy(PolicyBase):
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

    def state_dict(self) -> dict[str, Any]:
        return {"group_dro": self.dro.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.dro.load_state_dict(state["group_dro"])

    def log_values(self) -> dict[str, float]:
        return self.dro.log_values()


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def group_dro_from_config(
    domains: Sequence[str], cfg: MixingConfig, vocab_size: int | None = None
) -> GroupDRO:
    """Validate ``mixing.doremi.{eta, smoothing, lambda_init}`` and build the update."""
    doremi = getattr(cfg, "doremi", None)
    eta = getattr(doremi, "eta", 1.0)
    if not (_number(eta) and eta >= 0):
        raise ConfigError(f"mixing.doremi.eta: must be a finite number >= 0, got {eta!r}")
    smoothing = getattr(doremi, "smoothing", 1e-3)
    if not (_number(smoothing) and 0 <= smoothing <= 1):
        raise ConfigError(f"mixing.doremi.smoothing: must be a number in [0, 1], got {smoothing!r}")
    init = getattr(doremi, "lambda_init", "zero")
    if init not in LAMBDA_INITS:
        raise ConfigError(
            f"mixing.doremi.lambda_init: got {init!r}; choose one of {', '.join(LAMBDA_INITS)}"
        )
    lambda_0 = 0.0
    if init == "log_vocab":
        if vocab_size is None:
            raise ConfigError(
                "mixing.doremi.lambda_init=log_vocab is the offline release's start and is only "
                "supported by `mixlab doremi`; doremi-online starts from lambda_init=zero"
            )
        lambda_0 = math.log(vocab_size)
    return GroupDRO(domains, eta=float(eta), smoothing=float(smoothing), lambda_init=lambda_0)


@register_policy("doremi-online")
def build_doremi_online(ctx: PolicyContext, cfg: MixingConfig) -> DoremiOnlinePolicy:
    """Online DoReMi (``mixing.name=doremi-online``; needs ``mixing.doremi.reference``)."""
    reference = getattr(getattr(cfg, "doremi", None), "reference", None)
    if not reference:
        raise ConfigError(
            "mixing.name=doremi-online needs mixing.doremi.reference: the run folder (or "
            "checkpoint.pt) of a reference model trained on the same store, e.g. "
            "--set mixing.doremi.reference=runs/doremi/round_1/reference"
        )
    return DoremiOnlinePolicy(ctx.domains, group_dro_from_config(ctx.domains, cfg), str(reference))
