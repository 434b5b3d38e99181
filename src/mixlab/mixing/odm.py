"""Online Data Mixing (ODM, arXiv 2312.02406): domain mixing as a multi-armed bandit.

Each domain is an arm and its reward is the domain's training loss ("high loss = more left to
learn"), which the loop computes anyway, so the policy costs next to nothing. Exploration is

    eps_t = min(1/K, sqrt(ln K / (K t))),   eps_0 = 1/K

so pi is exactly uniform while t <= K ln K. Two update rules are registered (METHODS.md §1):

* ``odm`` -- rule ``exp3`` (the paper). For each domain i observed at step t
  r_i = s * l_i / pi_{t-1}(i) (importance-weighted loss, s = ``reward_scale``), then
  R_i <- alpha R_i + (1 - alpha) r_i (``accumulate=ema``) or R_i <- R_i + r_i (``sum``, the
  release's textbook EXP3 with s = 0.1), and
  pi_t = (1 - K eps_t) softmax(eps_{t-1} R) + eps_t  (softmax via log-sum-exp).
  ``temperature_eps=last_update`` uses the eps of the previous update call (1/K at the first)
  instead of eps_{t-1}, as the release does. With ``ema`` the shrinking temperature pulls pi back
  toward uniform over time; that is by design of the rule, not a bug.
* ``odm-smoothed`` -- rule ``smoothed_mean`` (the release, which produced the 1B results):
  R_i <- alpha R_i + (1 - alpha) exp(l_i) for present domains (float64: exp(11) ~ 6e4), then
  pi_i = (1 - K eps_t) R_i / sum_j R_j + eps_t, uniform while sum R = 0. A never-observed domain
  gets exactly eps_t.

Knobs (``mixing.odm.*``): ``alpha`` (EMA factor, 0.9), ``warmup_steps`` (steps on the
``initial`` mixture -- natural or uniform -- with no update; -1 = max(20, floor(0.02 T))),
``reward_scale``, ``accumulate``, ``temperature_eps``, ``constant_eps`` (fixed eps, for tests),
and ``mixing.update_every``. Warm-up steps still count in t, so eps is small when the bandit
starts. The update at step t produces the pi used from step t + 1 on.

``update_every = n``: the bandit updates only at steps t with t % n == 0 (the loop reads weights
at exactly those steps). Loss sums and token counts of the steps in between are accumulated
and enter that update as one token-mean loss per domain, so no feedback is dropped and none
is stale. Gradient accumulation needs nothing extra: the loop sums all micro-batches of a step
into one Feedback. A non-finite loss sum of a domain in a step drops that domain's
observation for that step (logged once per step, counted in ``odm/skipped_nonfinite``).

Pitfall: a loss-based reward chases *irreducible* loss. A noise domain keeps the highest loss
and gets upweighted -- a documented failure mode of ODM, not a bug of this implementation.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from mixlab.errors import ConfigError, DataError, ResumeError
from mixlab.mixing.base import (
    Feedback,
    MixingOptions,
    PolicyBase,
    PolicyContext,
    register_policy,
    validate_weights,
)
from mixlab.schema import Float, Int, Section

logger = logging.getLogger(__name__)

RULES = ("exp3", "smoothed_mean")


def exploration_rate(t: int, k: int, constant: float | None = None) -> float:
    """eps_t = min(1/K, sqrt(ln K / (K t))); eps_0 = 1/K; ``constant`` overrides the schedule."""
    if constant is not None:
        return float(constant)
    if t <= 0:
        return 1.0 / k
    return min(1.0 / k, math.sqrt(math.log(k) / (k * t)))


def resolve_warmup_steps(warmup_steps: int, total_steps: int) -> int:
    """-1 means max(20, floor(2% of T)); any other value is used as given."""
    return max(20, int(0.02 * total_steps)) if warmup_steps == -1 else warmup_steps


class OdmPolicy(PolicyBase):
    """ODM bandit over ``domains``; ``weights()`` is pure, ``update()`` does all state changes."""

    def __init__(
        self,
        domains: Sequence[str],
        initial_weights: np.ndarray,
        *,
        rule: str = "smoothed_mean",
        alpha: float = 0.9,
        warmup_steps: int = 0,
        reward_scale: float = 1.0,
        accumulate: str = "ema",
        temperature_eps: str = "schedule",
        constant_eps: float | None = None,
        update_every: int = 1,
    ) -> None:
        assert rule in RULES, rule
        self.domains: tuple[str, ...] = tuple(domains)
        self.name = "odm" if rule == "exp3" else "odm-smoothed"
        self.rule, self.alpha, self.warmup_steps = rule, alpha, warmup_steps
        self.reward_scale, self.accumulate = reward_scale, accumulate
        self.temperature_eps, self.constant_eps = temperature_eps, constant_eps
        self.update_every = update_every
        k = len(self.domains)
        self._pi = validate_weights(initial_weights, self.domains, where=f"{self.name} initial")
        self._reward_est = np.zeros(k)  # R_hat, float64
        self._last_reward = np.zeros(k)
        self._observed = np.zeros(k, dtype=np.int64)  # updates in which domain i was seen
        self._acc_loss = np.zeros(k)  # loss sums / tokens since the last update
        self._acc_tokens = np.zeros(k)
        self._step = 0  # last step seen
        self._last_update_eps = 1.0 / k  # temperature for temperature_eps=last_update
        self._updates = 0
        self._skipped_nonfinite = 0

    def weights(self) -> np.ndarray:
        return self._pi.copy()

    def update(self, feedback: Feedback) -> None:
        """Consume one step's feedback; run the bandit update when t > T_w and t % n == 0."""
        t = int(feedback.step)
        self._step = t
        if t <= self.warmup_steps:
            return  # warm-up: static initial weights, losses are not used
        loss_sum = np.asarray(feedback.loss_sum, dtype=np.float64)
        tokens = np.asarray(feedback.token_count, dtype=np.float64)
        present = tokens > 0
        bad = present & ~np.isfinite(loss_sum)
        if bad.any():
            names = ", ".join(d for d, b in zip(self.domains, bad, strict=True) if b)
            logger.warning("odm: non-finite loss at step %d for %s; observation skipped", t, names)
            self._skipped_nonfinite += int(bad.sum())
        ok = present & ~bad
        self._acc_loss[ok] += loss_sum[ok]
        self._acc_tokens[ok] += tokens[ok]
        if t % self.update_every == 0:
            self._bandit_update(t)

    def _bandit_update(self, t: int) -> None:
        k = len(self.domains)
        seen = self._acc_tokens > 0
        loss = np.zeros(k)
        loss[seen] = self._acc_loss[seen] / self._acc_tokens[seen]
        self._acc_loss[:] = 0.0
        self._acc_tokens[:] = 0.0
        eps = exploration_rate(t, k, self.constant_eps)
        reward = np.zeros(k)
        if self.rule == "exp3":
            seen &= self._pi > 0  # a zero-probability arm cannot have been drawn
            reward[seen] = self.reward_scale * loss[seen] / self._pi[seen]
            if self.temperature_eps == "schedule":
                temperature = exploration_rate(t - 1, k, self.constant_eps)
            else:
                temperature = self._last_update_eps
            self._accumulate(reward, seen)
            z = temperature * self._reward_est
            m = float(z.max())
            log_softmax = z - (m + math.log(float(np.exp(z - m).sum())))
            share = np.exp(log_softmax)
        else:
            with np.errstate(over="ignore"):
                reward[seen] = np.exp(loss[seen])
            overflow = seen & ~np.isfinite(reward)
            if overflow.any():  # a mean loss > ~709 nats: treat like a non-finite loss
                logger.warning("odm: exp(loss) overflows at step %d; observation skipped", t)
                self._skipped_nonfinite += int(overflow.sum())
                seen &= ~overflow
                reward[overflow] = 0.0
            self._accumulate(reward, seen)
            total = float(self._reward_est.sum())
            share = self._reward_est / total if total > 0 else np.full(k, 1.0 / k)
        self._pi = validate_weights(
            (1.0 - k * eps) * share + eps, self.domains, where=f"{self.name} weights at step {t}"
        )
        self._last_reward = reward
        self._observed += seen
        self._last_update_eps = eps
        self._updates += 1

    def _accumulate(self, reward: np.ndarray, seen: np.ndarray) -> None:
        if self.rule == "exp3" and self.accumulate == "sum":
            self._reward_est[seen] += reward[seen]
        else:
            a = self.alpha
            self._reward_est[seen] = a * self._reward_est[seen] + (1.0 - a) * reward[seen]

    def log_values(self) -> dict[str, float]:
        """eps_t of the last step seen, R_hat, last rewards, observation counts."""
        out = {
            "odm/eps": exploration_rate(self._step, len(self.domains), self.constant_eps),
            "odm/updates": float(self._updates),
            "odm/skipped_nonfinite": float(self._skipped_nonfinite),
        }
        for i, d in enumerate(self.domains):
            out[f"odm/reward/{d}"] = float(self._reward_est[i])
            out[f"odm/last_reward/{d}"] = float(self._last_reward[i])
            out[f"odm/observed/{d}"] = float(self._observed[i])
        return out

    _PER_DOMAIN = ("pi", "reward_est", "last_reward", "acc_loss", "acc_tokens")

    def state_dict(self) -> dict[str, Any]:
        # Per-domain values keyed by name; python floats round-trip float64 exactly.
        state: dict[str, Any] = {
            key: dict(zip(self.domains, getattr(self, f"_{key}").tolist(), strict=True))
            for key in self._PER_DOMAIN
        }
        state["observed"] = dict(zip(self.domains, self._observed.tolist(), strict=True))
        state.update(
            rule=self.rule,
            step=self._step,
            last_update_eps=self._last_update_eps,
            updates=self._updates,
            skipped_nonfinite=self._skipped_nonfinite,
        )
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("rule") != self.rule:
            raise ResumeError(
                f"{self.name} policy state: saved rule {state.get('rule')!r} differs from "
                f"{self.rule!r}; resume with the same mixing.name"
            )
        saved = set(state["pi"])
        if saved != set(self.domains):
            raise ResumeError(
                f"{self.name} policy state: saved domains {sorted(saved)} differ from the "
                f"store's {list(self.domains)}; resume with the same store"
            )
        for key in self._PER_DOMAIN:
            setattr(self, f"_{key}", np.array([float(state[key][d]) for d in self.domains]))
        self._observed = np.array([int(state["observed"][d]) for d in self.domains], np.int64)
        self._step = int(state["step"])
        self._last_update_eps = float(state["last_update_eps"])
        self._updates = int(state["updates"])
        self._skipped_nonfinite = int(state["skipped_nonfinite"])


