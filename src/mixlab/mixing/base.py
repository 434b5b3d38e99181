"""The mixing-policy seam: what the training loop tells a policy, and what it gets back.

A mixing policy maps training feedback to domain weights. It is *pure*: it never touches the
model, files, the sampler or ``torch.distributed``. Once per optimiser step the loop builds a
frozen :class:`Feedback` record (already summed over ranks) and calls ``policy.update``; every
``update_every`` steps it reads ``policy.weights()`` and hands them to the sampler.

Weights are token shares over the domains in canonical (sorted) order. They are checked at the
boundary by :func:`validate_weights`: finite, >= 0, summing to 1 within 1e-6.

Policies are built by name from a small registry (:func:`register_policy`,
:func:`build_policy`); an unknown name raises :class:`~mixlab.errors.ConfigError` listing the
valid ones.

What a policy needs besides losses. Every policy declares it in one typed record,
:class:`PolicyNeeds` (``policy.needs``); the trainer reads it once when it builds the run and
sets up exactly that, nothing more:

==========================  =============================================================
``needs.``                  the trainer then
==========================  =============================================================
``reference``               scores every micro-batch with the frozen reference model at that
                            path; fills ``excess_sum`` / ``ref_loss_sum``
``gradients``               captures per-domain gradients of the named blocks' matrices in
                            the same backward pass; fills ``grad_sum`` and
                            ``extras["grad_count"]``
``heldout_gradients``       every ``every`` steps, one extra small forward and backward on
                            ``windows_per_domain`` validation windows of every domain (from
                            the end of each validation split), captured per domain by the
                            same hooks; fills ``extras["heldout_grad_sum"]`` (K, P),
                            ``extras["heldout_grad_count"]`` and ``extras["heldout_loss"]``
                            (K,) at those steps only. The model's gradients and weights are
                            left untouched. ``losses_only``: one forward without gradients
                            of the same windows every time; only the losses and counts
``weight_norms``            measures the MLP down-projections at those relative depths after
                            each update (the trainer keeps the reference copies, a policy
                            never holds model weights); fills ``param_norms`` and
                            ``extras["param_diff_norms"]``
``floor_per_domain``        gives every domain that many sequences (micro-batches when
                            sampling is ``homogeneous``) in every step
``exports_policy_file``     calls ``save_policy_file(path, provenance)`` with every
                            checkpoint, to ``policy_file`` (``mixing.policy_out``) or the
                            run folder
``objective``               trains on that loss (:mod:`mixlab.train.objective`): the token
                            mean, or ``group_dro`` (DoReMi's proxy reweights domain losses)
==========================  =============================================================

Besides the five methods of :class:`MixingPolicy`, ``eval_log_values()`` adds scalars to every
evaluation record. :class:`PolicyBase` gives every optional part a default (needs nothing,
logs nothing, exports nothing); the built-in policies derive from it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import numpy as np
from pydantic import Field, field_validator

from mixlab.errors import ConfigError
from mixlab.schema import Float, Int, Section, Str

WEIGHT_SUM_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Feedback:
    """What one optimiser step tells the policy (METHODS.md §0, feedback contract).

    All arrays are indexed by domain in canonical order and already all-reduced over ranks.

    Attributes:
        step: global optimiser step t (1-based) that produced this feedback.
        total_steps: planned number of steps T of the run.
        loss_sum: (K,) sum of per-token cross-entropy over domain-i target tokens, computed in
            this step's forward pass (before the parameter update).
        token_count: (K,) number of loss-bearing target tokens of domain i in the step.
        microbatch_count: (K,) micro-batches (homogeneous sampling) or sequences (mixed
            sampling) of domain i in the step.
        excess_sum: optional (K,) DoReMi excess-loss sums, clipped per token in the loop.
        ref_loss_sum: optional (K,) reference-model loss sums on the same tokens.
        grad_sum: optional (K, P) per-domain gradient sums of selected parameters (AC-ODM).
        param_norms: optional (D,) norms of tracked weight matrices (AC-ODM).
        extras: anything else a policy needs; keys are documented by the policy that reads them.
    """

    step: int
    total_steps: int
    loss_sum: np.ndarray
    token_count: np.ndarray
    microbatch_count: np.ndarray
    excess_sum: np.ndarray | None = None
    ref_loss_sum: np.ndarray | None = None
    grad_sum: np.ndarray | None = None
    param_norms: np.ndarray | None = None
    extras: Mapping[str, Any] = field(default_factory=dict)

    def mean_loss(self) -> np.ndarray:
        """(K,) token-mean loss per domain; NaN where the domain had no tokens this step."""
        counts = np.asarray(self.token_count, dtype=np.float64)
        sums = np.asarray(self.loss_sum, dtype=np.float64)
        out = np.full(counts.shape, np.nan)
        present = counts > 0
        out[present] = sums[present] / counts[present]
        return out

    @property
    def present(self) -> np.ndarray:
        """(K,) boolean mask of domains with at least one loss token this step."""
        return np.asarray(self.token_count) > 0


@dataclass(frozen=True)
class GradientNeeds:
    """Per-domain gradients of some weight matrices, from the ordinary backward pass.

    Attributes:
        blocks: decoder block indices (negative = from the last block; out of range dropped).
        role: which matrix of each block (:mod:`mixlab.model.layers` roles, e.g. ``mlp_down``).
    """

    blocks: tuple[int, ...]
    role: str = "mlp_down"


@dataclass(frozen=True)
class HeldoutGradientNeeds:
    """Per-domain gradients of a small held-out batch, every ``every`` steps.

    Attributes:
        every: capture at steps t with (t - 1) % every == 0 (so at t = 1 first).
        windows_per_domain: validation windows of each domain in the held-out batch.
        blocks, role: the matrices, as in :class:`GradientNeeds`.
        losses_only: the held-out *losses* only, of the same windows at every capture (spread
            evenly over the unscored text): one forward without gradients (a loss trend on
            fixed text, for AC-ODM's progress estimate); ``blocks`` and ``role`` are unused.
    """

    every: int
    windows_per_domain: int
    blocks: tuple[int, ...]
    role: str = "mlp_down"
    losses_only: bool = False

    def due(self, step: int) -> bool:
        """True at the steps that capture (1, 1 + every, 1 + 2 every, ...)."""
        return (step - 1) % self.every == 0


@dataclass(frozen=True)
class WeightNormNeeds:
    """Norms of the MLP down-projections at relative depths, and their change per step.

    Attributes:
        depth_points: relative depths q in [0, 1]; block floor(q (L - 1) + 0.5) each.
        delta_reference: ``previous`` (change since the last step) or ``first`` (since the
            run's first step).
    """

    depth_points: tuple[float, ...]
    delta_reference: str = "previous"


@dataclass(frozen=True)
class PolicyNeeds:
    """What the trainer must measure or arrange for a policy (the default: nothing)."""

    reference: str | None = None
    gradients: GradientNeeds | None = None
    heldout_gradients: HeldoutGradientNeeds | None = None
    weight_norms: WeightNormNeeds | None = None
    floor_per_domain: int = 0
    exports_policy_file: bool = False
    policy_file: str | None = None  # where to export it; None = <run>/policy.<name>.pt
    objective: str = "token_mean"

    @property
    def looks_inside_model(self) -> bool:
        """True when feedback needs more than the loss: gradients or weight norms."""
        return (
            self.gradients is not None
            or self.heldout_gradients is not None
            or self.weight_norms is not None
        )


@runtime_checkable
class MixingPolicy(Protocol):
    """Feedback in, weights out. Implementations must be deterministic given their seed."""

    domains: tuple[str, ...]

    def weights(self) -> np.ndarray:
        """(K,) current token shares: finite, >= 0, sum to 1."""
        ...

    def update(self, feedback: Feedback) -> None:
        """Consume one step's feedback (may be a no-op for static policies)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything needed so that a fresh instance continues bit-identically."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def log_values(self) -> dict[str, float]:
        """Extra scalars for ``metrics.jsonl`` (keys without the ``mix/`` prefix)."""
        ...

    @property
    def needs(self) -> PolicyNeeds:
        """What the trainer must measure or arrange for this policy."""
        ...

    def eval_log_values(self) -> dict[str, float]:
        """Extra scalars for every evaluation record (keys without the ``mix/`` prefix)."""
        ...

    def save_policy_file(self, path: str | Path, provenance: dict[str, Any]) -> Path:
        """Write the learned policy to ``path`` (only if ``needs.exports_policy_file``)."""
        ...


class PolicyBase:
    """Defaults for the optional parts of :class:`MixingPolicy`: needs nothing, logs nothing.

    Subclasses set ``domains`` and implement ``weights``, ``update``, ``state_dict`` and
    ``load_state_dict``; they override the ``needs`` property when they need more than
    losses.
    """

    domains: tuple[str, ...]

    @property
    def needs(self) -> PolicyNeeds:
        return PolicyNeeds()

    def log_values(self) -> dict[str, float]:
        return {}

    def eval_log_values(self) -> dict[str, float]:
        return {}

    def save_policy_file(self, path: str | Path, provenance: dict[str, Any]) -> Path:
        raise ConfigError(
            f"mixing.policy_out: policy {type(self).__name__} has nothing to export; only "
            "acodm writes a policy file"
        )


@dataclass(frozen=True)
class PolicyContext:
    """What a policy factory may know about the run when the policy is built.

    Attributes:
        domains: domain names in canonical (sorted) order.
        train_tokens: (K,) training tokens per domain, for natural weights.
        seed: run seed; policies with randomness derive their own generator from it.
        total_steps: planned number of optimiser steps T.
        tokens_per_step: tokens of one optimiser step over all ranks (budget = T x this).
        vocab_size: the tokenizer's vocabulary size (None when unknown).
    """

    domains: tuple[str, ...]
    train_tokens: np.ndarray
    seed: int = 0
    total_steps: int = 1
    tokens_per_step: int = 0
    vocab_size: int | None = None

    @property
    def natural_weights(self) -> np.ndarray:
        from mixlab.mixing.budget import natural_weights  # budget imports this module

        return natural_weights(self.train_tokens)

    @property
    def budget_tokens(self) -> int:
        """Tokens the run will train on: total_steps x tokens_per_step."""
        return self.total_steps * self.tokens_per_step


class MixingOptions(Section):
    """``mixing.*``: the options every policy has. A policy's own options class derives from
    it and adds its fields (flat, e.g. ``mixing.temperature``, or a section named after the
    policy, e.g. ``mixing.odm.*``). A resolved config stores only the chosen policy's options.
    """

    where: ClassVar[str] = "mixing"

    name: Str = Field(
        "natural",
        description="Mixing policy; `mixlab train --help-config` lists every name and its options.",
    )
    update_every: Int = Field(
        1, ge=1, description="Steps between reading new weights from the policy."
    )
    sampling: Literal["mixed", "stratified", "homogeneous"] = Field(
        "mixed",
        description="How a step's sequences get domains: mixed (i.i.d. per sequence), stratified "
        "(exact shares per step), homogeneous (one domain per micro-batch).",
    )
    max_epochs: Float | dict[str, Float] | None = Field(
        None,
        description="Epoch caps for any policy: at most this many passes over a domain's "
        "training tokens in the whole run (a number, or domain -> number); the mixture is "
        "clipped to w_d <= E_d N_d / budget every step and the surplus goes to the other "
        "domains (METHODS.md §7). null = no cap.",
    )

    @field_validator("max_epochs")
    @classmethod
    def _positive_caps(cls, value: Any) -> Any:
        caps = value.values() if isinstance(value, dict) else [] if value is None else [value]
        if any(not c > 0 for c in caps):
            raise ValueError("every epoch cap must be a number > 0 (null = no cap)")
        return value


PolicyFactory = Callable[[PolicyContext, Any], MixingPolicy]


@dataclass(frozen=True)
class _Entry:
    factory: PolicyFactory
    options: type[MixingOptions]
    help: str


_REGISTRY: dict[str, _Entry] = {}


def register_policy(
    name: str, options: type[MixingOptions] = MixingOptions
) -> Callable[[PolicyFactory], PolicyFactory]:
    """Decorator: make ``factory(ctx, options)`` buildable as ``mixing.name=<name>``.

    ``options`` is the policy's options class (``MixingOptions`` or a subclass); the factory
    receives the validated instance. The factory's docstring is the policy's help line.
    """

    def deco(factory: PolicyFactory) -> PolicyFactory:
        if name in _REGISTRY:
            raise ValueError(f"mixing policy {name!r} registered twice")
        doc = (factory.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = _Entry(factory, options, doc[0] if doc else "")
        return factory

    return deco


def available_policies() -> tuple[str, ...]:
    """Names accepted by ``mixing.name``."""
    _import_builtin_policies()
    return tuple(sorted(_REGISTRY))


def _entry(name: str) -> _Entry:
    _import_builtin_policies()
    if name not in _REGISTRY:
        raise ConfigError(
            f"mixing.name: unknown policy {name!r}; choose one of {', '.join(available_policies())}"
        )
    return _REGISTRY[name]


def options_class(name: str) -> type[MixingOptions]:
    """The options class of policy ``name`` (ConfigError listing the names if unknown)."""
    return _entry(name).options


def parse_mixing(raw: Mapping[str, Any] | MixingOptions | None) -> MixingOptions:
    """Validate a ``mixing:`` mapping as the options of the policy it names.

    Options of another policy are an error that says so (``mixing.odm`` with
    ``mixing.name=uniform``), never silently ignored; set to null they are dropped (so
    ``--set mixing.doremi=null`` clears a recipe's section for a run of another policy).
    """
    if isinstance(raw, MixingOptions):
        return raw
    raw = dict(raw or {})
    name = raw.get("name", "natural")
    if not isinstance(name, str):
        raise ConfigError(f"mixing.name: expected a policy name, got {name!r}")
    cls = options_class(name)
    for key in list(raw):
        if key in cls.model_fields:
            continue
        if raw[key] is None:
            del raw[key]
            continue
        owners = sorted(n for n, e in _REGISTRY.items() if key in e.options.model_fields)
        if owners:
            raise ConfigError(
                f"mixing.{key}: an option of {' / '.join(owners)}, not of mixing.name={name}; "
                f"remove it or choose mixing.name={owners[0]}"
            )
    return cls.parse(raw)


def describe_policies() -> str:
    """Every policy (name and help line), then every policy's own options (for --help-config)."""
    from mixlab.schema import describe

    base = set(MixingOptions.model_fields)
    lines = ["", "[mixing.name] policies:"]
    own: dict[str, tuple[list[str], Any]] = {}  # option -> (policies, its widest declaration)
    for name in available_policies():
        entry = _REGISTRY[name]
        lines.append(f"  {name:<14} {entry.help}")
        for field_name, info in entry.options.model_fields.items():
            if field_name in base:
                continue
            names, widest = own.get(field_name, ([], info))
            wide = _width(info) > _width(widest)
            own[field_name] = ([*names, name], info if wide else widest)
    for field_name, (names, info) in own.items():
        tp = info.annotation
        if isinstance(tp, type) and issubclass(tp, Section):
            lines.append(f"\n[mixing.{field_name}] options of {', '.join(names)}")
            lines.append(describe(tp, prefix=f"mixing.{field_name}."))
        else:
            default = info.get_default(call_default_factory=True)
            lines.append(f"\n  mixing.{field_name} = {default!r}   ({', '.join(names)})")
            lines.append(f"      {info.description or ''}")
    return "\n".join(lines)


def _width(info: Any) -> int:
    tp = info.annotation
    return len(tp.model_fields) if isinstance(tp, type) and issubclass(tp, Section) else 0


def build_policy(ctx: PolicyContext, options: MixingOptions) -> MixingPolicy:
    """Build the policy ``options.name`` from its validated options."""
    entry = _entry(options.name)
    if not isinstance(options, entry.options):
        options = parse_mixing(options.model_dump())
    policy = entry.factory(ctx, options)
    validate_weights(
        policy.weights(), ctx.domains, where=f"initial weights of policy {options.name!r}"
    )
    return policy


def _import_builtin_policies() -> None:
    # Importing the modules runs their @register_policy decorators.
    from mixlab.mixing import (
        doremi,  # noqa: F401
        headroom,  # noqa: F401
        odm,  # noqa: F401
        static,  # noqa: F401
    )
    from mixlab.mixing.acodm import policy  # noqa: F401


def validate_weights(
    weights: Sequence[float] | np.ndarray, domains: Sequence[str], where: str = "weights"
) -> np.ndarray:
    """Check a weight vector at a boundary; return it as float64.

    Raises ConfigError naming the domain and value for NaN/inf, negative entries, a wrong
    length, or a sum that is not 1 within 1e-6.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (len(domains),):
        raise ConfigError(f"{where}: expected {len(domains)} weights, got shape {w.shape}")
    for name, value in zip(domains, w, strict=True):
        if not np.isfinite(value):
            raise ConfigError(f"{where}: weight of domain {name!r} is {value}, not a finite number")
        if value < 0:
            raise ConfigError(f"{where}: weight of domain {name!r} is negative ({value})")
    total = float(w.sum())
    if abs(total - 1.0) > WEIGHT_SUM_TOLERANCE:
        raise ConfigError(f"{where}: weights sum to {total:.8g}, not 1 (tolerance 1e-6)")
    return w


def weights_from_mapping(
    mapping: Mapping[str, float], domains: Sequence[str], where: str = "weights"
) -> np.ndarray:
    """Order a name->weight mapping by ``domains``; unknown or missing names are errors."""
    unknown = sorted(set(mapping) - set(domains))
    if unknown:
        raise ConfigError(
            f"{where}: unknown domain(s) {', '.join(map(repr, unknown))}; "
            f"the store has {', '.join(domains)}"
        )
    missing = [d for d in domains if d not in mapping]
    if missing:
        raise ConfigError(
            f"{where}: no weight for domain(s) {', '.join(map(repr, missing))} "
            "(give every domain a weight; use 0 to exclude one)"
        )
    values = []
    for d in domains:
        try:
            values.append(float(mapping[d]))
        except (TypeError, ValueError):
            raise ConfigError(
                f"{where}: weight of domain {d!r} is {mapping[d]!r}, not a number"
            ) from None
    return validate_weights(values, domains, where=where)
