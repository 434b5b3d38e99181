"""AC-ODM as a mixing policy (``mixing.name=acodm``; METHODS.md §2, arXiv 2505.23878, and mixlab's
redesign, ``mixing.acodm.variant``).

Per LM step t, :meth:`AcodmPolicy.update` does, in this order:

1. s_t from the step's losses (and, ``state: paper``, counts and weight norms;
   :class:`StateBuilder` / :class:`MixlabStateBuilder`);
2. (training modes) the reward r_t (:mod:`.reward`: ``loss`` or ``progress`` from the
   per-domain losses, ``alignment`` from the per-domain mean gradients, or
   ``heldout_alignment`` from those and the last held-out gradient) and the transition
   (s_{t-n}, a_{t-n+1}, sum_k gamma^k r, s_t, mask) into replay (n = ``horizon``), where a_t
   is the mixture that drew step t and s_0 := s_1;
3. (training modes, every ``agent_update_every`` steps, once replay holds N transitions)
   ``updates_per_step`` agent updates: critic fit (and behaviour cloning of the ODM warm-up
   mixer, ``warmup_mixer: odm``) while t <= T_w, actor-critic after; at t = T_w the targets are
   hard-copied;
4. the next mixture: the warm-up mixer (the prior p0, or ODM ``smoothed_mean`` from natural
   weights) while t < T_w, then a_{t+1} = act(s_t) with exploration, clipped to the epoch caps
   of ``mixing.max_epochs``. It changes only at steps with t % mixing.update_every == 0, the
   steps where the loop reads it, so a_t is always the mixture that really drew step t.

The mixlab variant, and why (measured by ``scripts/acodm_mechanism.py``; README "AC-ODM without
collapse"). The paper's actor maximises sum_i a_i Q_i(s, a) over a softmax: linear in a, so a
vertex, and with a per-step z-scored (zero-sum) reward that does not depend on a_t the critic
learns Q(s) and the actor walks to the domain with the highest running reward, whatever that
does to the model; the state's counts feed its own choice back to it. mixlab instead:

* moves the mixture within a **bound around a prior** p0 (``prior``, ``bound``): every
  |log(w_i / p0_i)| <= bound, and the objective has ``- kl_coef KL(w || p0)``, whose optimum
  w ~ p0 exp(Q / kl_coef) is interior. ``mixing.max_epochs`` caps the prior first, then every
  mixture (the Mixer applies them again: a no-op);
* rewards what predicts the mixture's multi-step effect on held-out loss: each domain's
  training loss (``reward: loss``, no probe inside the model; the only reward whose rank
  correlation with a 20-step tilt's effect was positive at every checkpoint measured), or
  ``heldout_alignment`` (DoGE-style, arXiv 2310.15393), one small extra backward on validation
  windows every ``heldout_every`` steps (``needs.heldout_gradients``);
* credits a mixture with its immediate effect (``gamma`` 0, a contextual bandit) unless asked
  for n-step returns or the DDPG bootstrap (``horizon``, ``bootstrap``);
* reads a loss-only state (``state: mixlab``) with the same meaning on a proxy and a target;
* optionally guards the worst domain (``guard_hardest`` = k): the k domains with the highest
  slow loss EMA never go below their prior share (:func:`raise_to_floor`), for rewards that
  maximise the mean (``progress``) at the hardest domain's expense; ``guard_worst`` keeps every
  domain above the share at which the own-token model predicts its loss would pass the
  hardest domain's (:mod:`mixlab.mixing.own_tokens`), so only the slack below the worst
  domain is spent;
* optionally measures progress on held-out text (``progress_loss: heldout``): the progress
  estimate (and the guards' ranking) follows the loss of fixed unscored validation windows,
  one forward every ``heldout_every`` steps, instead of the training loss.

``mode=frozen`` skips 2 and 3 (no gradients needed) and acts with the actor of a policy file
(``frozen_exploration``, default none). ``online`` or ``proxy_train`` with a policy file
(``mixing.policy_in``) start from its actor (and critic, if the file has one) and fine-tune
them online. The mode comes from :func:`resolve_mode` (``auto``: frozen when
``mixing.policy_in`` is set, proxy_train when ``mixing.policy_out`` is).

What it needs from the trainer (``policy.needs``, :class:`~mixlab.mixing.base.PolicyNeeds`):

* ``gradients`` (training modes with a gradient reward): ``grad_sum`` (K, P), the per-domain
  gradient sums on the ``reward_layers`` matrices, all-reduced; the mean gradient is grad_sum[i] /
  ``extras.get("grad_count", microbatch_count)[i]``, count 0 = absent;
* ``heldout_gradients`` (training modes, ``reward: heldout_alignment``): the held-out batch's
  ``extras["heldout_grad_sum"]`` / ``["heldout_grad_count"]`` every ``heldout_every`` steps;
  with ``progress_loss: heldout`` (whenever the progress estimate is kept), ``losses_only``:
  ``extras["heldout_loss"]`` of the same windows every ``heldout_every`` steps;
* ``weight_norms`` (``state: paper``): ``param_norms`` (D,) and
  ``extras["param_diff_norms"]`` (D,) of the MLP down-projections at ``depth_points``
  (:class:`~mixlab.train.probes.WeightNormTracker`: a policy never holds model weights);
* ``floor_per_domain`` (forced micro-batches/sequences per domain per step), and
  ``exports_policy_file`` in ``proxy_train`` (:meth:`save_policy_file` at each checkpoint).

For the logs: :meth:`log_values` every step (rewards; the bound and KL actually used:
``acodm/max_log_ratio`` = max_i |log(w_i / p0_i)|, ``acodm/kl`` = KL(w || p0),
``acodm/bound_excess`` = the run's largest excursion beyond the bound, 0 unless epoch caps
or the worst-domain guard forced one (none in the guard's 20 measured runs);
``acodm/guard_mass`` = the mass the guard moved this step; ``acodm/max_cap_use`` = max_d
served tokens / (E_d N_d), > 1 when a domain went past its epoch cap, e.g. through the
per-domain floor), :meth:`eval_log_values` (the K x K gradient cosines) at each eval,
``last_state`` (s_t) to replay a run.
"""