class OdmSection(Section):
    """Online data mixing (arXiv 2312.02406), policies ``odm`` (EXP3) and ``odm-smoothed``."""

    where: ClassVar[str] = "mixing.odm"

    alpha: Float = Field(
        0.9,
        ge=0,
        lt=1,
        description="EMA factor of the per-domain reward estimate (0.5 in some release scripts).",
    )
    warmup_steps: Int = Field(
        -1,
        ge=-1,
        description="Steps on the initial mixture before the bandit updates; "
        "-1 = max(20, 2% of T).",
    )
    initial: Literal["natural", "uniform"] = Field(
        "natural", description="Mixture used during warm-up: natural | uniform."
    )
    reward_scale: Float = Field(
        1.0, gt=0, description="Scale s of the importance-weighted reward s*loss/pi (exp3 only)."
    )
    accumulate: Literal["ema", "sum"] = Field(
        "ema", description="exp3 reward estimate: ema (paper) | sum (textbook EXP3 in the release)."
    )
    temperature_eps: Literal["schedule", "last_update"] = Field(
        "schedule",
        description="exp3 softmax temperature: schedule (eps_{t-1}) | last_update (release).",
    )
    constant_eps: Float | None = Field(
        None,
        gt=0,
        description="Fixed exploration rate in (0, 1/K] instead of the schedule (tests).",
    )


