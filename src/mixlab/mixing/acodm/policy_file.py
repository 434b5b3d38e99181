"""Portable AC-ODM policy files (``*.acodm.pt``, METHODS.md §2.5).

A proxy run (``mode=proxy_train``, ``mixing.policy_out``) writes its actor so a bigger target
can be driven by it (``mode=frozen``, ``mixing.policy_in``). The file is a plain
``torch.save`` of tensors, lists, dicts, str, int, float, bool and None, so it loads with
``torch.load(weights_only=True)`` (no pickled code)::

    {"format": "mixlab.acodm.policy", "version": 1,
     "domains": [...],                        # canonical (sorted) order = actor output order
     "state_spec": {"K", "D", "depth_points", "delta_reference", "progress_scale", "clip"},
     "actor": {"hidden": H, "n_hidden": n, "state_dim": S, "state_dict": {name: tensor}},
     "critic": {"output": "vector", "state_dict": {...}} | None,   # optional, not needed
     "provenance": {"proxy_params": ..., "steps": ..., "seed": ..., ...}}

The state spec fixes what every input coordinate means; the network sizes of the proxy LM and
the target do not matter (the state is architecture-agnostic), but the domain names and the
spec must be identical. :func:`load_policy_file` checks both and raises ConfigError naming
each difference.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mixlab.errors import ConfigError
from mixlab.files import save_torch
from mixlab.mixing.acodm.agent import Actor
from mixlab.mixing.acodm.state import StateSpec

FORMAT = "mixlab.acodm.policy"
VERSION = 1
_SCALARS = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class PolicyFile:
    """The content of a policy file, validated."""

    domains: tuple[str, ...]
    state_spec: StateSpec
    hidden: int
    n_hidden: int
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
    path: str | Path, domains: tuple[str, ...] | list[str], state_spec: StateSpec
) -> PolicyFile:
    """Read and validate a policy file against this run's domains and state spec."""
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
    if raw.get("version") != VERSION:
        raise ConfigError(
            f"{where}: format version {raw.get('version')!r}; this mixlab reads version {VERSION}"
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
    ours, theirs = state_spec.to_dict(), saved_spec.to_dict()
    diffs = [f"{k}: file {theirs[k]!r} vs run {ours[k]!r}" for k in ours if ours[k] != theirs[k]]
    if diffs:
        raise ConfigError(
            f"{where}: state spec differs ({'; '.join(diffs)}); set mixing.acodm.depth_points / "
            "delta_reference / progress_scale as in the proxy run"
        )
    actor = raw["actor"]
    critic = raw.get("critic")
    return PolicyFile(
        domains=saved_domains,
        state_spec=saved_spec,
        hidden=int(actor["hidden"]),
        n_hidden=int(actor["n_hidden"]),
        actor_state=dict(actor["state_dict"]),
        critic_output=None if critic is None else str(critic["output"]),
        critic_state=None if critic is None else dict(critic["state_dict"]),
        provenance=dict(raw.get("provenance") or {}),
    )


def build_actor(policy: PolicyFile) -> Actor:
    """The file's actor as a module (eval mode), without drawing from any RNG."""
    spec = policy.state_spec
    with torch.device("meta"):
        actor = Actor(spec.dim, spec.num_domains, policy.hidden, policy.n_hidden)
    actor = actor.to_empty(device="cpu")
    actor.load_state_dict(policy.actor_state)
    return actor.eval()