from __future__ import annotations

import copy
import logging
import math
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from mixlab.errors import ConfigError, DataError, ResumeError
from mixlab.mixing.acodm.agent import DdpgAgent
from mixlab.mixing.acodm.options import (
    LOSS_REWARDS,
    AcodmOptions,
    heldout_probe,
    is_bounded,
    resolve_options,
    resolve_warmup_steps,
    uses_progress,
    with_variant_defaults,
)
from mixlab.mixing.acodm.policy_file import PolicyFile, load_policy_file, save_policy_file
from mixlab.mixing.acodm.reward import (
    ProgressReward,
    RunningScale,
    cosine_matrix,
    gram_matrix,
    heldout_alignment,
    heldout_direction,
    reward_from_gram,
)
from mixlab.mixing.acodm.state import MixlabStateBuilder, StateBuilder, StateSpec
from mixlab.mixing.base import (
    Feedback,
    GradientNeeds,
    HeldoutGradientNeeds,
    MixingOptions,
    PolicyBase,
    PolicyContext,
    PolicyNeeds,
    WeightNormNeeds,
    register_policy,
    validate_weights,
)
from mixlab.mixing.budget import clip_to_caps, run_caps, unimax_weights
from mixlab.mixing.odm import OdmPolicy
from mixlab.mixing.own_tokens import worst_floors
from mixlab.mixing.static import read_weights_file
from mixlab.schema import Str

logger = logging.getLogger(__name__)

_SEED_SALT = 0xAC0D  # the agent's stream differs from every other stream drawn from the seed


def state_spec(opts: AcodmOptions, num_domains: int) -> StateSpec:
    """The state layout implied by the options (what a policy file must match)."""
    opts = with_variant_defaults(opts)
    if opts.state == "mixlab":
        return StateSpec(
            num_domains=num_domains,
            num_depths=0,
            depth_points=(),
            delta_reference="previous",
            progress_scale=1.0,
            kind="mixlab",
            ema=float(opts.state_ema),
            gain=bool(opts.state_gain),
        )
    return StateSpec(
        num_domains=num_domains,
        num_depths=len(opts.depth_points),
        depth_points=tuple(float(q) for q in opts.depth_points),
        delta_reference=opts.delta_reference,
        progress_scale=float(opts.progress_scale),
    )