class OdmOptions(MixingOptions):
    odm: OdmSection = Field(default_factory=OdmSection)


def _from_config(ctx: PolicyContext, cfg: OdmOptions, rule: str) -> OdmPolicy:
    odm = cfg.odm
    k = len(ctx.domains)
    constant = odm.constant_eps
    if constant is not None and not constant <= 1 / k:
        raise ConfigError(
            f"mixing.odm.constant_eps: must be null or a number in (0, 1/K] = (0, {1 / k:.6g}] "
            f"for K={k} domains; got {constant!r}"
        )
    if odm.initial == "natural" and not np.asarray(ctx.train_tokens).sum() > 0:
        raise DataError("odm: the store has no training tokens, so natural weights are undefined")
    start = ctx.natural_weights if odm.initial == "natural" else np.full(k, 1.0 / k)
    return OdmPolicy(
        ctx.domains,
        start,
        rule=rule,
        alpha=odm.alpha,
        warmup_steps=resolve_warmup_steps(odm.warmup_steps, ctx.total_steps),
        reward_scale=odm.reward_scale,
        accumulate=odm.accumulate,
        temperature_eps=odm.temperature_eps,
        constant_eps=constant,
        update_every=cfg.update_every,
    )


@register_policy("odm", OdmOptions)
def build_odm(ctx: PolicyContext, cfg: OdmOptions) -> OdmPolicy:
    """ODM, EXP3 bandit on the training loss (arXiv 2312.02406, paper rule)."""
    return _from_config(ctx, cfg, "exp3")


@register_policy("odm-smoothed", OdmOptions)
def build_odm_smoothed(ctx: PolicyContext, cfg: OdmOptions) -> OdmPolicy:
    """ODM with the release's smoothed-mean rule (the 1B results)."""
    return _from_config(ctx, cfg, "smoothed_mean")
