"""AC-ODM as a mixing policy (``mixing.name=acodm``; METHODS.md §2, arXiv 2505.23878).

Per LM step t, :meth:`AcodmPolicy.update` does, in this order:

1. s_t from the step's losses, counts and weight norms (:class:`StateBuilder`);
2. (training modes) the reward r_t from the per-domain mean gradients
   (:func:`alignment_reward`) and the transition (s_{t-1}, a_t, r_t, s_t, mask_t) into replay,
   where a_t is the mixture that drew step t and s_0 := s_1;
3. (training modes, every ``agent_update_every`` steps, once replay holds N transitions)
   ``updates_per_step`` agent updates: behaviour cloning + critic fit while t <= T_w, DDPG after;
   at t = T_w the targets are hard-copied;
4. the next mixture: ODM ``smoothed_mean`` (alpha 0.5, from natural weights, updated from t = 1)
   while t < T_w, then a_{t+1} = act(s_t) with exploration. It changes only at steps with
   t % mixing.update_every == 0, the steps where the loop reads it, so a_t is always the
   mixture that really drew step t.

``mode=frozen`` skips 2 and 3 (no gradients needed) and acts
with the actor of a policy file (``frozen_exploration``, default none). ``online`` or
``proxy_train`` with a policy file (``mixing.policy_in``) start from its actor (and critic, if
the file has one) and fine-tune them online. The mode comes from :func:`resolve_mode`
(``auto``: frozen when ``mixing.policy_in`` is set, proxy_train when ``mixing.policy_out`` is).

What it needs from the trainer (``policy.needs``, :class:`~mixlab.mixing.base.PolicyNeeds`):

* ``weight_norms``: ``param_norms`` (D,) = ||W_b||_F of the MLP down-projections at
  ``depth_points`` (blocks from :func:`.state.select_depth_blocks`), measured after the
  optimiser step, and ``extras["param_diff_norms"]`` (D,) = ||W_b,t - W_b,ref||_F. The
  trainer keeps the reference copies (:class:`~mixlab.train.probes.WeightNormTracker`): a
  policy never holds model weights;
* ``gradients`` (training modes only): ``grad_sum`` (K, P), the per-domain gradient sums on the
  ``reward_layers`` down-projections, all-reduced; the mean gradient is
  grad_sum[i] / ``extras.get("grad_count", microbatch_count)[i]``, count 0 = absent.
  With the one-backward hook capture ``extras["grad_count"]`` = the divisor that makes
  it the domain's mean gradient (e.g. token counts for summed per-token gradients);
* ``floor_per_domain`` (forced micro-batches/sequences per domain per step), and
  ``exports_policy_file`` in ``proxy_train`` (:meth:`save_policy_file` at each checkpoint).

For the logs: :meth:`log_values` every step, :meth:`eval_log_values` (the K x K gradient
cosines) at each eval, ``last_state`` (s_t) to replay a run.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from mixlab.errors import ConfigError, DataError, ResumeError
from mixlab.mixing.acodm.agent import DdpgAgent
from mixlab.mixing.acodm.options import AcodmOptions, resolve_options, resolve_warmup_steps
from mixlab.mixing.acodm.policy_file import PolicyFile, load_policy_file, save_policy_file
from mixlab.mixing.acodm.reward import cosine_matrix, gram_matrix, reward_from_gram
from mixlab.mixing.acodm.state import StateBuilder, StateSpec
from mixlab.mixing.base import (
    Feedback,
    GradientNeeds,
    MixingOptions,
    PolicyBase,
    PolicyContext,
    PolicyNeeds,
    WeightNormNeeds,
    register_policy,
    validate_weights,
)
from mixlab.mixing.odm import OdmPolicy
from mixlab.schema import Str

logger = logging.getLogger(__name__)

_SEED_SALT = 0xAC0D  # the agent's stream differs from every other stream drawn from the seed


def state_spec(opts: AcodmOptions, num_domains: int) -> StateSpec:
    """The state layout implied by the options (what a policy file must match)."""
    return StateSpec(
        num_domains=num_domains,
        num_depths=len(opts.depth_points),
        depth_points=tuple(float(q) for q in opts.depth_points),
        delta_reference=opts.delta_reference,
        progress_scale=float(opts.progress_scale),
    )


class AcodmPolicy(PolicyBase):
    """ODM warm-up, then a DDPG actor maps the training state to the mixture."""

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
    ) -> None:
        """``opts`` must be resolved (:func:`resolve_options`); ``policy_file`` is required
        for mode=frozen (its actor drives) and optional otherwise (fine-tune from it)."""
        if opts.mode == "frozen" and policy_file is None:
            raise ConfigError("acodm: mode=frozen needs a policy file (mixing.policy_in)")
        self.domains: tuple[str, ...] = tuple(domains)
        k = len(self.domains)
        self.opts = opts
        self.update_every = update_every
        self.policy_out = policy_out  # where proxy_train exports (None: the run folder)
        self.warmup_steps = resolve_warmup_steps(opts.warmup_steps, opts.batch_size, total_steps)
        self.spec = state_spec(opts, k)
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
        self.agent = DdpgAgent(self.builder.dim, k, agent_opts, seed=agent_seed)
        if policy_file is not None:
            self.agent.load_actor_state(policy_file.actor_state)
            if opts.mode != "frozen" and policy_file.critic_state is not None:
                if policy_file.critic_output != opts.critic_output:
                    raise ConfigError(
                        f"mixing.policy_in: the file's critic is {policy_file.critic_output}, "
                        f"this run has mixing.acodm.critic_output={opts.critic_output}"
                    )
                self.agent.load_critic_state(policy_file.critic_state)
        self._weights = self._odm.weights()
        self._prev_state: np.ndarray | None = None
        self._step = 0
        self._logs: dict[str, float] = {}
        self._gram: np.ndarray | None = None  # K x K of the last step's mean gradients
        self._skipped_nonfinite = 0  # steps whose state or reward was not finite

    # ------------------------------------------------------------------ what the loop reads
    @property
    def needs(self) -> PolicyNeeds:
        """Weight norms always; gradients in every mode but frozen; the file in proxy_train."""
        return PolicyNeeds(
            gradients=(
                None
                if self.opts.mode == "frozen"
                else GradientNeeds(tuple(self.opts.reward_layers), self.opts.reward_role)
            ),
            weight_norms=WeightNormNeeds(self.spec.depth_points, self.opts.delta_reference),
            floor_per_domain=self.opts.floor_per_domain,
            exports_policy_file=self.opts.mode == "proxy_train",
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
    def update(self, feedback: Feedback) -> None:
        t, opts = int(feedback.step), self.opts
        norms = feedback.param_norms
        diffs = feedback.extras.get("param_diff_norms")
        if norms is None or diffs is None:
            raise ValueError(
                "acodm: feedback needs param_norms (D,) and extras['param_diff_norms'] (D,) "
                "(policy.needs.weight_norms; mixlab.train.probes.WeightNormTracker measures them)"
            )
        counts = np.asarray(feedback.microbatch_count, dtype=np.float64)
        state = self.builder.build(
            feedback.mean_loss(), counts, norms, diffs, t, int(feedback.total_steps)
        )
        action = self._weights  # a_t: the mixture that drew step t
        warm = t <= self.warmup_steps
        finite = bool(np.isfinite(state).all())
        if opts.mode != "frozen":
            reward, present = self._reward(feedback, action)
            prev = self._prev_state if self._prev_state is not None else state
            transition = (prev, action, reward, state)
            if all(np.isfinite(x).all() for x in transition):
                self.agent.push(prev, action, reward, state, present)
            else:  # never let a non-finite value into replay (it would poison the networks)
                finite = False
            if t % opts.agent_update_every == 0 and self.agent.ready:
                stats: dict[str, float] = {}
                self.agent.set_lr_scale(self._lr_scale(t, int(feedback.total_steps)))
                for _ in range(opts.updates_per_step):
                    stats = self.agent.warmup_update() if warm else self.agent.update()
                self._logs.update({f"acodm/{key}": v for key, v in stats.items()})
            if t == self.warmup_steps:
                self.agent.hard_update_targets()
        if warm:
            self._odm.update(feedback)
        if not finite:
            self._skipped_nonfinite += 1
            logger.warning(
                "acodm: non-finite state or reward at step %d: not stored, the mixture is kept", t
            )
        if t % self.update_every == 0:
            if t < self.warmup_steps:
                self._weights = self._odm.weights()
            elif not finite:
                pass  # acting on a non-finite state would give a meaningless mixture
            else:
                frozen = opts.mode == "frozen"
                noise = opts.frozen_exploration if frozen else opts.exploration
                self._weights = validate_weights(
                    self.agent.act(state, noise, opts.sigma),
                    self.domains,
                    where=f"acodm actor mixture at step {t}",
                )
        if t == self.warmup_steps:
            logger.info("acodm: warm-up over at step %d; the actor drives the mixture now", t)
        if finite:
            self._prev_state = state
        self._step = t

    def _reward(self, feedback: Feedback, action: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = len(self.domains)
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
        reward, raw = reward_from_gram(
            gram,
            present,
            weighting=self.opts.reward_weighting,
            weights=action,
            pre_clip=self.opts.pre_clip,
        )
        self._gram = gram
        grad_norm = np.sqrt(np.clip(np.diag(gram), 0.0, None))
        for i, d in enumerate(self.domains):
            self._logs[f"acodm/reward/{d}"] = float(reward[i])
            self._logs[f"acodm/raw_reward/{d}"] = float(raw[i])
            self._logs[f"acodm/grad_norm/{d}"] = float(grad_norm[i])
        return reward, present

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
    """AC-ODM: a DDPG actor maps the training state to the mixture (arXiv 2505.23878)."""
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
    policy_file = None
    if policy_in:
        policy_file = load_policy_file(policy_in, ctx.domains, state_spec(opts, k))
    return AcodmPolicy(
        ctx.domains,
        ctx.natural_weights,
        opts,
        total_steps=ctx.total_steps,
        seed=ctx.seed,
        update_every=every,
        policy_file=policy_file,
        policy_out=cfg.policy_out,
    )