class AcodmPolicy(PolicyBase):
    """A warm-up mixer, then an actor maps the training state to the mixture."""

    name = "acodm"

    def __init__(
        self,
        domains: Sequence[str],
        initial_weights: np.ndarray,
        opts: AcodmOptions,
        *,
        total_steps: int,
        seed: int = 0,
        update_every: int = 1,
        policy_file: PolicyFile | None = None,
        policy_out: str | None = None,
        prior: np.ndarray | None = None,
        caps: np.ndarray | None = None,
        budget_tokens: float = 0.0,
    ) -> None:
        """``opts`` must be resolved (:func:`resolve_options`); ``policy_file`` is required
        for mode=frozen (its actor drives) and optional otherwise (fine-tune from it).
        ``initial_weights`` start the ODM warm-up mixer (natural weights); ``prior`` is p0
        (default uniform; already within ``caps``, the (K,) weight caps of the epoch caps);
        ``budget_tokens`` (the run's tokens) turns served tokens into the share of each cap."""
        if opts.mode == "frozen" and policy_file is None:
            raise ConfigError("acodm: mode=frozen needs a policy file (mixing.policy_in)")
        opts = with_variant_defaults(opts)
        self.domains: tuple[str, ...] = tuple(domains)
        k = len(self.domains)
        self.opts = opts
        self.update_every = update_every
        self.policy_out = policy_out  # where proxy_train exports (None: the run folder)
        self.warmup_steps = resolve_warmup_steps(opts.warmup_steps, opts.batch_size, total_steps)
        self.prior = validate_weights(
            np.full(k, 1.0 / k) if prior is None else prior, self.domains, where="acodm prior"
        )
        if not (self.prior > 0).all():
            zero = [d for d, p in zip(self.domains, self.prior, strict=True) if p <= 0]
            raise DataError(
                f"acodm: the prior gives no weight to {zero}; the actor moves *around* the "
                "prior, so every domain needs weight > 0 (choose another mixing.acodm.prior)"
            )
        self.caps = None if caps is None else np.asarray(caps, dtype=np.float64)
        self.budget_tokens = float(budget_tokens)
        self.spec = state_spec(opts, k)
        # reward: progress and the state's gain group read one estimate, updated once a step
        self._progress = ProgressReward(k) if uses_progress(opts) else None
        # progress_loss: heldout: training tokens and loss sums since the last held-out probe
        self._since_tokens = np.zeros(k)
        self._since_loss = np.zeros(k)
        self._gain: np.ndarray | None = None  # this step's estimate (update)
        self.builder: StateBuilder | MixlabStateBuilder
        if opts.state == "mixlab":
            self.builder = MixlabStateBuilder(self.prior, ema=opts.state_ema, gain=opts.state_gain)
        else:
            self.builder = StateBuilder(
                k,
                self.spec.num_depths,
                delta_reference=opts.delta_reference,
                progress_scale=opts.progress_scale,
            )
        self._odm = OdmPolicy(
            self.domains,
            initial_weights,
            rule="smoothed_mean",
            alpha=opts.warmup_alpha,
            warmup_steps=0,
            update_every=update_every,
        )
        agent_opts = opts
        if policy_file is not None:  # the file decides the network sizes
            agent_opts = opts.model_copy(
                update={"hidden": policy_file.hidden, "n_hidden": policy_file.n_hidden}
            )
            if opts.mode == "frozen":  # replay is never used
                agent_opts = agent_opts.model_copy(update={"buffer_size": 1, "batch_size": 1})
        agent_seed = int(np.random.SeedSequence([int(seed), _SEED_SALT]).generate_state(1)[0])
        self.agent = DdpgAgent(self.builder.dim, k, agent_opts, seed=agent_seed, prior=self.prior)
        if policy_file is not None:
            self.agent.load_actor_state(policy_file.actor_state)
            if opts.mode != "frozen" and policy_file.critic_state is not None:
                if policy_file.critic_output != opts.critic_output:
                    raise ConfigError(
                        f"mixing.policy_in: the file's critic is {policy_file.critic_output}, "
                        f"this run has mixing.acodm.critic_output={opts.critic_output}"
                    )
                self.agent.load_critic_state(policy_file.critic_state)
        self._scale = RunningScale(opts.reward_ema)
        self._heldout: np.ndarray | None = None  # h: the last held-out gradient (P,)
        self._pending: deque[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = deque()
        self._served = np.zeros(k)  # target tokens served per domain (epoch-cap use)
        self._max_excess = 0.0  # largest excursion beyond the bound (epoch caps can force one)
        self._weights = self._capped(
            self._odm.weights() if opts.warmup_mixer == "odm" else self.prior
        )
        self._prev_state: np.ndarray | None = None
        self._step = 0
        self._logs: dict[str, float] = {}
        self._gram: np.ndarray | None = None  # K x K of the last step's mean gradients
        self._skipped_nonfinite = 0  # steps whose state or reward was not finite

    # ------------------------------------------------------------------ what the loop reads
    @property
    def needs(self) -> PolicyNeeds:
        """Gradients in every mode but frozen (and the held-out batch for heldout_alignment);
        weight norms for the paper state; the file in proxy_train."""
        opts = self.opts
        training = opts.mode != "frozen"
        gradients = training and opts.reward not in LOSS_REWARDS
        blocks = tuple(opts.reward_layers or ())
        heldout = None
        if training and opts.reward == "heldout_alignment":
            every, windows = heldout_probe(opts, "heldout_alignment")
            heldout = HeldoutGradientNeeds(every, windows, blocks, opts.reward_role)
        elif self._heldout_progress:
            every, windows = heldout_probe(opts, "progress_loss")
            heldout = HeldoutGradientNeeds(every, windows, (), losses_only=True)
        return PolicyNeeds(
            gradients=GradientNeeds(blocks, opts.reward_role) if gradients else None,
            heldout_gradients=heldout,
            weight_norms=(
                WeightNormNeeds(self.spec.depth_points, opts.delta_reference)
                if opts.state == "paper"
                else None
            ),
            floor_per_domain=opts.floor_per_domain,
            exports_policy_file=opts.mode == "proxy_train",
            policy_file=self.policy_out,
        )

    @property
    def phase(self) -> str:
        """``warmup`` while the ODM mixer drives the next step, then ``main``."""
        return "warmup" if self._step < self.warmup_steps else "main"

    @property
    def last_state(self) -> np.ndarray | None:
        """s_t of the last update (None before the first); log it to replay a run."""
        return None if self._prev_state is None else self._prev_state.copy()

    def weights(self) -> np.ndarray:
        return self._weights.copy()

    # ------------------------------------------------------------------ the update
    @property
    def _updates_progress(self) -> bool:
        """The progress estimate is kept and this mode reads it (frozen: only for the state
        or the worst-loss guard)."""
        opts = self.opts
        return self._progress is not None and bool(
            opts.state_gain or opts.guard_worst or opts.mode != "frozen"
        )

    @property
    def _heldout_progress(self) -> bool:
        return self._updates_progress and self.opts.progress_loss == "heldout"

    def update(self, feedback: Feedback) -> None:
        t, opts = int(feedback.step), self.opts
        if self._heldout_progress:
            self._update_heldout_progress(feedback)
        elif self._updates_progress:
            assert self._progress is not None
            self._gain = self._progress(feedback.mean_loss(), feedback.token_count)
        state = self._state(feedback)
        tokens = np.asarray(feedback.token_count, dtype=np.float64)
        self._served += np.where(np.isfinite(tokens), tokens, 0.0)
        action = self._weights  # a_t: the mixture that drew step t
        warm = t <= self.warmup_steps
        finite = bool(np.isfinite(state).all())
        if opts.mode != "frozen":
            reward, present = self._reward(feedback, action)
            prev = self._prev_state if self._prev_state is not None else state
            transition = (prev, action, reward, state)
            if all(np.isfinite(x).all() for x in transition):
                self._push(prev, action, reward, present, state)
            else:  # never let a non-finite value into replay (it would poison the networks)
                finite = False
            if t % opts.agent_update_every == 0 and self.agent.ready:
                stats: dict[str, float] = {}
                self.agent.set_lr_scale(self._lr_scale(t, int(feedback.total_steps)))
                cloning = opts.warmup_mixer == "odm"
                for _ in range(opts.updates_per_step):
                    stats = self.agent.warmup_update(cloning) if warm else self.agent.update()
                self._logs.update({f"acodm/{key}": v for key, v in stats.items()})
            if t == self.warmup_steps:
                self.agent.hard_update_targets()
        if warm and opts.warmup_mixer == "odm":
            self._odm.update(feedback)
        if not finite:
            self._skipped_nonfinite += 1
            logger.warning(
                "acodm: non-finite state or reward at step %d: not stored, the mixture is kept", t
            )
        if t % self.update_every == 0:
            if t < self.warmup_steps:
                warmup = self._odm.weights() if opts.warmup_mixer == "odm" else self.prior
                self._weights = self._capped(warmup)
            elif not finite:
                pass  # acting on a non-finite state would give a meaningless mixture
            else:
                frozen = opts.mode == "frozen"
                noise = opts.frozen_exploration if frozen else opts.exploration
                self._weights = validate_weights(
                    self._capped(self._guarded(self.agent.act(state, noise, opts.sigma))),
                    self.domains,
                    where=f"acodm actor mixture at step {t}",
                )
        if t == self.warmup_steps:
            logger.info("acodm: warm-up over at step %d; the actor drives the mixture now", t)
        if finite:
            self._prev_state = state
        self._step = t
        self._log_bound()

    def _update_heldout_progress(self, feedback: Feedback) -> None:
        """``progress_loss: heldout``: at a probe step the held-out losses (taken before this
        step's update, so after the tokens of the steps before it) feed the estimate with the
        training tokens since the last probe; a domain without held-out windows gets its
        training loss over those steps. Between probes the last estimate stands."""
        assert self._progress is not None
        heldout = feedback.extras.get("heldout_loss")
        if heldout is not None:
            loss = np.asarray(heldout, dtype=np.float64).copy()
            missing = ~np.isfinite(loss)
            train = np.divide(
                self._since_loss,
                self._since_tokens,
                out=np.full(loss.shape, np.nan),
                where=self._since_tokens > 0,
            )
            loss[missing] = train[missing]
            self._gain = self._progress(loss, self._since_tokens)
            self._since_tokens[:] = 0.0
            self._since_loss[:] = 0.0
            for d, v in zip(self.domains, loss, strict=True):
                self._logs[f"acodm/heldout_loss/{d}"] = float(v)
        tokens = np.asarray(feedback.token_count, dtype=np.float64)
        sums = np.asarray(feedback.loss_sum, dtype=np.float64)
        ok = np.isfinite(tokens) & np.isfinite(sums) & (tokens > 0)
        self._since_tokens[ok] += tokens[ok]
        self._since_loss[ok] += sums[ok]

    def _state(self, feedback: Feedback) -> np.ndarray:
        t, total = int(feedback.step), int(feedback.total_steps)
        if isinstance(self.builder, MixlabStateBuilder):
            return self.builder.build(
                feedback.mean_loss(), feedback.token_count, t, total, gain=self._gain
            )
        norms = feedback.param_norms
        diffs = feedback.extras.get("param_diff_norms")
        if norms is None or diffs is None:
            raise ValueError(
                "acodm: feedback needs param_norms (D,) and extras['param_diff_norms'] (D,) "
                "(policy.needs.weight_norms; mixlab.train.probes.WeightNormTracker measures them)"
            )
        counts = np.asarray(feedback.microbatch_count, dtype=np.float64)
        return self.builder.build(feedback.mean_loss(), counts, norms, diffs, t, total)

    def _push(
        self,
        prev: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        present: np.ndarray,
        state: np.ndarray,
    ) -> None:
        """Store (s, a, r, s', mask), or the n-step transition once ``horizon`` rewards are in."""
        n = self.opts.horizon
        if n == 1:
            self.agent.push(prev, action, reward, state, present)
            return
        self._pending.append((prev, action, reward, present))
        if len(self._pending) == n:
            gamma = float(self.opts.gamma)  # type: ignore[arg-type]
            ret = sum(gamma**k * r for k, (_, _, r, _) in enumerate(self._pending))
            s0, a0, _, mask0 = self._pending.popleft()
            self.agent.push(s0, a0, np.asarray(ret), state, mask0)

    def _guarded(self, weights: np.ndarray) -> np.ndarray:
        """The worst-domain guards, as floors (:func:`raise_to_floor`: the mass is taken from
        the others in proportion to their room). ``guard_hardest`` = k: the k domains with the
        highest slow loss EMA at their prior share. ``guard_worst``: the own-token floors
        ``p_i 2^(-(L_max - L_i) / d_i)`` (:func:`~mixlab.mixing.own_tokens.worst_floors`) from
        the progress estimate's EMA losses and drops per doubling, once every domain has one."""
        floor = np.zeros_like(self.prior)
        k = self.opts.guard_hardest
        loss = self.builder.slow_loss if isinstance(self.builder, MixlabStateBuilder) else None
        if self._heldout_progress and self._progress is not None:
            heldout = self._progress.loss
            if np.isfinite(heldout).all():
                loss = heldout  # rank by the held-out loss the estimate follows
        if k and loss is not None:
            hardest = np.argsort(-loss, kind="stable")[:k]
            floor[hardest] = self.prior[hardest]
        if self.opts.guard_worst and self._progress is not None:
            ema, drops = self._progress.loss, self._progress.drops()
            if np.isfinite(ema).all():
                worst = worst_floors(self.prior, np.nan_to_num(drops, nan=0.0), ema)
                floor = np.maximum(floor, worst)
                self._logs["acodm/guard_floor_sum"] = float(worst.sum())
        if not floor.any():
            return weights
        guarded = raise_to_floor(weights, floor)
        self._logs["acodm/guard_mass"] = float(np.abs(guarded - weights).sum() / 2.0)
        return guarded

    def _capped(self, weights: np.ndarray) -> np.ndarray:
        return weights if self.caps is None else clip_to_caps(weights, self.caps)

    def _log_bound(self) -> None:
        """The bound and KL actually used, and how much of its epoch cap each domain used."""
        w = self._weights
        ratio = np.log(np.maximum(w, 1e-300) / self.prior)
        self._logs["acodm/kl"] = float(np.sum(np.where(w > 0, w * ratio, 0.0)))
        self._logs["acodm/max_log_ratio"] = float(np.abs(ratio).max())
        self._logs["acodm/max_weight"] = float(w.max())
        if is_bounded(self.opts):
            bound = float(self.opts.bound)  # type: ignore[arg-type]
            excess = max(0.0, float(np.abs(ratio).max()) - bound)
            self._max_excess = max(self._max_excess, excess)
            self._logs["acodm/bound"] = bound
            self._logs["acodm/bound_excess"] = self._max_excess  # the run's maximum so far
        if self.caps is not None and self.budget_tokens > 0:
            with np.errstate(divide="ignore", invalid="ignore"):
                use = self._served / (self.caps * self.budget_tokens)
            self._logs["acodm/max_cap_use"] = float(np.nanmax(np.where(self.caps > 0, use, 0.0)))

    def _reward(self, feedback: Feedback, action: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = len(self.domains)
        if self.opts.reward in LOSS_REWARDS:
            reward, raw, present = self._loss_reward(feedback)
            for i, d in enumerate(self.domains):
                self._logs[f"acodm/reward/{d}"] = float(reward[i])
                self._logs[f"acodm/raw_reward/{d}"] = float(raw[i])
            return reward, present
        if feedback.grad_sum is None:
            raise ValueError(
                f"acodm (mode={self.opts.mode}): feedback.grad_sum (K, P) is missing; the loop "
                "must capture per-domain gradients (policy.needs.gradients)"
            )
        grads = np.asarray(feedback.grad_sum)
        if grads.ndim != 2 or grads.shape[0] != k:
            raise ValueError(f"acodm: grad_sum must be ({k}, P), got {grads.shape}")
        count = np.asarray(
            feedback.extras.get("grad_count", feedback.microbatch_count), dtype=np.float64
        )
        if count.shape != (k,):
            raise ValueError(
                f"acodm: the gradient counts must have shape ({k},), got {count.shape}"
            )
        present = count > 0
        # One float64 pass over the K x P sums (P can be ~1M), then one K x K product.
        mean = np.divide(grads, np.where(present, count, 1.0)[:, None], dtype=np.float64)
        gram = gram_matrix(mean, present)
        finite = np.isfinite(np.diag(gram))  # a NaN/inf element makes the squared norm so
        if (present & ~finite).any():
            bad = [d for d, b in zip(self.domains, present & ~finite, strict=True) if b]
            logger.warning("acodm: non-finite gradients at step %d for %s", feedback.step, bad)
            present &= finite
            gram[~present, :] = 0.0
            gram[:, ~present] = 0.0
        self._gram = gram
        if self.opts.reward == "heldout_alignment":
            reward, raw = self._heldout_reward(feedback, mean, present)
        else:
            reward, raw = reward_from_gram(
                gram,
                present,
                weighting=self.opts.reward_weighting,
                weights=action,
                pre_clip=self.opts.pre_clip,
            )
        grad_norm = np.sqrt(np.clip(np.diag(gram), 0.0, None))
        for i, d in enumerate(self.domains):
            self._logs[f"acodm/reward/{d}"] = float(reward[i])
            self._logs[f"acodm/raw_reward/{d}"] = float(raw[i])
            self._logs[f"acodm/grad_norm/{d}"] = float(grad_norm[i])
        return reward, present

    def _loss_reward(self, feedback: Feedback) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """r~ = the domain's mean training loss of the step (``reward: loss``) or its loss
        decrease per token (``reward: progress``, :class:`ProgressReward`), centred and
        running-scaled.

        Measured for ``loss`` (``scripts/acodm_mechanism.py`` B5): of the rewards tried, the
        only one whose rank correlation with what a 20-step tilt toward a domain does to the
        mean held-out loss is positive at every checkpoint (+0.31, +0.19, +0.33 at steps
        60/150/250 on the demo corpus; held-out alignment -0.26, +0.17, -0.52)."""
        loss = np.asarray(feedback.mean_loss(), dtype=np.float64)
        present = np.isfinite(loss) & (np.asarray(feedback.token_count) > 0)
        if self._gain is not None and self.opts.reward == "progress":  # loss drop per token
            loss = self._gain  # this step's, from update
        raw = np.where(present, loss, 0.0)
        reward = self._scale(raw, present)
        self._logs["acodm/reward_scale"] = self._scale.scale
        return reward, raw, present

    def _heldout_reward(
        self, feedback: Feedback, mean: np.ndarray, present: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """r~ = alignment with the last held-out gradient, centred and running-scaled."""
        k = len(self.domains)
        sums = feedback.extras.get("heldout_grad_sum")
        if sums is not None:
            counts = np.asarray(feedback.extras["heldout_grad_count"], dtype=np.float64)
            h = heldout_direction(np.asarray(sums), counts)
            if h is not None and np.isfinite(h).all():
                if h.shape != (mean.shape[1],):
                    raise ValueError(
                        f"acodm: the held-out gradient has {h.shape[0]} elements, the training "
                        f"gradients {mean.shape[1]}; both must come from mixing.acodm.reward_layers"
                    )
                self._heldout = h
            losses = feedback.extras.get("heldout_loss")
            if losses is not None:
                for d, v in zip(self.domains, np.asarray(losses, dtype=np.float64), strict=True):
                    self._logs[f"acodm/heldout_loss/{d}"] = float(v)
        if self._heldout is None:  # no held-out gradient yet: nothing to learn from
            present[:] = False
            return np.zeros(k), np.zeros(k)
        raw = heldout_alignment(mean, present, self._heldout)
        reward = self._scale(raw, present)
        self._logs["acodm/reward_scale"] = self._scale.scale
        return reward, raw

    def _lr_scale(self, t: int, total_steps: int) -> float:
        """Agent lr / peak lr: 1, or linear warm-up over T_w then cosine to min_lr_ratio."""
        if self.opts.lr_schedule == "constant":
            return 1.0
        tw = self.warmup_steps
        if t <= tw:
            return t / tw
        progress = min(1.0, (t - tw) / max(total_steps - tw, 1))
        low = self.opts.min_lr_ratio
        return low + (1.0 - low) * 0.5 * (1.0 + math.cos(math.pi * progress))

    # ------------------------------------------------------------------ logs and files
    def gradient_cosines(self) -> np.ndarray | None:
        """(K, K) pairwise cosines of the last step's domain gradients (log at each eval)."""
        return None if self._gram is None else cosine_matrix(self._gram)

    def eval_log_values(self) -> dict[str, float]:
        """``acodm/cos/<a>/<b>`` (a < b): the gradient cosines, logged with each evaluation."""
        cos = self.gradient_cosines()
        if cos is None:
            return {}
        k = len(self.domains)
        return {
            f"acodm/cos/{self.domains[i]}/{self.domains[j]}": float(cos[i, j])
            for i in range(k)
            for j in range(i + 1, k)
        }

    def log_values(self) -> dict[str, float]:
        """Rewards, losses, mean Q, replay size, phase (0 warm-up, 1 main), drift from init."""
        actor_drift, critic_drift = self.agent.drift()
        out = dict(self._logs)
        out.update(
            {
                "acodm/phase": 0.0 if self.phase == "warmup" else 1.0,
                "acodm/buffer_size": float(len(self.agent.buffer)),
                "acodm/agent_updates": float(self.agent.updates),
                "acodm/skipped_nonfinite": float(self._skipped_nonfinite),
                "acodm/skipped_agent_steps": float(self.agent.skipped_steps),
                "acodm/actor_drift": actor_drift,
                "acodm/critic_drift": critic_drift,
            }
        )
        return out

    def save_policy_file(self, path: str | Path, provenance: dict[str, Any] | None = None) -> Path:
        """Write the actor (and critic) as a portable ``*.acodm.pt`` file."""
        prov = {
            "steps": self._step,
            "mode": self.opts.mode,
            "options": self.opts.model_dump(),
            **(provenance or {}),
        }
        return save_policy_file(
            path,
            domains=self.domains,
            state_spec=self.spec,
            hidden=self.agent.opts.hidden,
            n_hidden=self.agent.opts.n_hidden,
            bound=self.agent.actor.bound,
            prior=self.opts.prior,
            actor_state=self.agent.actor_state(),
            critic_output=self.agent.opts.critic_output,
            critic_state=self.agent.critic_state(),
            provenance=prov,
        )

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {
            "domains": list(self.domains),
            "mode": self.opts.mode,
            "step": self._step,
            "weights": [float(w) for w in self._weights],
            "prev_state": None if self._prev_state is None else self._prev_state.tolist(),
            "builder": self.builder.state_dict(),
            "odm": self._odm.state_dict(),
            "agent": self.agent.state_dict(),
            "logs": dict(self._logs),
            "gram": None if self._gram is None else self._gram.tolist(),
            "skipped_nonfinite": self._skipped_nonfinite,
            "scale": self._scale.state_dict(),
            "progress": None if self._progress is None else self._progress.state_dict(),
            "since": [self._since_tokens.tolist(), self._since_loss.tolist()],
            "gain": None if self._gain is None else self._gain.tolist(),
            "heldout": None if self._heldout is None else self._heldout.copy(),
            "pending": [tuple(np.array(x) for x in item) for item in self._pending],
            "served": self._served.tolist(),
            "max_excess": self._max_excess,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if list(state.get("domains", [])) != list(self.domains):
            raise ResumeError(
                f"acodm policy state: saved domains {state.get('domains')} differ from the "
                f"store's {list(self.domains)}; resume with the same store"
            )
        if state.get("mode") != self.opts.mode:
            raise ResumeError(
                f"acodm policy state: saved with mixing.acodm.mode={state.get('mode')!r}, "
                f"this run has {self.opts.mode!r}; resume with the same mode"
            )
        try:
            self.agent.load_state_dict(state["agent"])
        except (RuntimeError, ValueError) as exc:
            raise ResumeError(
                f"acodm policy state does not fit this agent ({exc}); resume with the same "
                "mixing.acodm network and replay settings"
            ) from exc
        self._step = int(state["step"])
        self._weights = np.array(state["weights"], dtype=np.float64)
        prev = state["prev_state"]
        self._prev_state = None if prev is None else np.array(prev, dtype=np.float64)
        self.builder.load_state_dict(state["builder"])
        self._odm.load_state_dict(state["odm"])
        self._logs = copy.deepcopy(state["logs"])
        gram = state.get("gram")
        self._gram = None if gram is None else np.array(gram, dtype=np.float64)
        self._skipped_nonfinite = int(state.get("skipped_nonfinite", 0))
        if "scale" in state:
            self._scale.load_state_dict(state["scale"])
        if self._progress is not None and state.get("progress") is not None:
            self._progress.load_state_dict(state["progress"])
        heldout = state.get("heldout")
        self._heldout = None if heldout is None else np.array(heldout, dtype=np.float64)
        if "since" in state:
            self._since_tokens = np.array(state["since"][0], dtype=np.float64)
            self._since_loss = np.array(state["since"][1], dtype=np.float64)
        gain = state.get("gain")
        self._gain = None if gain is None else np.array(gain, dtype=np.float64)
        self._pending = deque(
            tuple(np.array(x, dtype=np.float64) for x in item)  # type: ignore[misc]
            for item in state.get("pending", [])
        )
        self._served = np.array(state.get("served", np.zeros(len(self.domains))), dtype=float)
        self._max_excess = float(state.get("max_excess", 0.0))


class AcodmMixing(MixingOptions):
    acodm: AcodmOptions = Field(default_factory=AcodmOptions)
    policy_out: Str | None = Field(
        None,
        description="Write the learned actor to this file at each checkpoint and at the end (a "
        "portable *.acodm.pt for a bigger target run).",
    )
    policy_in: Str | None = Field(
        None,
        description="Start from a saved policy file (drive this run with a proxy's actor, "
        "frozen unless mixing.acodm.mode=online).",
    )


@register_policy("acodm", AcodmMixing)
def build_acodm(ctx: PolicyContext, cfg: AcodmMixing) -> AcodmPolicy:
    """AC-ODM: an actor-critic learns the mixture online or on a proxy (arXiv 2505.23878)."""
    k = len(ctx.domains)
    policy_in = cfg.policy_in
    opts = resolve_options(cfg.acodm, k, policy_in=policy_in, policy_out=cfg.policy_out)
    if opts.mode == "frozen" and cfg.policy_out:
        raise ConfigError(
            "mixing.policy_out: a frozen acodm run (mixing.policy_in) trains no actor, so there "
            "is nothing to export; drop mixing.policy_out or set mixing.acodm.mode=online to "
            "fine-tune the loaded actor"
        )
    every = cfg.update_every
    if not np.asarray(ctx.train_tokens).sum() > 0:
        raise DataError("acodm: the store has no training tokens, so natural weights are undefined")
    caps = None
    if cfg.max_epochs is not None and ctx.budget_tokens > 0:
        caps = run_caps(cfg.max_epochs, ctx.domains, ctx.budget_tokens, ctx.train_tokens)
    prior = prior_weights(opts.prior, ctx, cfg.max_epochs, path=opts.prior_file)
    if caps is not None:
        prior = clip_to_caps(prior, caps)
    policy_file = None
    if policy_in:
        policy_file = load_policy_file(
            policy_in,
            ctx.domains,
            state_spec(opts, k),
            bound=float(opts.bound) if is_bounded(opts) else None,  # type: ignore[arg-type]
            prior=opts.prior,
        )
    return AcodmPolicy(
        ctx.domains,
        ctx.natural_weights,
        opts,
        total_steps=ctx.total_steps,
        seed=ctx.seed,
        update_every=every,
        policy_file=policy_file,
        policy_out=cfg.policy_out,
        prior=prior,
        caps=caps,
        budget_tokens=ctx.budget_tokens,
    )


UNIMAX_EPOCHS = 4.0  # UniMax's usual cap when mixing.max_epochs is not set (arXiv 2305.16264)


def raise_to_floor(weights: np.ndarray, floor: np.ndarray) -> np.ndarray:
    """``weights`` with every domain below ``floor`` raised to it, the mass taken from the
    others in proportion to their room above their own floor (so none goes below it).
    ``floor`` must be >= 0 and sum to <= 1."""
    w = np.asarray(weights, dtype=np.float64)
    low = w < floor
    if not low.any():
        return w.copy()
    out = np.where(low, floor, w)
    room = np.where(low, 0.0, w - floor)
    out -= (out.sum() - 1.0) * room / room.sum()
    return out


def prior_weights(
    name: str,
    ctx: PolicyContext,
    max_epochs: float | dict[str, float] | None = None,
    *,
    path: str | Path | None = None,
) -> np.ndarray:
    """p0 for ``mixing.acodm.prior``: uniform, natural, UniMax over the run's budget with
    ``mixing.max_epochs`` (default 4 epochs), or the JSON weights file ``path`` (``file``)."""
    k = len(ctx.domains)
    if name == "file":
        if path is None:
            raise ConfigError("mixing.acodm.prior=file needs mixing.acodm.prior_file")
        return read_weights_file(path, ctx.domains, field="mixing.acodm.prior_file")
    if name == "uniform":
        return np.full(k, 1.0 / k)
    if name == "natural":
        return ctx.natural_weights
    if ctx.budget_tokens <= 0:
        raise ConfigError("mixing.acodm.prior=unimax: the run's token budget is unknown")
    if isinstance(max_epochs, dict):
        epochs: float | np.ndarray = np.array(
            [float(max_epochs.get(d, math.inf)) for d in ctx.domains]
        )
    else:
        epochs = UNIMAX_EPOCHS if max_epochs is None else float(max_epochs)
    return unimax_weights(ctx.train_tokens, ctx.budget_tokens, epochs)
