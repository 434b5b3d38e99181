"""Portable AC-ODM policy files (``*.acodm.pt``, METHODS.md §2.5).

A proxy run (``mode=proxy_train``, ``mixing.policy_out``) writes its actor so a bigger target
can be driven by it (``mode=frozen``, ``mixing.policy_in``). The file is a plain
``torch.save`` of tensors, lists, dicts, str, int, float, bool and None, so it loads with
``torch.load(weights_only=True)`` (no pickled code)::

    {"format": "mixlab.acodm.policy", "version": 2,
     "domains": [...],                        # canonical (sorted) order = actor output order
     "state_spec": {"kind": "mixlab" | "paper", "K", "D", "depth_points", "delta_reference",
                    "progress_scale", "clip", "ema"},
     "actor": {"hidden": H, "n_hidden": n, "state_dim": S, "bound": b | None,
               "prior": "uniform" | "unimax" | "natural" | "file", "state_dict": {...}},
     "critic": {"output": "vector", "state_dict": {...}} | None,   # optional, not needed
     "provenance": {"proxy_params": ..., "steps": ..., "seed": ..., ...}}

The state spec fixes what every input coordinate means; the network sizes of the proxy LM and
the target do not matter, but the domain names, the spec, the actor's bound and the name of
its prior must be identical (the prior's *values* are the target's own: UniMax over the
target's budget, its natural shares, its ``prior_file``). :func:`load_policy_file` checks them
and raises ConfigError naming each difference.

Version 2 (issue 18, the mixlab variant) added the state kind, the bound and the prior.
Version-1 files hold a paper-variant actor (paper state, no bound, uniform prior) and still load
into a ``variant: paper`` run; a ``variant: mixlab`` run refuses them with that advice.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mixlab.errors import ConfigError
from mixlab.files import save_torch
from mixlab.mixing.acodm.agent import Actor
from mixlab.mixing.acodm.state import StateSpec

FORMAT = "mixlab.acodm.policy"
VERSION = 2
READABLE = (1, 2)
_SCALARS = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class PolicyFile:
    """The content of a policy file, validated."""

    domains: tuple[str, ...]
    state_spec: StateSpec
    hidden: int
    n_hidden: int
    bound: float | None
    prior: str
    actor_state: dict[str, torch.Tensor]
    critic_output: str | None
    critic_state: dict[str, torch.Tensor] | None
    provenance: dict[str, Any]


def _plain(value: Any) -> Any:
    """Provenance values as weights_only-loadable types (anything else becomes its str)."""
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


def save_policy_file(
    path: str | Path,
    *,
    domains: tuple[str, ...],
    state_spec: StateSpec,
    hidden: int,
    n_hidden: int,
    actor_state: dict[str, torch.Tensor],
    bound: float | None = None,
    prior: str = "uniform",
    critic_output: str | None = None,
    critic_state: dict[str, torch.Tensor] | None = None,
    provenance: dict[str, Any] | None = None,
) -> Path:
    """Write the file atomically (temp file + rename); return its path."""
    path = Path(path)
    payload: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "domains": list(domains),
        "state_spec": state_spec.to_dict(),
        "actor": {
            "hidden": int(hidden),
            "n_hidden": int(n_hidden),
            "state_dim": state_spec.dim,
            "bound": None if bound is None else float(bound),
            "prior": str(prior),
            "state_dict": {k: v.detach().cpu().clone() for k, v in actor_state.items()},
        },
        "critic": None
        if critic_state is None
        else {
            "output": critic_output,
            "state_dict": {k: v.detach().cpu().clone() for k, v in critic_state.items()},
        },
        "provenance": _plain(dict(provenance or {})),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_torch(path, payload)


def load_policy_file(
    path: str | Path,
    domains: tuple[str, ...] | list[str],
    state_spec: StateSpec,
    *,
    bound: float | None = None,
    prior: str = "uniform",
) -> PolicyFile:
    """Read and validate a policy file against this run's domains, state spec, bound, prior."""
    path = Path(path)
    where = f"mixing.policy_in={str(path)!r}"
    if not path.is_file():
        raise ConfigError(
            f"{where}: no such file; a proxy run writes one with mixing.policy_out=<file>"
        )
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or foreign files
        raise ConfigError(f"{where}: not a readable AC-ODM policy file ({exc})") from exc
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ConfigError(f"{where}: not an AC-ODM policy file (format tag {FORMAT!r} missing)")
    version = raw.get("version")
    if version not in READABLE:
        raise ConfigError(
            f"{where}: format version {version!r}; this mixlab reads versions "
            f"{', '.join(map(str, READABLE))}"
        )
    saved_domains = tuple(raw["domains"])
    if saved_domains != tuple(domains):
        missing = [d for d in domains if d not in saved_domains]
        extra = [d for d in saved_domains if d not in domains]
        detail = (
            f"missing in the file: {missing}; only in the file: {extra}"
            if missing or extra
            else "same names in a different order"
        )
        raise ConfigError(
            f"{where}: the policy was trained on domains {list(saved_domains)}, this store has "
            f"{list(domains)} ({detail}); proxy and target must share the domain names"
        )
    saved_spec = StateSpec.from_dict(raw["state_spec"])
    actor = raw["actor"]
    saved_bound = actor.get("bound")
    saved_prior = str(actor.get("prior", "uniform"))
    if version == 1 and state_spec.kind != "paper":
        raise ConfigError(
            f"{where}: a format-1 file (written before the mixlab variant) holds a paper-variant "
            "actor (paper state, no bound); load it with mixing.acodm.variant=paper, or train the "
            "proxy again with this mixlab"
        )
    ours, theirs = state_spec.to_dict(), saved_spec.to_dict()
    diffs = [f"{k}: file {theirs[k]!r} vs run {ours[k]!r}" for k in ours if ours[k] != theirs[k]]
    if diffs:
        raise ConfigError(
            f"{where}: state spec differs ({'; '.join(diffs)}); set mixing.acodm.variant / state "
            "/ state_ema / state_gain / depth_points / delta_reference / progress_scale as in the "
            "proxy run"
        )
    if saved_bound != bound or saved_prior != prior:
        raise ConfigError(
            f"{where}: the actor was trained with mixing.acodm.bound={saved_bound!r}, "
            f"prior={saved_prior!r}; this run has bound={bound!r}, prior={prior!r}: set them "
            "as in the proxy run"
        )
    critic = raw.get("critic")
    return PolicyFile(
        domains=saved_domains,
        state_spec=saved_spec,
        hidden=int(actor["hidden"]),
        n_hidden=int(actor["n_hidden"]),
        bound=None if saved_bound is None else float(saved_bound),
        prior=saved_prior,
        actor_state=dict(actor["state_dict"]),
        critic_output=None if critic is None else str(critic["output"]),
        critic_state=None if critic is None else dict(critic["state_dict"]),
        provenance=dict(raw.get("provenance") or {}),
    )


def build_actor(policy: PolicyFile, prior: np.ndarray | None = None) -> Actor:
    """The file's actor as a module (eval mode) around ``prior`` (default uniform), no RNG."""
    spec = policy.state_spec
    with torch.device("meta"):
        actor = Actor(
            spec.dim, spec.num_domains, policy.hidden, policy.n_hidden, bound=policy.bound
        )
    actor = actor.to_empty(device="cpu")
    actor.load_state_dict(policy.actor_state)
    k = spec.num_domains
    p0 = np.full(k, 1.0 / k) if prior is None else np.asarray(prior, dtype=np.float64)
    with torch.no_grad():
        actor.log_prior.copy_(torch.as_tensor(np.log(p0 / p0.sum()), dtype=torch.float32))
    return actor.eval()
