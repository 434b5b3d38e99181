"""AC-ODM: actor-critic online data mixing (arXiv 2505.23878; METHODS.md §2).

A DDPG actor maps an architecture-agnostic training state to the mixture; its critic learns
from a gradient-alignment reward (domains whose gradients agree with the others' are worth
more). One concern per module:

* :mod:`.options`     ``mixing.acodm.*`` fields, validation, the ``acodm_release`` preset
* :mod:`.reward`      per-domain gradient-alignment reward (§2.2)
* :mod:`.state`       the state vector s_t (§2.3)
* :mod:`.agent`       actor, critic, targets, replay, warm-up and DDPG updates (§2.4)
* :mod:`.policy`      :class:`AcodmPolicy`, registered as ``mixing.name=acodm``
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
