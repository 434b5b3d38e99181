"""Static mixing policies: weights fixed before training, never updated by feedback.

Each is registered by name (``mixing.name``) and built from the run's mixing config:

* ``uniform``      w_i = 1/K.
* ``natural``      w_i = N_i / sum_j N_j, with N_i the training tokens of domain i.
* ``temperature``  w_i ∝ (N_i / sum_j N_j)^(1/T)  (``mixing.temperature`` = T > 0). T = 1 is
  natural; T -> inf tends to uniform over the domains that have data; T < 1 sharpens toward
  the largest domain. Computed in log space so a small T does not underflow.
* ``fixed``        weights given by the user: ``mixing.weights`` (a YAML mapping name ->
  weight) or ``mixing.weights_file`` (a JSON file with that mapping, or DoReMi-style
  ``{"weights": {...}}`` as written by ``doremi_weights.json``).
* ``unimax``       UniMax (Chung et al. 2023, arXiv 2304.09151): uniform, but no domain gets
  more than ``mixing.unimax.max_epochs`` epochs over the run's token budget; visiting domains
  from the smallest, each gets min(equal share of what is left, E N_d)
  (:func:`~mixlab.mixing.budget.unimax_weights`). With E large it is ``uniform``.

User weights are **never renormalised silently**: every domain must be named, every value must
be a finite number >= 0 and they must sum to 1 within 1e-6, else a ConfigError names the domain
and value. Code that wants rescaling has to ask for it (``normalise=True`` in the helpers).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from mixlab.errors import ConfigError, DataError
from mixlab.mixing.base import (
    Feedback,
    MixingOptions,
    PolicyBase,
    PolicyContext,
    register_policy,
    validate_weights,
    weights_from_mapping,
)
from mixlab.mixing.budget import unimax_weights
from mixlab.schema import Float, Section, Str

logger = logging.getLogger(__name__)


class StaticPolicy(PolicyBase):
    """A mixing policy whose weights never change; ``update`` ignores the feedback."""

    def __init__(self, domains: Sequence[str], weights: np.ndarray, name: str = "static") -> None:
        self.domains: tuple[str, ...] = tuple(domains)
        self.name = name
        self._weights = validate_weights(weights, self.domains, where=f"{name} weights")

    def weights(self) -> np.ndarray:
        return self._weights.copy()

    def update(self, feedback: Feedback) -> None:
        """Static: feedback does not move the weights."""

    def state_dict(self) -> dict[str, Any]:
        # Keyed by name so a checkpoint stays readable; restoring also guards against a store
        # whose domains changed underneath a resumed run.
        return {"weights": dict(zip(self.domains, self._weights.tolist(), strict=True))}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "weights" in state:
            where = f"{self.name} policy state"
            self._weights = weights_from_mapping(state["weights"], self.domains, where=where)


def temperature_weights(natural: np.ndarray, temperature: float) -> np.ndarray:
    """natural^(1/T), renormalised; domains with zero share stay at 0 for every T."""
    if not (isinstance(temperature, (int, float)) and temperature > 0):  # NaN fails too
        raise ConfigError(
            f"mixing.temperature: must be a number > 0 (1 = natural, large = near uniform), "
            f"got {temperature!r}"
        )
    p = np.asarray(natural, dtype=np.float64)
    has_data = p > 0
    if not has_data.any():
        raise DataError("temperature weights: no domain has training tokens")
    logits = np.full(p.shape, -np.inf)
    logits[has_data] = np.log(p[has_data]) / float(temperature)
    w = np.exp(logits - logits[has_data].max())
    return w / w.sum()


def read_weights_file(
    path: str | Path,
    domains: Sequence[str],
    *,
    normalise: bool = False,
    field: str = "mixing.weights_file",
) -> np.ndarray:
    """Weights from a JSON file ``{name: weight}`` or ``{"weights": {name: weight}}``; errors
    name ``field`` (the config key that gave the path) and the file."""
    where = f"{field} {path}"
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"{where}: file not found; give the path of a JSON weights file"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot be read ({exc})") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{where}: invalid JSON at line {exc.lineno} column {exc.colno} ({exc.msg})"
        ) from exc
    if isinstance(data, dict) and isinstance(data.get("weights"), dict):
        data = data["weights"]  # DoReMi output nests the mapping
    if not isinstance(data, dict):
        raise ConfigError(
            f"{where}: expected a JSON object mapping domain name to weight, got "
            f"{type(data).__name__}"
        )
    return mapping_to_weights(data, domains, where=where, normalise=normalise)


def mapping_to_weights(
    mapping: Mapping[str, Any],
    domains: Sequence[str],
    *,
    where: str = "mixing.weights",
    normalise: bool = False,
) -> np.ndarray:
    """Order and check a name -> weight mapping; rescale to sum 1 only if ``normalise``.

    With ``normalise=True`` the values must still be finite and >= 0 with a positive sum; the
    rescaling is logged. The default (False) rejects weights that do not sum to 1.
    """
    if not normalise:
        return weights_from_mapping(mapping, domains, where=where)
    try:
        raw = {k: float(v) for k, v in mapping.items()}
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: every weight must be a number ({exc})") from exc
    total = sum(v for v in raw.values() if np.isfinite(v) and v > 0)
    if total <= 0:
        raise ConfigError(f"{where}: weights have no positive entry; cannot normalise")
    logger.info("%s: rescaling weights that sum to %.6g so they sum to 1", where, total)
    return weights_from_mapping({k: v / total for k, v in raw.items()}, domains, where=where)


def fixed_weights(
    cfg: FixedOptions, domains: Sequence[str], *, normalise: bool = False
) -> np.ndarray:
    """The ``fixed`` policy's weights from ``cfg.weights`` or ``cfg.weights_file`` (one of)."""
    mapping, path = cfg.weights, cfg.weights_file
    if mapping is not None and path is not None:
        raise ConfigError(
            "mixing.weights and mixing.weights_file are both set; give exactly one of them"
        )
    if path is not None:
        return read_weights_file(path, domains, normalise=normalise)
    if mapping is None:
        raise ConfigError(
            "mixing.name=fixed needs mixing.weights (domain -> weight) or mixing.weights_file "
            f"(a JSON file); domains: {', '.join(domains)}"
        )
    if not isinstance(mapping, Mapping):
        raise ConfigError(
            f"mixing.weights: expected a mapping domain -> weight, got {type(mapping).__name__}"
        )
    return mapping_to_weights(mapping, domains, where="mixing.weights", normalise=normalise)


