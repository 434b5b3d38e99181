"""AC-ODM: actor-critic online data mixing (arXiv 2505.23878; METHODS.md §2), and mixlab's
redesign of it.

An actor maps a training state to the mixture; a critic learns from a per-domain reward. Two
variants share the code (``mixing.acodm.variant``):

* ``paper`` -- METHODS.md §2: a DDPG softmax actor, a train-gradient alignment reward
  (domains whose gradients agree with the others' are worth more) z-scored per step, a state of
  losses, counts and weight norms, gamma 0.95. Measured here: every trained actor ends on one
  domain (0.9+), online and proxy -> target, because its objective sum_i a_i Q_i is linear in
  the action (a vertex is the optimum whatever the reward says) and its reward does not depend
  on the action and is zero-sum (``scripts/acodm_mechanism.py``).
* ``mixlab`` (default; mixlab's own design, not the paper's) -- the mixture is a bounded move
  around a prior p0, ``w = softmax(log p0 + (bound/2) tanh(u(s)))`` (every
  |log(w_i / p0_i)| <= bound), the actor maximises ``sum_i w_i Q_i - kl_coef KL(w || p0)``;
  the reward is each domain's training gradient projected on the gradient of a small held-out
  batch (DoGE-style, arXiv 2310.15393), a contextual bandit (gamma 0) by default, and a
  loss-only state that means the same thing on a proxy and a target. README: "AC-ODM without
  collapse".

One concern per module:

* :mod:`.options`     ``mixing.acodm.*`` fields, validation, variants, the ``acodm_release``
  preset
* :mod:`.reward`      per-domain rewards: gradient alignment (§2.2), held-out alignment, loss
* :mod:`.state`       the state vector s_t (§2.3, and mixlab's)
* :mod:`.agent`       actor (bounded or not), critic, targets, replay, warm-up, updates (§2.4)
* :mod:`.policy`      :class:`AcodmPolicy`, registered as ``mixing.name=acodm``; priors
* :mod:`.policy_file` portable ``*.acodm.pt`` files for proxy -> target transfer (§2.5)

Importing :mod:`.policy` registers the policy. Names are re-exported lazily (PEP 562) so that
reading the options (``mixlab.config`` does) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AcodmOptions": "options",
    "AcodmPolicy": "policy",
    "Actor": "agent",
    "Critic": "agent",
    "DdpgAgent": "agent",
    "PolicyFile": "policy_file",
    "RELEASE_SWITCHES": "options",
    "ReplayBuffer": "agent",
    "StateBuilder": "state",
    "MixlabStateBuilder": "state",
    "RunningScale": "reward",
    "VARIANT_DEFAULTS": "options",
    "heldout_alignment": "reward",
    "heldout_direction": "reward",
    "prior_weights": "policy",
    "with_variant_defaults": "options",
    "StateSpec": "state",
    "alignment_reward": "reward",
    "apply_release_preset": "options",
    "build_acodm": "policy",
    "build_actor": "policy_file",
    "clip3": "reward",
    "cosine_matrix": "reward",
    "gram_matrix": "reward",
    "load_policy_file": "policy_file",
    "resolve_options": "options",
    "resolve_warmup_steps": "options",
    "reward_from_gram": "reward",
    "save_policy_file": "policy_file",
    "select_depth_blocks": "state",
    "select_reward_blocks": "reward",
    "state_spec": "policy",
    "validate": "options",
    "zscore": "reward",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