class TemperatureOptions(MixingOptions):
    temperature: Float = Field(
        1.0, gt=0, description="weights ∝ natural^(1/T): 1 = natural, large = near uniform."
    )


class FixedOptions(MixingOptions):
    weights: dict[str, Any] | None = Field(
        None, description="domain -> weight, every domain named, summing to 1."
    )
    weights_file: Str | None = Field(
        None,
        description='JSON file domain -> weight, or {"weights": {...}} as written by '
        "`mixlab doremi` and `mixlab search`.",
    )


class UnimaxSection(Section):
    where: ClassVar[str] = "mixing.unimax"

    max_epochs: Float = Field(
        4.0,
        gt=0,
        description="At most this many epochs of any domain over the run's token budget "
        "(Chung et al. 2023); 4 is where repeated data stops helping (arXiv 2305.16264).",
    )


class UnimaxOptions(MixingOptions):
    unimax: UnimaxSection = Field(default_factory=UnimaxSection)


@register_policy("uniform")
def build_uniform(ctx: PolicyContext, cfg: MixingOptions) -> StaticPolicy:
    """w_i = 1/K."""
    k = len(ctx.domains)
    return StaticPolicy(ctx.domains, np.full(k, 1.0 / k), name="uniform")


@register_policy("natural")
def build_natural(ctx: PolicyContext, cfg: MixingOptions) -> StaticPolicy:
    """w_i = N_i / sum_j N_j (token-proportional)."""
    return StaticPolicy(ctx.domains, ctx.natural_weights, name="natural")


@register_policy("temperature", TemperatureOptions)
def build_temperature(ctx: PolicyContext, cfg: TemperatureOptions) -> StaticPolicy:
    """w_i ∝ natural_i^(1/T) (mixing.temperature = T)."""
    return StaticPolicy(
        ctx.domains, temperature_weights(ctx.natural_weights, cfg.temperature), name="temperature"
    )


@register_policy("fixed", FixedOptions)
def build_fixed(ctx: PolicyContext, cfg: FixedOptions) -> StaticPolicy:
    """Your weights (mixing.weights or mixing.weights_file), never renormalised silently."""
    return StaticPolicy(ctx.domains, fixed_weights(cfg, ctx.domains), name="fixed")


@register_policy("unimax", UnimaxOptions)
def build_unimax(ctx: PolicyContext, cfg: UnimaxOptions) -> StaticPolicy:
    """Uniform up to mixing.unimax.max_epochs per domain, surplus to the rest (2304.09151)."""
    if ctx.budget_tokens <= 0:
        raise ConfigError("unimax: the run's token budget is unknown (tokens_per_step = 0)")
    weights = unimax_weights(ctx.train_tokens, ctx.budget_tokens, cfg.unimax.max_epochs)
    return StaticPolicy(ctx.domains, weights, name="unimax")
